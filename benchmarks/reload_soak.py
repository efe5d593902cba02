"""Hot reload under load: memory and threads stay flat over many reloads, and SIGTERM in the
middle of a reload ends the stream cleanly.

1. In process: ``run_stream`` on ``--sources`` copies of a video through OpenVINO (THROUGHPUT,
   as several sources choose) or ONNX Runtime, while ``current`` of an install folder flips
   between two versions ``--reloads`` times; VmRSS and the process's native threads are
   sampled after each switch.
2. ``--terms`` times: ``reminder run --watch`` on that install folder, ``current`` flipped,
   and SIGTERM sent while the new version loads; each exit code is recorded (0 expected,
   never 134 or 139).

Prints one JSON object.

    python benchmarks/reload_soak.py --backend openvino --sources 6 --reloads 15 --terms 6
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _bundle import make_bundle_in_child, synthvoc_frames, write_video  # noqa: E402


def _status(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(f"{field}:"))


def _install(workdir: Path, bundle: Path) -> Path:
    install = workdir / "install"
    for name in ("a", "b"):
        if not (install / "versions" / name).is_dir():
            shutil.copytree(bundle, install / "versions" / name)
    if not (install / "current").is_symlink():
        (install / "current").symlink_to(Path("versions") / "a")
    return install


def _flip(install: Path) -> str:
    now = os.readlink(install / "current")
    target = Path("versions") / ("b" if now.endswith("a") else "a")
    link = install / ".current.tmp"
    link.unlink(missing_ok=True)
    link.symlink_to(target)
    os.replace(link, install / "current")
    return target.name


def soak_in_process(install: Path, video: Path, *, sources: int, reloads: int, backend: str) -> dict:
    from reminder.runtime.stream import Stream

    stream = Stream(install, [str(video)] * sources, backend=backend, reload_interval=0.0, log=lambda m: None,
                    live=False)
    samples = []

    def flipper():
        time.sleep(2)
        for _ in range(reloads):
            wanted = len(stream.summary.versions) + 1
            _flip(install)
            deadline = time.monotonic() + 60
            while len(stream.summary.versions) < wanted and time.monotonic() < deadline:
                time.sleep(0.05)
            samples.append({"rss_mb": round(_status("VmRSS") / 1024, 1), "threads": _status("Threads")})
        stream.stop()

    thread = threading.Thread(target=flipper, daemon=True)
    thread.start()
    summary = stream.run()
    thread.join()
    return {"sources": sources, "reloads": len(summary.versions), "frames": summary.total,
            "first": samples[0] if samples else None, "last": samples[-1] if samples else None, "samples": samples}


def sigterm_mid_reload(install: Path, video: Path, *, tries: int, backend: str) -> list[int]:
    codes = []
    for attempt in range(tries):
        process = subprocess.Popen([sys.executable, "-m", "reminder.cli", "run", str(install), "--source", str(video),
                                    "--backend", backend, "--quiet"], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        time.sleep(4)  # the first model loaded, frames flowing
        _flip(install)
        time.sleep(1.0 + 0.1 * attempt)  # the reload is noticed within a second, then loads
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=120)
        codes.append(process.returncode)
    return codes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="openvino", choices=["openvino", "ort"])
    parser.add_argument("--sources", type=int, default=6)
    parser.add_argument("--reloads", type=int, default=15)
    parser.add_argument("--terms", type=int, default=6)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="reminder-reload-soak-"))
    bundle = make_bundle_in_child(workdir, backbone="mobilenet_v3_large", size=args.size)
    install = _install(workdir, bundle)
    video = workdir / "long.mp4"
    if not video.is_file():
        write_video(video, synthvoc_frames(workdir, 40, args.size) * 150)
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.node(),
              "cpus": os.cpu_count(), "backend": args.backend,
              "in_process": soak_in_process(install, video, sources=args.sources, reloads=args.reloads,
                                            backend=args.backend),
              "sigterm_exit_codes": sigterm_mid_reload(install, video, tries=args.terms, backend=args.backend)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
