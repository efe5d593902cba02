"""Latency and throughput of each backend at 512 x 512: eager PyTorch, TorchScript,
AOTInductor, ONNX Runtime (CPU; CUDA and TensorRT when present).

Models have random weights (latency does not depend on them) and the exported graph
includes normalisation and the argmax, as in a bundle. Batch 1: p50 / p95 latency over
``--repeats`` runs; batch 8: images/s. Prints one JSON object with the ONNX Runtime over
eager speed-up at batch 1 (target on CPU: at least 1.3).

    python benchmarks/export_latency.py --backbones mobilenet_v3_large resnet101
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["mobilenet_v3_large", "resnet101"])
    parser.add_argument("--backends", nargs="+", default=["eager", "torchscript", "aoti", "ort"])
    parser.add_argument("--size", type=int, default=512)
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
            example = example_input(2, 128, 128)
            backends = {}
            for name in args.backends:
                if name == "eager":
                    backends[name] = EagerBackend(module)
                elif name == "torchscript":
                    backends[name] = TorchScriptBackend(export_torchscript(module, tmp / f"{backbone}.ts", example))
                elif name == "aoti":
                    backends[name] = AotiBackend(export_aoti(module, tmp / f"{backbone}.pt2", example))
                elif name == "ort":
                    backends[name] = OrtBackend(export_onnx(module, tmp / f"{backbone}.onnx", example))
            for name, backend in backends.items():
                single = time_backend(backend, args.size, 1, args.repeats, args.warmup)
                batched = time_backend(backend, args.size, 8, args.batch_repeats, 1)
                rows.append({"backbone": backbone, "backend": name,
                             "p50_ms": round(1000 * float(np.percentile(single, 50)), 1),
                             "p95_ms": round(1000 * float(np.percentile(single, 95)), 1),
                             "batch8_images_per_s": round(8 / float(np.median(batched)), 2)})
                print(json.dumps(rows[-1]), flush=True)
    speedups = {}
    for backbone in args.backbones:
        by = {r["backend"]: r["p50_ms"] for r in rows if r["backbone"] == backbone}
        if "eager" in by and "ort" in by:
            speedups[backbone] = round(by["eager"] / by["ort"], 2)
    print(json.dumps({
        "benchmark": "export_latency", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} threads", "size": args.size, "results": rows,
        "ort_over_eager_batch1": speedups}, indent=2))


if __name__ == "__main__":
    main()
