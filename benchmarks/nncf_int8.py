"""Our INT8 path (ONNX Runtime static QDQ, convolutions only, percentile ranges, with the
accuracy-aware fallback) side by side with NNCF's post-training quantisation, on a trained
run: the quality gate's numbers (label agreement with FP32 and mIoU on the step's labelled
test images) and batch-1 latency with ONNX Runtime and OpenVINO, all sessions timed in
turns in one run.

Candidates:

- ``ours``: what ``export --format onnx-int8`` writes (``export.int8_fallback``);
- ``nncf-onnx``: ``nncf.quantize`` on the FP32 ONNX (mixed preset, as the CPU likes);
- ``nncf-openvino``: ``nncf.quantize`` on the OpenVINO model read from the same ONNX;
- ``nncf-openvino-ac``: ``nncf.quantize_with_accuracy_control`` on it, validated on the
  calibration images (never the gate's) with label agreement as the metric, 1% drop.

NNCF is not a dependency of reminder; install it beside it to run this (it needs no torch
here): ``pip install nncf``. Prints one JSON object.

    python benchmarks/nncf_int8.py --run /tmp/bench/devup/run --sizes 256 512
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np


def _ov_backend(model, threads: int | None):
    import openvino as ov

    config = {"PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = ov.Core().compile_model(model, "CPU", config)
    request = compiled.create_infer_request()

    def run(batch: np.ndarray) -> dict:
        result = request.infer({0: batch})
        return {output.get_any_name(): result[output] for output in compiled.outputs}
    return run


def _ort_backend(path: Path):
    from reminder.runtime.backends import OrtBackend

    return OrtBackend(path, providers=["CPUExecutionProvider"])


def _labels(outputs: dict) -> np.ndarray:
    return outputs["logits"].argmax(1) if "logits" in outputs else outputs["labels"]


def gate(reference, candidate, samples, classes: int) -> dict:
    from reminder.export.quantize import quality_gate

    result = quality_gate(reference, candidate, samples, num_classes=classes)
    return {k: result.get(k) for k in ("pixel_agreement", "miou_fp32", "miou_int8", "miou_drop")}


def latency(backends: dict, sizes, rounds: int, calls: int) -> dict:
    """p50 ms at batch 1 for every backend and size, the backends taking turns."""
    times = {(name, size): [] for name in backends for size in sizes}
    rng = np.random.default_rng(0)
    inputs = {size: rng.uniform(0, 255, (1, 3, size, size)).astype(np.float32) for size in sizes}
    for name, run in backends.items():  # warm-up, once per shape
        for size in sizes:
            run(inputs[size])
    for _ in range(rounds):
        for name, run in backends.items():
            for size in sizes:
                for _ in range(calls):
                    began = time.perf_counter()
                    run(inputs[size])
                    times[(name, size)].append(1000 * (time.perf_counter() - began))
    return {f"{name} @ {size}": round(float(np.median(values)), 2) for (name, size), values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--step", type=int, default=0)
    parser.add_argument("--calibration-count", type=int, default=32)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    import nncf
    import onnx
    import openvino as ov

    from reminder.export import exporter
    from reminder.export.quantize import calibration_inputs
    from reminder.train.config import load_config

    load = functools.cache(lambda: exporter._run_data(args.run, load_config(args.run)))
    options = exporter._int8_options(load, args.run.name, args.step, images=None, calibration_images=None,
                                     calibration_count=args.calibration_count, gate_images=32, min_agreement=0.99,
                                     max_miou_drop=1.0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        began = time.perf_counter()
        bundle = exporter.export_bundle(args.run, out=tmp / "b", formats="onnx-int8", step=args.step,
                                        calibration_count=args.calibration_count, log=lambda m: None)
        ours_seconds = time.perf_counter() - began  # (the whole export: trace, calibration, gate, parity)
        manifest = json.loads((bundle / "manifest.json").read_text())
        size = (manifest["input"]["height"], manifest["input"]["width"])
        classes = len(manifest["classes"])
        source = bundle / "model.onnx"
        calibration = calibration_inputs(size, options.calibration)
        dataset = nncf.Dataset(calibration, lambda x: {"images": x})
        quantized = {}
        began = time.perf_counter()
        onnx_int8 = nncf.quantize(onnx.load(str(source)), dataset, preset=nncf.QuantizationPreset.MIXED,
                                  subset_size=len(calibration))
        quantized["nncf-onnx"] = time.perf_counter() - began
        onnx.save(onnx_int8, str(tmp / "nncf.onnx"))
        core = ov.Core()
        ov_dataset = nncf.Dataset(calibration, lambda x: x)
        began = time.perf_counter()
        ov_int8 = nncf.quantize(core.read_model(str(source)), ov_dataset, preset=nncf.QuantizationPreset.MIXED,
                                subset_size=len(calibration))
        quantized["nncf-openvino"] = time.perf_counter() - began
        fp32_ov = _ov_backend(core.read_model(str(source)), args.threads)
        reference_labels = [_labels(fp32_ov(x)) for x in calibration]

        def validate(compiled, items) -> float:  # label agreement with FP32 on the calibration images
            same = [float((_labels({o.get_any_name(): compiled(x)[o] for o in compiled.outputs}) == r).mean())
                    for x, r in zip(items, reference_labels)]
            return float(np.mean(same))

        began = time.perf_counter()
        try:
            ov_ac = nncf.quantize_with_accuracy_control(
                core.read_model(str(source)), ov_dataset, nncf.Dataset(calibration), validate, max_drop=0.01,
                drop_type=nncf.DropType.ABSOLUTE, preset=nncf.QuantizationPreset.MIXED,
                subset_size=len(calibration))
            quantized["nncf-openvino-ac"] = time.perf_counter() - began
        except Exception as error:  # record why, measure the rest
            ov_ac, quantized["nncf-openvino-ac"] = None, f"failed: {type(error).__name__}: {error}"[:300]
        reference = _ort_backend(source)
        makers = {
            "ours (ORT)": lambda: _ort_backend(bundle / "model.int8.onnx"),
            "ours (OpenVINO)": lambda: _ov_backend(core.read_model(str(bundle / "model.int8.onnx")), args.threads),
            "nncf-onnx (ORT)": lambda: _ort_backend(tmp / "nncf.onnx"),
            "nncf-onnx (OpenVINO)": lambda: _ov_backend(core.read_model(str(tmp / "nncf.onnx")), args.threads),
            "nncf-openvino": lambda: _ov_backend(ov_int8, args.threads),
        }
        if ov_ac is not None:
            makers["nncf-openvino-ac"] = lambda: _ov_backend(ov_ac, args.threads)
        candidates, failed = {}, {}
        for name, make in makers.items():
            try:
                candidates[name] = make()
            except Exception as error:  # a runtime that cannot run this model: recorded
                failed[name] = f"{type(error).__name__}: {str(error).strip().splitlines()[-1]}"[:300]
        quality = {name: gate(reference, run, options.gate, classes) for name, run in candidates.items()}
        timed = {"FP32 (ORT)": reference, "FP32 (OpenVINO, its default precision)": fp32_ov, **candidates}
        speed = latency(timed, args.sizes, args.rounds, args.calls)
    print(json.dumps({
        "benchmark": "nncf_int8", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "nncf": nncf.__version__, "openvino": ov.__version__, "run": str(args.run), "step": args.step,
        "deploy_size": list(size), "calibration_images": len(calibration), "gate_images": len(options.gate),
        "ours": {"float_convs": manifest["artifacts"]["onnx-int8"].get("float_convs"),
                 "export_seconds": round(ours_seconds, 1)},
        "quantize_seconds": {k: round(v, 1) if isinstance(v, float) else v for k, v in quantized.items()},
        "gate": quality, "could_not_run": failed, "p50_ms_batch1": speed}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
