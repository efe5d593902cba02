"""Backends that run a bundle's artifacts on ``(B, 3, H, W)`` float32 RGB 0..255 images.

Each backend is called with a numpy array and returns ``{output name: numpy array}``.
``ort`` needs only onnxruntime (onnxruntime-gpu for its CUDA and TensorRT providers);
``torchscript`` and ``aoti`` import torch when they are opened; ``trt`` imports tensorrt,
and torch for its GPU buffers (:class:`reminder.runtime.engines.CudaBuffers`).
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
    from reminder.runtime.engines import cache_root

    return cache_root() / "ort-tensorrt"


class OrtBackend:
    """ONNX Runtime, with the TensorRT, CUDA and CPU execution providers in that order
    when available (or the ``providers`` given). The TensorRT execution provider keeps its
    engines and timing cache in ``engine_cache`` (built once per model, GPU and version)."""

    name = "ort"

    def __init__(self, path: str | Path, *, providers: list | None = None, threads: int | None = None,
                 engine_cache: str | Path | None = None, fp16: bool = False, profile=None, log=None):
        ort = _require("onnxruntime", "onnxruntime (or onnxruntime-gpu)")
        available = ort.get_available_providers()
        if providers is None:
            from reminder.runtime.engines import installed_tensorrt_version, ort_tensorrt_mismatch, ort_tensorrt_provider

            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
            mismatch = ort_tensorrt_mismatch(ort.__version__, installed_tensorrt_version())
            if "TensorrtExecutionProvider" in available and mismatch and log is not None:
                log(mismatch)
            if "TensorrtExecutionProvider" in available and not mismatch:
                providers.insert(0, ort_tensorrt_provider(engine_cache or default_engine_cache(), fp16=fp16,
                                                          profile=profile))
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
        if self.device.type == "cuda" and not self.torch.cuda.is_available():
            raise ReminderError(f"device {self.device} was asked for, but CUDA is not available here")

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
    """An AOTInductor package holds native code for one device type, and does not check the
    device of its inputs (CUDA tensors into a CPU package crash the process): inputs go to
    the device it was compiled for (``compiled_for``, from the manifest), whatever else is
    available; a CUDA package on a machine without CUDA is refused."""

    name = "aoti"

    def __init__(self, path: str | Path, *, device: str | None = None, compiled_for: str = "cpu"):
        torch = _require("torch", "torch")
        compiled = torch.device(compiled_for)
        if device is not None and torch.device(device).type != compiled.type:
            raise ReminderError(f"AOTInductor package {Path(path).name} was compiled for {compiled_for}; it cannot "
                                f"run on {device}")
        if compiled.type == "cuda" and not torch.cuda.is_available():
            raise ReminderError(f"AOTInductor package {Path(path).name} was compiled for {compiled_for}, and this "
                                f"machine has no CUDA; use the bundle's ONNX or TorchScript artifact")
        super().__init__(device or compiled_for)
        self.module = self.torch._inductor.aoti_load_package(str(path))


class TensorRTBackend:
    """A TensorRT engine written by :func:`reminder.export.tensorrt.build_engine` (header:
    :mod:`reminder.runtime.engines`). Inputs must fit the engine's shape profile; every
    TensorRT call that reports failure by its return value is checked."""

    name = "trt"
    DTYPES = {"FLOAT": "float32", "HALF": "float16", "UINT8": "uint8", "INT8": "int8", "INT32": "int32",
              "INT64": "int64", "BOOL": "bool", "BF16": "bfloat16"}

    def __init__(self, path: str | Path, *, buffers=None):
        from reminder.runtime.engines import EngineProfile, check_engine_compatible, import_tensorrt, read_engine

        trt = import_tensorrt()
        self.path = Path(path)
        header, engine_bytes = read_engine(path)
        check_engine_compatible(header, path)
        self.profile = EngineProfile.from_json(header["profile"]) if header.get("profile") else None
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise ReminderError(f"TensorRT {trt.__version__} could not deserialise engine {self.path.name}; rebuild "
                                f"it on this device or use the ONNX artifact")
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise ReminderError(f"TensorRT could not create an execution context for engine {self.path.name} "
                                f"(out of GPU memory?)")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.output_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.dtypes = {n: self.DTYPES[self.engine.get_tensor_dtype(n).name] for n in self.output_names}
        if buffers is None:
            from reminder.runtime.engines import CudaBuffers

            buffers = CudaBuffers()
        self.buffers = buffers

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        shape = tuple(int(v) for v in images.shape)
        if self.profile is not None and not self.profile.holds(shape[2], shape[3], shape[0]):
            raise ReminderError(f"engine {self.path.name} accepts {self.profile.describe()}; input {shape} is "
                                f"outside it")
        if not self.context.set_input_shape("images", shape):
            raise ReminderError(f"engine {self.path.name} refused input shape {shape}")
        source = self.buffers.upload(np.ascontiguousarray(images, dtype=np.float32))
        self.context.set_tensor_address("images", self.buffers.address(source))
        outputs = {}
        for name in self.output_names:
            outputs[name] = self.buffers.empty(tuple(self.context.get_tensor_shape(name)), self.dtypes[name])
            self.context.set_tensor_address(name, self.buffers.address(outputs[name]))
        if not self.context.execute_async_v3(self.buffers.handle):
            raise ReminderError(f"TensorRT failed to run engine {self.path.name} on input shape {shape}")
        self.buffers.synchronize()
        return {name: self.buffers.download(tensor) for name, tensor in outputs.items()}


BACKENDS = {"ort": OrtBackend, "torchscript": TorchScriptBackend, "aoti": AotiBackend, "trt": TensorRTBackend}
FORMAT_BACKEND = {"onnx": "ort", "torchscript": "torchscript", "aoti": "aoti", "tensorrt": "trt"}


BACKEND_NAMES = ("auto", "ort", "trt", "torchscript", "aoti")
_BACKEND_FORMAT = {backend: fmt for fmt, backend in FORMAT_BACKEND.items()}
# the options each backend accepts; the others are dropped for it
_OPTIONS = {"ort": ("providers", "threads", "engine_cache", "fp16", "profile", "log"), "trt": ("buffers",),
            "torchscript": ("device",), "aoti": ("device", "compiled_for")}


def input_profile(manifest: dict):
    """The input shapes the exporter checked (``input.profile``), or, for older bundles,
    half to twice the manifest's input size, batch 1-8."""
    from reminder.runtime.engines import EngineProfile

    spec = manifest.get("input") or {}
    if spec.get("profile"):
        return EngineProfile.from_json(spec["profile"])
    height, width = int(spec.get("height", 512)), int(spec.get("width", 512))
    return EngineProfile.covering([], opt=(height, width), max_batch=8, margin=0.5)


def open_artifact(bundle: Path, manifest: dict, fmt: str, **options):
    """The backend running artifact ``fmt`` of a (verified) bundle."""
    if fmt not in manifest.get("artifacts", {}):
        raise ReminderError(f"bundle {bundle} has no {fmt} artifact (it has: {', '.join(manifest['artifacts'])})")
    backend, entry = FORMAT_BACKEND[fmt], manifest["artifacts"][fmt]
    facts = {"ort": {"profile": input_profile(manifest)}, "aoti": {"compiled_for": entry.get("device", "cpu")}}
    options = {**facts.get(backend, {}), **options}
    accepted = {k: v for k, v in options.items() if k in _OPTIONS[backend] and v is not None}
    return BACKENDS[backend](Path(bundle) / entry["path"], **accepted)


def select_backend(bundle: Path, manifest: dict, backend: str = "auto", *, log=None, **options):
    """Open the backend named (``ort``, ``trt``, ``torchscript``, ``aoti``) or, for
    ``auto``, the best one that works here: a TensorRT engine built for this GPU and
    TensorRT version, else ONNX Runtime (TensorRT / CUDA / CPU providers), else TorchScript
    or AOTInductor when torch is installed. Each fallback is reported through ``log``."""
    if backend not in BACKEND_NAMES:
        raise ReminderError(f"unknown backend {backend!r}; choose one of {', '.join(BACKEND_NAMES)}")
    if backend != "auto":
        return open_artifact(bundle, manifest, _BACKEND_FORMAT[backend], log=log, **options)
    available = [fmt for fmt in ("tensorrt", "onnx", "torchscript", "aoti") if fmt in manifest.get("artifacts", {})]
    if not available:
        raise ReminderError(f"bundle {bundle} has no runnable artifact")
    reasons = []
    for fmt in available:
        try:
            return open_artifact(bundle, manifest, fmt, log=log, **options)
        except ReminderError as error:
            reasons.append(f"{fmt}: {error}")
            if log is not None and fmt != available[-1]:
                log(f"{fmt} artifact not usable here ({error}); trying the next format")
    raise ReminderError(f"no artifact of bundle {bundle} can run here: " + "; ".join(reasons))
