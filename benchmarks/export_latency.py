"""Latency and throughput of each backend: eager PyTorch, TorchScript, AOTInductor, ONNX
Runtime FP32 and INT8, OpenVINO on the FP32 model (its default: bf16 on CPUs with native
bf16; ``openvino-f32``: f32) and on the INT8 model (CPU), and on a GPU ONNX Runtime's CUDA
provider, TensorRT FP16 and INT8 engines and AOTInductor for CUDA.

Models have random weights (latency does not depend on them) and the exported graph
includes normalisation and the argmax, as in a bundle; the INT8 model is quantised as
``--format onnx-int8`` does, calibrated on 8 random images (ranges, not accuracy, matter
here). For every size in ``--sizes``: batch 1 p50 / p95 latency over ``--repeats`` runs and
batch 8 images/s, and each row's ratio to FP32 ONNX Runtime on the CPU at the same size
(``ratio_to_ort``: below 1 is faster), all measured in one run. Prints one JSON object.

    python benchmarks/export_latency.py --backbones mobilenet_v3_large resnet101 \
        --backends ort ort-int8 openvino-f32 openvino openvino-int8 --sizes 256 384 512
    # on a GPU: --backends ort ort-cuda trt-fp16 trt-int8 aoti-cuda
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from reminder.export.aoti import export_aoti
from reminder.export.graph import ExportModule, example_input
from reminder.export.onnx import export_onnx
from reminder.export.torchscript import export_torchscript
from reminder.models import build_segmenter
from reminder.runtime.backends import AotiBackend, OrtBackend, TorchScriptBackend


class EagerBackend:
    name = "eager"

    def __init__(self, module):
        self.module = module

    def __call__(self, images):
        with torch.no_grad():
            return self.module(torch.from_numpy(images))


def time_backend(backend, size: int, batch: int, repeats: int, warmup: int) -> list[float]:
    images = np.random.default_rng(0).uniform(0, 255, (batch, 3, size, size)).astype(np.float32)
    for _ in range(warmup):
        backend(images)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        backend(images)
        times.append(time.perf_counter() - start)
    return times


def make_backends(module, backbone: str, names, tmp: Path, size: int) -> dict:
    """Each backend asked for; GPU ones build for a profile up to ``size``."""
    from reminder.export.quantize import quantize_int8
    from reminder.runtime.engines import EngineProfile

    example = example_input(2, 128, 128)
    onnx_path = tmp / f"{backbone}.onnx"
    int8_path = tmp / f"{backbone}.int8.onnx"
    if any(n.startswith(("ort", "openvino", "trt")) for n in names):
        export_onnx(module, onnx_path, example)

    def int8_model() -> Path:  # quantised once, when a backend first needs it
        if not int8_path.exists():
            rng = np.random.default_rng(0)
            quantize_int8(onnx_path, int8_path,
                          [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(8)], size=(size, size))
        return int8_path

    profile = EngineProfile((1, 128, 128), (1, size, size), (8, size, size))
    backends, errors = {}, {}
    for name in names:
        try:
            backends[name] = _make_backend(name, module, backbone, tmp, onnx_path, int8_model, example, profile)
        except Exception as error:  # a backend this machine lacks (TensorRT, a CUDA provider): say so, go on
            errors[name] = f"{type(error).__name__}: {error}"[:300]
            print(json.dumps({"backbone": backbone, "backend": name, "error": errors[name]}), file=sys.stderr)
    return backends, errors


def _make_backend(name, module, backbone, tmp, onnx_path, int8_model, example, profile):
    if name == "eager":
        return EagerBackend(module)
    if name == "torchscript":
        return TorchScriptBackend(export_torchscript(module, tmp / f"{backbone}.ts", example))
    if name in ("aoti", "aoti-cuda"):
        device = "cuda" if name == "aoti-cuda" else "cpu"
        return AotiBackend(export_aoti(module, tmp / f"{backbone}-{device}.pt2", example, device=device),
                           compiled_for=device)
    if name in ("ort", "ort-int8"):
        return OrtBackend(int8_model() if name == "ort-int8" else onnx_path, providers=["CPUExecutionProvider"])
    if name == "ort-cuda":
        backend = OrtBackend(onnx_path, providers=["CUDAExecutionProvider"])
        if "CUDAExecutionProvider" not in backend.providers:
            raise RuntimeError(f"ONNX Runtime fell back to {backend.providers}")
        return backend
    if name in ("openvino", "openvino-f32", "openvino-int8"):
        from reminder.runtime.openvino import OpenVinoBackend

        # "openvino": OpenVINO's default, bf16 on CPUs with native bf16; "openvino-f32": f32
        return OpenVinoBackend(int8_model() if name.endswith("int8") else onnx_path,
                               inference_precision="f32" if name == "openvino-f32" else None)
    if name in ("trt-fp16", "trt-int8"):
        from reminder.export.tensorrt import build_engine
        from reminder.runtime.backends import TensorRTBackend
        from reminder.runtime.engines import import_tensorrt

        import_tensorrt()  # before quantising for an engine that cannot be built here
        engine = tmp / f"{backbone}-{name}.engine"
        if name == "trt-fp16":
            build_engine(onnx_path, engine, profile=profile, fp16=True)
        else:  # the QDQ model: the same INT8 graph the CPU runs
            build_engine(int8_model(), engine, profile=profile, int8=True)
        return TensorRTBackend(engine)
    raise SystemExit(f"unknown backend {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["mobilenet_v3_large", "resnet101"])
    parser.add_argument("--backends", nargs="+", default=["eager", "torchscript", "aoti", "ort"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--batch-repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--classes", type=int, default=21)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for backbone in args.backbones:
            torch.manual_seed(0)
            module = ExportModule(build_segmenter(backbone, num_classes=args.classes)).eval()
            backends, errors = make_backends(module, backbone, args.backends, tmp, max(args.sizes))
            rows.extend({"backbone": backbone, "backend": name, "error": error} for name, error in errors.items())
            for size in args.sizes:
                for name, backend in backends.items():
                    try:
                        single = time_backend(backend, size, 1, args.repeats, args.warmup)
                        batched = time_backend(backend, size, 8, args.batch_repeats, 1)
                    except Exception as error:  # a backend that cannot take this shape (an engine's profile)
                        rows.append({"backbone": backbone, "backend": name, "size": size, "error": str(error)[:200]})
                        continue
                    rows.append({"backbone": backbone, "backend": name, "size": size,
                                 "p50_ms": round(1000 * float(np.percentile(single, 50)), 1),
                                 "p95_ms": round(1000 * float(np.percentile(single, 95)), 1),
                                 "batch8_images_per_s": round(8 / float(np.median(batched)), 2)})
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    for row in rows:
        base = next((r for r in rows if r["backbone"] == row["backbone"] and r.get("size") == row.get("size")
                     and r["backend"] == "ort" and "p50_ms" in r), None)
        if base is not None and "p50_ms" in row:
            row["ratio_to_ort"] = round(row["p50_ms"] / base["p50_ms"], 3)
            row["batch8_ratio_to_ort"] = round(base["batch8_images_per_s"] / row["batch8_images_per_s"], 3)
    speedups = {}
    for backbone in args.backbones:
        by = {r["backend"]: r["p50_ms"] for r in rows if r["backbone"] == backbone and "p50_ms" in r
              and r["size"] == max(args.sizes)}
        if "eager" in by and "ort" in by:
            speedups[backbone] = round(by["eager"] / by["ort"], 2)
    print(json.dumps({
        "benchmark": "export_latency", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} threads", "sizes": args.sizes, "results": rows,
        "ort_over_eager_batch1": speedups}, indent=2))


if __name__ == "__main__":
    main()
