"""Soak: thousands of frames through the full pipeline; resident memory must stop growing.

A video of ``--frames`` frames goes through ``run_stream`` with every output on (overlay
video, label PNGs, JSON stats), so readers, queues, writers and the backend all run for
the whole length. Resident memory (VmRSS) is sampled every ``--every`` frames; the result
gives the first sample after warm-up, the last one, and the growth between them.

    python benchmarks/soak.py --frames 5000 --size 256
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _bundle import make_bundle_in_child, synthvoc_frames, write_video  # noqa: E402


def rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="mobilenet_v3_large")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--frames", type=int, default=5000)
    parser.add_argument("--every", type=int, default=250, help="Sample RSS every N frames.")
    parser.add_argument("--warmup", type=int, default=500, help="Frames before the first counted sample.")
    parser.add_argument("--save", default="video,labels,stats",
                        help="Outputs written (comma-separated; empty for a headless run).")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    from reminder.runtime.stream import run_stream

    samples: list[tuple[int, float]] = []
    count = 0

    def on_result(frame, prediction, record) -> None:
        nonlocal count
        count += 1
        if count % args.every == 0:
            samples.append((count, round(rss_mb(), 1)))

    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        bundle = make_bundle_in_child(workdir, backbone=args.backbone, size=args.size)
        video = write_video(workdir / f"soak-{args.size}.mp4", synthvoc_frames(workdir, args.frames, args.size))
        saves = [kind for kind in args.save.split(",") if kind]
        summary = run_stream(bundle, [str(video)], out=Path(tmp) / "out", save=saves, on_result=on_result,
                             log=lambda message: None, backend="ort")
    counted = [rss for count, rss in samples if count >= args.warmup]
    print(json.dumps({
        "benchmark": "soak", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "backbone": args.backbone, "size": args.size, "save": args.save, "frames": summary.total,
        "fps": round(summary.fps, 2),
        "rss_mb_first_after_warmup": counted[0], "rss_mb_last": counted[-1],
        "rss_mb_growth_after_warmup": round(counted[-1] - counted[0], 1),
        "rss_mb_max_after_warmup": max(counted), "torch_imported": "torch" in sys.modules, "samples": samples,
    }))


if __name__ == "__main__":
    main()
