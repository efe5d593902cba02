"""Backends that run a bundle's artifacts on ``(B, 3, H, W)`` float32 RGB 0..255 images.

Each backend is called with a numpy array and returns ``{output name: numpy array}``.
``ort`` needs only onnxruntime; ``torchscript`` and ``aoti`` import torch when they are
opened; ``trt`` imports tensorrt (and torch for device buffers) when it is opened.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reminder.errors import ReminderError


def _require(module: str, install: str):
    """Import an optional dependency when a backend is opened, or say what to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ReminderError(f"this backend needs {module}, which is not installed: pip install {install}") from None


def default_engine_cache() -> Path:
    import os

    return Path(os.environ.get("REMINDER_CACHE", Path.home() / ".cache" / "reminder")) / "ort-tensorrt"


class OrtBackend:
    """ONNX Runtime, with the TensorRT, CUDA and CPU execution providers in that order
    when available (or the ``providers`` given). The TensorRT execution provider keeps its
    engines and timing cache in ``engine_cache`` (built once per model, GPU and version)."""

    name = "ort"

    def __init__(self, path: str | Path, *, providers: list | None = None, threads: int | None = None,
                 engine_cache: str | Path | None = None, fp16: bool = False):
        ort = _require("onnxruntime", "onnxruntime (or onnxruntime-gpu)")
        available = ort.get_available_providers()
        if providers is None:
            from reminder.runtime.engines import ort_tensorrt_provider

            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
            if "TensorrtExecutionProvider" in available:
                providers.insert(0, ort_tensorrt_provider(engine_cache or default_engine_cache(), fp16=fp16))
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as error:  # onnxruntime raises its own exception types
            raise ReminderError(f"ONNX Runtime cannot load {path}: {str(error).splitlines()[0]}") from None
        self.providers = self.session.get_providers()
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        outputs = self.session.run(None, {"images": np.ascontiguousarray(images, dtype=np.float32)})
        return dict(zip(self.output_names, outputs))


class _TorchBackend:
    def __init__(self, device: str | None = None):
        self.torch = _require("torch", "torch")
        self.device = self.torch.device(device or ("cuda" if self.torch.cuda.is_available() else "cpu"))

    def _names(self, count: int) -> list[str]:
        return ["logits"] if count == 1 else ["labels", "confidence"]

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        torch = self.torch
        with torch.no_grad():
            out = self.module(torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).to(self.device))
        outputs = out if isinstance(out, (tuple, list)) else (out,)
        return dict(zip(self._names(len(outputs)), (o.cpu().numpy() for o in outputs)))


class TorchScriptBackend(_TorchBackend):
    name = "torchscript"

    def __init__(self, path: str | Path, *, device: str | None = None):
        super().__init__(device)
        self.module = self.torch.jit.load(str(path), map_location=self.device).eval()


class AotiBackend(_TorchBackend):
    name = "aoti"

    def __init__(self, path: str | Path, *, device: str | None = None):
        super().__init__(device)
        self.module = self.torch._inductor.aoti_load_package(str(path))


class TensorRTBackend:
    """A TensorRT engine written by :func:`reminder.export.tensorrt.build_engine` (header: :mod:`reminder.runtime.engines`)."""

    name = "trt"

    def __init__(self, path: str | Path):
        from reminder.runtime.engines import check_engine_compatible, import_tensorrt, read_engine

        trt = import_tensorrt()
        self.torch = _require("torch", "torch (for GPU buffers)")
        header, engine_bytes = read_engine(path)
        check_engine_compatible(header, path)
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(engine_bytes)
        self.context = self.engine.create_execution_context()
        self.output_names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)
                             if self.engine.get_tensor_mode(self.engine.get_tensor_name(i)) == trt.TensorIOMode.OUTPUT]
        self.trt = trt

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        torch, trt = self.torch, self.trt
        source = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).cuda()
        self.context.set_input_shape("images", tuple(source.shape))
        self.context.set_tensor_address("images", source.data_ptr())
        outputs = {}
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = {trt.float32: torch.float32, trt.float16: torch.float16, trt.uint8: torch.uint8,
                     trt.int32: torch.int32, trt.int64: torch.int64}[self.engine.get_tensor_dtype(name)]
            outputs[name] = torch.empty(shape, dtype=dtype, device="cuda")
            self.context.set_tensor_address(name, outputs[name].data_ptr())
        stream = torch.cuda.current_stream()
        self.context.execute_async_v3(stream.cuda_stream)
        stream.synchronize()
        return {name: tensor.cpu().numpy() for name, tensor in outputs.items()}


BACKENDS = {"ort": OrtBackend, "torchscript": TorchScriptBackend, "aoti": AotiBackend, "trt": TensorRTBackend}
FORMAT_BACKEND = {"onnx": "ort", "torchscript": "torchscript", "aoti": "aoti", "tensorrt": "trt"}


BACKEND_NAMES = ("auto", "ort", "trt", "torchscript", "aoti")
_BACKEND_FORMAT = {backend: fmt for fmt, backend in FORMAT_BACKEND.items()}
# the options each backend accepts; the others are dropped for it
_OPTIONS = {"ort": ("providers", "threads", "engine_cache", "fp16"), "trt": (),
            "torchscript": ("device",), "aoti": ("device",)}


def open_artifact(bundle: Path, manifest: dict, fmt: str, **options):
    """The backend running artifact ``fmt`` of a (verified) bundle."""
    if fmt not in manifest.get("artifacts", {}):
        raise ReminderError(f"bundle {bundle} has no {fmt} artifact (it has: {', '.join(manifest['artifacts'])})")
    backend = FORMAT_BACKEND[fmt]
    accepted = {k: v for k, v in options.items() if k in _OPTIONS[backend] and v is not None}
    return BACKENDS[backend](Path(bundle) / manifest["artifacts"][fmt]["path"], **accepted)


def select_backend(bundle: Path, manifest: dict, backend: str = "auto", *, log=None, **options):
    """Open the backend named (``ort``, ``trt``, ``torchscript``, ``aoti``) or, for
    ``auto``, the best one that works here: a TensorRT engine built for this GPU and
    TensorRT version, else ONNX Runtime (TensorRT / CUDA / CPU providers), else TorchScript
    or AOTInductor when torch is installed. Each fallback is reported through ``log``."""
    if backend not in BACKEND_NAMES:
        raise ReminderError(f"unknown backend {backend!r}; choose one of {', '.join(BACKEND_NAMES)}")
    if backend != "auto":
        return open_artifact(bundle, manifest, _BACKEND_FORMAT[backend], **options)
    available = [fmt for fmt in ("tensorrt", "onnx", "torchscript", "aoti") if fmt in manifest.get("artifacts", {})]
    if not available:
        raise ReminderError(f"bundle {bundle} has no runnable artifact")
    reasons = []
    for fmt in available:
        try:
            return open_artifact(bundle, manifest, fmt, **options)
        except ReminderError as error:
            reasons.append(f"{fmt}: {error}")
            if log is not None and fmt != available[-1]:
                log(f"{fmt} artifact not usable here ({error}); trying the next format")
    raise ReminderError(f"no artifact of bundle {bundle} can run here: " + "; ".join(reasons))
