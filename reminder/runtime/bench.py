"""``reminder bench``: model latency percentiles and throughput per backend, batch and size.

Each case warms up first (engine builds, allocator, caches), then times ``iterations``
calls of the backend alone on a ready ``(B, 3, H, W)`` batch ("model"), and the same
number of full :meth:`Predictor.predict` calls on uint8 frames of that size ("predict":
pre-processing, inference, post-processing and per-class counts).
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from reminder.errors import ReminderError
from reminder.runtime.backends import FORMAT_BACKEND, ONNX_FORMATS, PRECISIONS
from reminder.runtime.predictor import Predictor, resolve_bundle


def _percentiles(seconds: list[float]) -> dict:
    ms = 1000 * np.asarray(seconds)
    return {"p50": round(float(np.percentile(ms, 50)), 3), "p95": round(float(np.percentile(ms, 95)), 3),
            "p99": round(float(np.percentile(ms, 99)), 3), "mean": round(float(ms.mean()), 3)}


def _timed(call: Callable[[], object], warmup: int, iterations: int) -> list[float]:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(iterations):
        began = time.perf_counter()
        call()
        times.append(time.perf_counter() - began)
    return times


def bench_case(predictor: Predictor, batch: int, height: int, width: int, *, warmup: int = 10,
               iterations: int = 50, seed: int = 0) -> dict:
    """One backend, batch size and input size: latency percentiles and images per second."""
    rng = np.random.default_rng(seed)
    frames = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(batch)]
    [(_, inputs, _)] = predictor.manifest.input.to_batch(frames, size=(height, width), resize="none", color="bgr")
    model = _timed(lambda: predictor.backend(inputs), warmup, iterations)
    predict = _timed(lambda: predictor.predict(frames), max(1, warmup // 2), iterations)
    return {"backend": predictor.backend.name, "precision": predictor.precision,
            "artifact": getattr(predictor.backend, "artifact", None), "device": predictor.backend_name, "batch": batch,
            "height": height, "width": width, "iterations": iterations,
            "model_ms": _percentiles(model), "predict_ms": _percentiles(predict),
            "throughput_fps": round(batch * iterations / sum(model), 2),
            "predict_fps": round(batch * iterations / sum(predict), 2)}


def _all_backends(manifest) -> list[str]:
    """Every backend that runs one of the bundle's artifacts (OpenVINO for its ONNX)."""
    names = []
    for fmt in manifest.formats:
        for name in [FORMAT_BACKEND.get(fmt)] + (["openvino"] if fmt in ONNX_FORMATS else []):
            if name and name not in names:
                names.append(name)
    return names


def benchmark(bundle: str | Path, *, backends: Sequence[str] = ("auto",), precisions: Sequence[str] = ("auto",),
              batches: Sequence[int] = (1,), sizes: Sequence[tuple[int, int]] | None = None, warmup: int = 10,
              iterations: int = 50, threads: int | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Every (backend, precision, batch, size) case; ``backends`` may say ``all`` (every
    backend that runs an artifact of the bundle). OpenVINO runs batch 1 with its LATENCY
    hint and larger batches with THROUGHPUT. A backend or precision that cannot run here
    is listed under ``skipped`` with why."""
    if warmup < 0 or iterations < 1:
        raise ReminderError(f"need warmup >= 0 and iterations >= 1, got {warmup} and {iterations}")
    if any(b < 1 for b in batches):
        raise ReminderError(f"batch sizes must be at least 1, got {list(batches)}")
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown:
        raise ReminderError(f"unknown precision {unknown[0]!r}; choose from {', '.join(PRECISIONS)}")
    bundle = resolve_bundle(bundle)
    first = Predictor(bundle, log=log, threads=threads)
    if sizes is None:
        sizes = [first.size]
    names = list(backends)
    if "all" in names:
        names = _all_backends(first.manifest)
    report = {"bundle": str(bundle), "version": first.version, "classes": first.num_classes,
              "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                          "python": platform.python_version()},
              "warmup": warmup, "iterations": iterations, "results": [], "skipped": {}}
    for name in names:
        for precision in precisions:
            key = name if list(precisions) == ["auto"] else f"{name} {precision}"
            hints = {"THROUGHPUT" if batch > 1 else "LATENCY" for batch in batches}
            try:
                predictors = {hint: Predictor(bundle, backend=name, precision=precision, log=log, threads=threads,
                                              hint=hint) for hint in sorted(hints)}
            except ReminderError as error:
                report["skipped"][key] = str(error)
                if log:
                    log(f"{key}: skipped ({error})")
                continue
            for height, width in sizes:
                for batch in batches:
                    predictor = predictors["THROUGHPUT" if batch > 1 else "LATENCY"]
                    case = bench_case(predictor, batch, height, width, warmup=warmup, iterations=iterations)
                    if log:
                        log(f"{case['device']} batch {batch} {height}x{width}: p50 {case['model_ms']['p50']:.2f} ms, "
                            f"{case['throughput_fps']:.1f} images/s")
                    report["results"].append(case)
    return report
