"""Fleet soak: hundreds of publish rounds, each synced by concurrent device processes'
worth of threads, while `reminder run` plays a video on the same install folder and hot
reloads every switch.

Per round: publish a new version of the bundle (same classes, new version) to a real
repository served on 127.0.0.1, then ``--syncs`` syncs of one install folder at once. A
watcher samples `current` all the time. The stream runs video after video (each must be
processed to its last frame). The result (JSON on stdout):

- ``false_refusals``: versions in the device's refused list (none were bad);
- ``sync_errors``: syncs that raised;
- ``current_invalid``: samples where `current` did not name an installed bundle;
- ``frames_lost``: frames of the videos that the stream did not process;
- ``reload_failures``: reloads the stream reported failed.

    python benchmarks/fleet_soak.py --rounds 300 --syncs 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _bundle import make_bundle_in_child, synthvoc_frames, write_video  # noqa: E402


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _versioned(bundle: Path, work: Path, version: str) -> Path:
    from reminder.bundle import read_manifest, write_manifest

    shutil.rmtree(work / f"b-{version}", ignore_errors=True)  # left by an earlier run of this benchmark
    copy = shutil.copytree(bundle, work / f"b-{version}")
    manifest = read_manifest(copy).to_json()
    manifest["version"] = version
    write_manifest(copy, manifest)
    return copy


def _watch_current(install: Path, stop: threading.Event, counts: dict) -> None:
    while not stop.is_set():
        link = install / "current"
        if link.is_symlink():
            counts["samples"] += 1
            target = install / os.readlink(link)
            if not (target / "manifest.json").is_file():
                counts["invalid"] += 1
        time.sleep(0.001)


def _stream_loop(install: Path, video: Path, frames: int, stop: threading.Event, result: dict) -> None:
    from reminder.runtime.stream import run_stream

    while not stop.is_set():
        summary = run_stream(install, [str(video)], reload_interval=0.05, log=lambda message: None)
        result["videos"] += 1
        result["frames"] += summary.total
        result["lost"] += frames - summary.total - sum(summary.skipped.values())
        result["skipped"] += sum(summary.skipped.values())
        result["reload_failures"] += len(summary.reload_failures)
        result["switches"] += len(summary.versions) - 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--syncs", type=int, default=3, help="Concurrent syncs per round on one install folder.")
    parser.add_argument("--frames", type=int, default=600, help="Frames per video the stream plays.")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    from reminder import fleet
    from reminder.errors import ReminderError

    work = args.workdir or Path(tempfile.mkdtemp(prefix="reminder-fleet-soak-"))
    bundle = make_bundle_in_child(work, backbone="tiny", size=args.size)
    video = write_video(work / "clip.mp4", synthvoc_frames(work, args.frames, args.size))
    repo, install = work / "repo", work / "device"
    for path in (repo, repo.parent / f"{repo.name}.keys", install):
        shutil.rmtree(path, ignore_errors=True)
    repo.mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(repo)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    root = fleet.init_repository(repo)
    quiet = {"log": lambda message: None}
    fleet.publish(repo, _versioned(bundle, work, "v0000"), allow_weak_classes=True, **quiet)
    fleet.sync(install, url=url, trusted_root=root, **quiet)

    stop = threading.Event()
    current = {"samples": 0, "invalid": 0}
    stream = {"videos": 0, "frames": 0, "lost": 0, "skipped": 0, "reload_failures": 0, "switches": 0}
    threads = [threading.Thread(target=_watch_current, args=(install, stop, current), daemon=True),
               threading.Thread(target=_stream_loop, args=(install, video, args.frames, stop, stream), daemon=True)]
    for thread in threads:
        thread.start()
    errors: list[str] = []
    started = time.perf_counter()
    for round_ in range(1, args.rounds + 1):
        version = f"v{round_:04d}"
        source = _versioned(bundle, work, version)
        fleet.publish(repo, source, allow_weak_classes=True, **quiet)
        shutil.rmtree(source)

        def one():
            try:
                fleet.sync(install, url=url, **quiet)
            except ReminderError as error:
                errors.append(str(error))

        syncs = [threading.Thread(target=one) for _ in range(args.syncs)]
        for thread in syncs:
            thread.start()
        for thread in syncs:
            thread.join()
        if round_ % 25 == 0:
            print(f"round {round_}: installed {fleet.read_status(install)['installed']}, "
                  f"{stream['frames']} frames, {len(errors)} sync errors", file=sys.stderr)
    seconds = time.perf_counter() - started
    stop.set()
    for thread in threads:
        thread.join(timeout=120)
    httpd.shutdown()
    status = fleet.read_status(install)
    print(json.dumps({
        "benchmark": "fleet_soak", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores", "python": platform.python_version(),
        "rounds": args.rounds, "syncs_per_round": args.syncs, "seconds": round(seconds, 1),
        "installed": status["installed"], "expected_installed": f"v{args.rounds:04d}",
        "false_refusals": status.get("refused", []), "sync_errors": errors[:5], "sync_error_count": len(errors),
        "current_samples": current["samples"], "current_invalid": current["invalid"],
        "stream_videos": stream["videos"], "stream_frames": stream["frames"], "frames_lost": stream["lost"],
        "frames_skipped": stream["skipped"], "reload_failures": stream["reload_failures"],
        "stream_switches": stream["switches"],
    }, indent=2))


if __name__ == "__main__":
    main()
