"""INT8 and OpenVINO on a trained model: quality gate, mIoU per input size, and `reminder run` FPS.

1. The step-0 model of a trained SynthVOC run (default: the MobileNetV3-Large run that
   ``benchmarks/device_update.py --workdir DIR`` trains, 49% mIoU) is exported with
   ``--format onnx-int8``: the quality gate's label agreement and mIoU (FP32 / INT8). When
   the default gate refuses it, the refusal is recorded and the model is exported again
   with ``--relaxed-drop`` as its mIoU limit, so that it can be measured.
2. SynthVOC test scenes drawn at ``--frame-size`` px (another seed). For each network input
   size, backend and precision (ONNX Runtime FP32 and INT8; OpenVINO FP32 computed in f32,
   in bf16, and INT8): the mIoU of the step's classes
   through :class:`Predictor` (letterbox resize), and the FPS of ``reminder run`` on a video
   of those frames, headless, in a fresh process (decode, resize, inference, counts).

Prints one JSON object. Every number of one run comes from the same machine and moment.

    python benchmarks/edge.py --run /tmp/bench/devup/run --workdir /tmp/bench/edge
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _bundle import write_video  # noqa: E402


def export(run: Path, out: Path, relaxed_drop: float) -> tuple[Path, str | None]:
    """The INT8 bundle with the default gate; if the gate refuses it, its message, and the
    bundle exported again with ``relaxed_drop`` as the mIoU limit (to measure it anyway)."""
    from reminder.errors import ReminderError
    from reminder.export.exporter import export_bundle

    def log(message: str) -> None:  # stdout holds the JSON alone
        print(message, file=sys.stderr)

    refusal_file = out.parent / "gate-refusal.txt"
    if (out / "manifest.json").is_file():
        return out, refusal_file.read_text() if refusal_file.is_file() else None
    try:
        return export_bundle(run, out=out, formats="onnx-int8", step=0, log=log), None
    except ReminderError as error:
        if "below its quality gate" not in str(error):
            raise
        refusal_file.write_text(str(error))
        print(f"default gate: {error}", file=sys.stderr)
        return export_bundle(run, out=out, formats="onnx-int8", step=0, int8_max_miou_drop=relaxed_drop,
                             log=log), str(error)


def test_set(run: Path, workdir: Path, frame_size: int, images: int):
    """(RGB frames, labels in model channels) of SynthVOC scenes at ``frame_size``."""
    from reminder.data.synthetic import write_synthvoc
    from reminder.train.config import load_config
    from reminder.train.run import load_run_data

    root = workdir / f"synthvoc-{frame_size}"
    if not (root / "synthvoc.json").is_file():
        write_synthvoc(root, images=images, size=frame_size, seed=7, val_fraction=0.5, workers=2)
    config = dataclasses.replace(load_config(run), root=str(root))
    dataset = load_run_data(config, cache_dir=workdir / "cache").test_dataset(0)
    return [(dataset[i][0].permute(1, 2, 0).numpy(), dataset[i][1].numpy()) for i in range(len(dataset))]


def miou(predictor, samples, num_classes: int) -> float:
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    for image, labels in samples:
        [prediction] = predictor.predict(image)
        valid = labels != 255
        confusion += np.bincount(labels[valid].astype(np.int64) * num_classes + prediction.labels[valid],
                                 minlength=num_classes ** 2).reshape(num_classes, num_classes)
    intersection = np.diag(confusion).astype(float)
    union = confusion.sum(0) + confusion.sum(1) - intersection
    return round(100 * float((intersection[union > 0] / union[union > 0]).mean()), 2)


def run_fps(bundle: Path, video: Path, backend: str, precision: str, size: int) -> float:
    command = [sys.executable, "-m", "reminder.cli", "run", str(bundle), "--source", str(video), "--backend", backend,
               "--precision", precision, "--size", str(size), "--quiet", "--no-watch"]
    result = subprocess.run(command, capture_output=True, text=True)
    match = re.search(r"\(([\d.]+) FPS\)", result.stdout)
    if result.returncode != 0 or match is None:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
    return float(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("/tmp/bench/devup/run"))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench/edge"))
    parser.add_argument("--frame-size", type=int, default=512)
    parser.add_argument("--images", type=int, default=120, help="SynthVOC scenes drawn (half of them tested).")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 384, 512])
    parser.add_argument("--video-frames", type=int, default=300)
    parser.add_argument("--relaxed-drop", type=float, default=1.5,
                        help="mIoU limit for a second export when the default gate (1 point) refuses the model.")
    args = parser.parse_args()
    from reminder.runtime.predictor import Predictor

    args.workdir.mkdir(parents=True, exist_ok=True)
    bundle, refusal = export(args.run, args.workdir / "bundle", args.relaxed_drop)
    manifest = json.loads((bundle / "manifest.json").read_text())
    samples = test_set(args.run, args.workdir, args.frame_size, args.images)
    frames = [image[:, :, ::-1] for image, _ in samples]
    video = write_video(args.workdir / "frames.mp4", [frames[i % len(frames)] for i in range(args.video_frames)])
    rows = []
    configs = [("ort", "fp32"), ("ort", "int8"), ("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8")]
    for size in args.sizes:
        for backend, precision in configs:
            predictor = Predictor(bundle, backend=backend, precision=precision, size=size, color="rgb")
            row = {"size": size, "backend": backend, "precision": precision,
                   "miou": miou(predictor, samples, len(manifest["classes"])),
                   "run_fps": run_fps(bundle, video, backend, precision, size)}
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    gate = manifest["parity"]["onnx-int8"]
    print(json.dumps({
        "benchmark": "edge", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "run": str(args.run), "backbone": manifest["model"]["backbone"], "classes": len(manifest["classes"]),
        "bundle_input": manifest["input"]["height"], "frame_size": args.frame_size, "test_images": len(samples),
        "video_frames": args.video_frames,
        "gate": {k: gate[k] for k in ("images", "pixel_agreement", "miou_fp32", "miou_int8", "miou_drop", "passed",
                                      "max_miou_drop")}, "default_gate_refusal": refusal,
        "calibration": manifest["artifacts"]["onnx-int8"]["calibration"]["images"], "results": rows}, indent=2))


if __name__ == "__main__":
    main()
