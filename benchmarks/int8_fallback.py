"""What the accuracy-aware INT8 fallback buys on a trained run: the gate's label agreement
with FP32 when the k most sensitive convolutions stay float (the fallback's ranking, on
calibration images), against k taken in graph order, and the agreement when one
convolution alone is quantised. Gate images and calibration images are the export's own
(the step's test images, and its training images). Prints one JSON object.

    python benchmarks/int8_fallback.py --run RUN [--step 0] [--calibration-count 8]
    # a run like the tests' SynthVOC fixture:
    python benchmarks/int8_fallback.py --make-run /tmp/int8fb
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import onnx


def _make_run(folder: Path) -> Path:
    """SynthVOC 15-1 at 64 px, tiny backbone, 30 epochs at step 0: the tests' runtime_run."""
    sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
    from conftest import SILENT, quick_config
    from reminder.data.synthetic import write_synthvoc
    from reminder.train.run import train_scenario

    root = folder / "synthvoc"
    if not root.exists():
        write_synthvoc(root, images=120, size=64, seed=3, workers=1)
    run = folder / "run"
    if not (run / "results.json").exists():
        config = quick_config(root, run, setting="15-1", method="finetune", max_iterations=None, epochs=30,
                              epochs_next=1, batch_size=8, crop_size=64)
        train_scenario(config, **SILENT)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path)
    parser.add_argument("--make-run", type=Path, help="Train the tests' SynthVOC fixture run here first.")
    parser.add_argument("--step", type=int, default=0)
    parser.add_argument("--calibration-count", type=int, default=8)
    parser.add_argument("--shares", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.5, 0.7])
    args = parser.parse_args()
    from reminder.export import exporter
    from reminder.export.int8_fallback import conv_sensitivity, quantized_convs
    from reminder.export.quantize import calibration_inputs, prepared_model, quality_gate, quantize_int8
    from reminder.runtime.backends import OrtBackend
    from reminder.train.config import load_config

    run = _make_run(args.make_run) if args.make_run else args.run
    load = functools.cache(lambda: exporter._run_data(run, load_config(run)))
    options = exporter._int8_options(load, run.name, args.step, images=None, calibration_images=None,
                                     calibration_count=args.calibration_count, gate_images=32, min_agreement=0.99,
                                     max_miou_drop=1.0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bundle = exporter.export_bundle(run, out=tmp / "b", formats="onnx", step=args.step, log=lambda m: None)
        source = bundle / "model.onnx"
        size = tuple(json.loads((bundle / "manifest.json").read_text())["input"][k] for k in ("height", "width"))
        reference = OrtBackend(source, providers=["CPUExecutionProvider"])
        classes = len(json.loads((bundle / "manifest.json").read_text())["classes"])

        def agreement(keep) -> float:
            quantize_int8(source, tmp / "q.onnx", options.calibration, size=size, keep_float=keep)
            result = quality_gate(reference, OrtBackend(tmp / "q.onnx", providers=["CPUExecutionProvider"]),
                                  options.gate, num_classes=classes)
            return round(100 * result["pixel_agreement"], 3)

        quantize_int8(source, tmp / "full.onnx", options.calibration, size=size)
        full = onnx.load(str(tmp / "full.onnx"))
        with prepared_model(source) as prepared:
            ranking = [n for n, _ in conv_sensitivity(onnx.load(str(prepared)), full,
                                                      calibration_inputs(size, options.calibration[:8]))]
        convs = [c.name for c in quantized_convs(full)]
        rows = []
        for share in [0.0, *args.shares]:
            k = math.ceil(share * len(convs))
            rows.append({"float_share": share, "float_convs": k, "ranked": agreement(ranking[:k]),
                         "graph_order": agreement(convs[:k])})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        single = {name: agreement([c for c in convs if c != name]) for name in convs}
    print(json.dumps({
        "benchmark": "int8_fallback", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores", "run": str(run), "step": args.step,
        "calibration_images": len(options.calibration), "gate_images": len(options.gate), "convs": len(convs),
        "agreement_percent": rows, "only_this_conv_quantised": single}, indent=2))


if __name__ == "__main__":
    main()
