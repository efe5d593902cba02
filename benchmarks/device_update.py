"""On-device update: time, peak memory and quality of learning a class from 20 frames.

1. A step-0 bundle: SynthVOC at ``--size`` px, 15-1 step 0 (classes 1-15) trained from
   scratch with ``--backbone`` for ``--epochs`` epochs, exported to ONNX.
2. 20 new frames (another seed) that show a sheep; masks with the sheep only.
3. ``reminder update`` in a fresh process per variant and seed (so its peak memory is its
   own), frozen backbone, ``--iterations`` at a ``--size`` px crop: REMINDER from cached
   backbone features (the default; bf16 autocast on a CPU with native bf16), and REMINDER
   with the backbone run at every iteration in FP32 (``--no-feature-cache``, the path
   before the cache).

Prints one JSON object: seconds, peak resident memory, new-class IoU on the 5 held-out
frames, and old-class agreement with the parent. Target: under 30 s end to end on this CPU
for MobileNetV3 at 256 px with a frozen backbone, the sheep IoU within 2 points of the
full-forward path (paired over the seeds).

    python benchmarks/device_update.py --size 256 --backbone mobilenet_v3_large
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path


SHEEP = 17
# variant -> the options it adds to `reminder update ... --freeze-backbone`
VARIANTS = {"reminder_cached": [], "reminder_full_forward": ["--no-feature-cache"],
            "reminder_cached_frozen_aspp": ["--freeze-aspp"]}


def base_bundle(workdir: Path, args) -> Path:
    from reminder.data.synthetic import write_synthvoc
    from reminder.export.exporter import export_bundle
    from reminder.train.config import resolve_config
    from reminder.train.run import ScenarioRunner

    bundle = workdir / "step0-bundle"
    if (bundle / "manifest.json").is_file():
        return bundle
    data = workdir / "synthvoc"
    if not (data / "synthvoc.json").is_file():
        write_synthvoc(data, images=args.images, size=args.size, seed=0, workers=2, progress=True)
    config = resolve_config(dataset="synthvoc", root=data, setting="15-1", method="reminder", out=workdir / "run",
                            backbone=args.backbone, epochs=args.epochs, batch_size=8, crop_size=args.crop,
                            eval_size=args.size, workers=2)
    runner = ScenarioRunner(config, progress=True, log=print)
    runner.prepare()
    if not runner.is_complete(0):
        metrics = runner.run_step(0)
        print(f"step 0: mIoU {100 * metrics['all']:.1f}", file=sys.stderr)
    return export_bundle(workdir / "run", out=bundle, formats="onnx", step=0, log=lambda m: None)


def sheep_frames(workdir: Path, size: int) -> Path:
    from reminder.data.synthetic import write_class_frames, write_synthvoc

    root = workdir / "sheep"
    if (root / "images").is_dir():
        return root
    write_synthvoc(root / "source", images=400, size=size, seed=11, workers=2)
    return write_class_frames(root / "source", SHEEP, 20, root, min_share=0.01)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="mobilenet_v3_large")
    parser.add_argument("--size", type=int, default=256, help="Frame size and update crop.")
    parser.add_argument("--images", type=int, default=600, help="SynthVOC images for the step-0 model.")
    parser.add_argument("--epochs", type=int, default=30, help="Step-0 epochs.")
    parser.add_argument("--crop", type=int, default=128, help="Step-0 training crop.")
    parser.add_argument("--iterations", type=int, default=200, help="Update iterations.")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="Update seeds (paired variants).")
    parser.add_argument("--workdir", type=Path, default=None, help="Keep the step-0 run and frames here.")
    parser.add_argument("--variants", nargs="+", default=["reminder_cached", "reminder_full_forward"],
                        choices=sorted(VARIANTS), help="Update variants to run (each with every seed).")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        bundle = base_bundle(workdir, args)
        frames = sheep_frames(workdir, args.size)
        variants = {}
        cases = [(f"{name}_seed{seed}", [*VARIANTS[name], "--seed", str(seed)]) for seed in args.seeds
                 for name in args.variants]
        for name, extra in cases:
            out = workdir / f"update-{name}"
            command = [sys.executable, "-m", "reminder.cli", "update", str(bundle), "--images", str(frames / "images"),
                       "--masks", str(frames / "masks"), "--class", "sheep", "--out", str(out), "--freeze-backbone",
                       "--iterations", str(args.iterations), "--crop-size", str(args.size), "--device", args.device,
                       *extra]
            began = time.perf_counter()
            result = subprocess.run(command + ["--force"], capture_output=True, text=True)
            wall = time.perf_counter() - began
            if result.returncode != 0:
                raise SystemExit(result.stderr)
            manifest = json.loads((out / "manifest.json").read_text())
            report = manifest["update"]
            variants[name] = {"process_seconds": round(wall, 1), "update_seconds": report["seconds"],
                              "train_seconds": report["train_seconds"], "iterations": report["iterations"],
                              "peak_memory": report["peak_memory"], "new_iou_sheep": report["new_iou"]["sheep"],
                              "old_agreement": report["old_agreement"],
                              "old_pixels_compared": report["old_pixels_compared"],
                              "onnx": manifest["artifacts"]["onnx"].get("written_from", "traced")}
        base_metrics = json.loads((workdir / "run" / "step0" / "metrics.json").read_text())
    print(json.dumps({
        "benchmark": "device_update", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}", "device": args.device,
        "backbone": args.backbone, "size": args.size, "frames": 20, "iterations": args.iterations,
        "frozen_backbone": True, "step0_miou": round(base_metrics["all"], 4), "target_seconds": 30,
        "variants": variants}, indent=2))


if __name__ == "__main__":
    main()
