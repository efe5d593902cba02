"""OpenVINO: the bundle's ONNX (FP32 or INT8 QDQ) on x86 CPUs (or Intel GPUs/NPUs).

An optional extra (``pip install 'reminder[openvino]'``); torch-free. OpenVINO reads the
ONNX file directly: nothing is converted or written. On CPUs with native bf16 (AVX512-BF16,
AMX) OpenVINO computes an FP32 model in bf16 unless told otherwise: ``--precision fp32``
asks for f32, ``bf16`` (or ``auto``) lets it; the backend reports what it computes in. The ``LATENCY`` hint (one camera)
runs each call on all cores; ``THROUGHPUT`` (batched sources) keeps several inference
streams busy: a batch is split into frames that run in parallel, one per stream.
"""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np

from reminder.errors import ReminderError

INSTALL = "pip install 'reminder[openvino]' (or: pip install openvino)"
HINTS = ("LATENCY", "THROUGHPUT")


def import_openvino():
    try:
        import openvino
    except ImportError:
        raise ReminderError(f"the openvino backend needs OpenVINO, which is not installed: {INSTALL}") from None
    return openvino


def openvino_available() -> bool:
    """OpenVINO is installed and this is an x86 machine (where ``auto`` considers it)."""
    import importlib.util

    return platform.machine().lower() in ("x86_64", "amd64") and importlib.util.find_spec("openvino") is not None


def _collect(request, userdata) -> None:
    """AsyncInferQueue's callback: copy request's outputs into ``results[index]``."""
    results, index, count = userdata
    results[index] = [request.get_output_tensor(i).data.copy() for i in range(count)]


class OpenVinoBackend:
    name = "openvino"

    def __init__(self, path: str | Path, *, device: str | None = None, hint: str = "LATENCY",
                 threads: int | None = None, inference_precision: str | None = None):
        ov = import_openvino()
        hint = hint.upper()
        if hint not in HINTS:
            raise ReminderError(f"unknown OpenVINO performance hint {hint!r}; choose {' or '.join(HINTS)}")
        device = (device or "CPU").upper()
        config = {"PERFORMANCE_HINT": hint}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        if inference_precision:  # f32 or bf16; by default OpenVINO picks bf16 where the CPU has it
            config["INFERENCE_PRECISION_HINT"] = inference_precision
        self.path, self.hint, self.device = Path(path), hint, device
        try:
            core = ov.Core()
            self.compiled = core.compile_model(core.read_model(str(path)), device, config)
        except RuntimeError as error:  # OpenVINO reports every failure as RuntimeError
            raise ReminderError(f"OpenVINO cannot load {Path(path).name} on {device}: "
                                f"{str(error).strip().splitlines()[0][:300]}") from None
        self.output_names = [output.get_any_name() for output in self.compiled.outputs]
        computed = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        name = computed.get_type_name() if hasattr(computed, "get_type_name") else str(computed)
        self.execution_precision = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}.get(name, name)
        self.request = self.compiled.create_infer_request()
        self.queue = None
        if hint == "THROUGHPUT":
            requests = int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
            if requests > 1:
                self.queue = ov.AsyncInferQueue(self.compiled, requests)
        self.providers = [f"{device} {hint.lower()}"]

    def close(self) -> None:
        """Release the infer requests, then the compiled model, now and in this thread. Left
        to garbage collection, a model dropped by a hot reload was freed at interpreter exit,
        after OpenVINO's thread pools had begun to shut down: a segmentation fault on SIGTERM."""
        self.queue = self.request = self.compiled = None

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        if self.compiled is None:
            raise ReminderError(f"the OpenVINO model of {self.path.name} was closed")
        images = np.ascontiguousarray(images, dtype=np.float32)
        if self.queue is None or len(images) == 1:
            self.request.infer({0: images})
            return {name: self.request.get_output_tensor(i).data.copy() for i, name in enumerate(self.output_names)}
        results: list = [None] * len(images)
        # the callback must not hold this backend: OpenVINO's queue keeps it, and a cycle through
        # native objects is never collected (each reloaded model leaked 3 threads and 14 MB)
        self.queue.set_callback(_collect)
        for index in range(len(images)):
            self.queue.start_async({0: images[index:index + 1]}, (results, index, len(self.output_names)))
        self.queue.wait_all()
        if any(r is None for r in results):
            raise ReminderError(f"OpenVINO returned no result for part of a batch of {len(images)}")
        return {name: np.concatenate([r[i] for r in results]) for i, name in enumerate(self.output_names)}
