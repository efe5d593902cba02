"""Backends that run a bundle's artifacts on ``(B, 3, H, W)`` float32 RGB 0..255 images.

Each backend is called with a numpy array and returns ``{output name: numpy array}``.
``ort`` needs only onnxruntime (onnxruntime-gpu for its CUDA and TensorRT providers);
``torchscript`` and ``aoti`` import torch when they are opened; ``trt`` imports tensorrt,
and torch for its GPU buffers (:class:`reminder.runtime.engines.CudaBuffers`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reminder.contracts.artifacts import ARTIFACTS, formats_of, runnable_backends
from reminder.contracts.manifest import Manifest
from reminder.errors import LocalError, MissingDependency, ReminderError


def _require(module: str, install: str):
    """Import an optional dependency when a backend is opened, or say what to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependency(f"this backend needs {module}, which is not installed: pip install {install}") from None


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
            from reminder.runtime import engines

            providers, mismatch = engines.default_ort_providers(
                available, ort_version=ort.__version__, tensorrt_version=engines.installed_tensorrt_version(),
                tensorrt_present=engines.tensorrt_libraries_present())
            if mismatch and log is not None:
                log(mismatch)
            if providers and providers[0] == "TensorrtExecutionProvider":
                providers[0] = engines.ort_tensorrt_provider(engine_cache or default_engine_cache(), fp16=fp16,
                                                             profile=profile)
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


def _openvino(path, **options):
    from reminder.runtime.openvino import OpenVinoBackend

    return OpenVinoBackend(path, **options)


BACKENDS = {"ort": OrtBackend, "openvino": _openvino, "torchscript": TorchScriptBackend, "aoti": AotiBackend,
            "trt": TensorRTBackend}
# from the artifact table: each format's preferred backend, and what the ONNX backends run
FORMAT_BACKEND = {name: kind.backends[0] for name, kind in ARTIFACTS.items()}
ONNX_FORMATS = formats_of("ort")

BACKEND_NAMES = ("auto", "ort", "openvino", "trt", "torchscript", "aoti")
PRECISIONS = ("auto", "fp32", "bf16", "int8")
# the options each backend accepts; the others are dropped for it
_OPTIONS = {"ort": ("providers", "threads", "engine_cache", "fp16", "profile", "log"), "trt": ("buffers",),
            "openvino": ("device", "hint", "threads", "inference_precision"), "torchscript": ("device",),
            "aoti": ("device", "compiled_for")}


def input_profile(manifest: Manifest):
    """The input shapes the exporter checked (``input.profile``), or, for older bundles,
    half to twice the manifest's input size, batch 1-8."""
    from reminder.runtime.engines import EngineProfile

    spec = manifest.input
    if spec.profile:
        return EngineProfile.from_json(spec.profile)
    return EngineProfile.covering([], opt=spec.size, max_batch=8, margin=0.5)


def open_artifact(bundle: Path, manifest: Manifest, fmt: str, *, backend: str | None = None, **options):
    """The backend running artifact ``fmt`` of a (verified) bundle (``backend``: another
    backend that runs it, ``openvino`` for the ONNX formats)."""
    if fmt not in manifest.formats:
        raise ReminderError(f"bundle {bundle} has no {fmt} artifact (it has: {', '.join(manifest.formats)})")
    backend, entry = backend or FORMAT_BACKEND[fmt], manifest.artifact(fmt)
    facts = {"ort": {"profile": input_profile(manifest)}, "aoti": {"compiled_for": entry.get("device", "cpu")}}
    options = {**facts.get(backend, {}), **options}
    accepted = {k: v for k, v in options.items() if k in _OPTIONS[backend] and v is not None}
    opened = BACKENDS[backend](Path(bundle) / entry.path, **accepted)
    opened.artifact = fmt
    opened.precision = entry.precision
    if backend == "openvino" and fmt == "onnx":  # what OpenVINO computes the FP32 model in
        opened.precision = opened.execution_precision
    return opened


def _ort_on_cpu(options: dict) -> bool:
    """ONNX Runtime will run on the CPU: no GPU provider asked for or installed."""
    providers = options.get("providers")
    if providers is None:
        try:
            import onnxruntime
        except ImportError:
            return True
        providers = onnxruntime.get_available_providers()
    names = [p[0] if isinstance(p, (tuple, list)) else p for p in providers]
    return not any(n in ("CUDAExecutionProvider", "TensorrtExecutionProvider") for n in names)


def choose_format(bundle: Path, manifest: Manifest, backend: str, precision: str, *, on_cpu: bool) -> str:
    """The artifact ``backend`` runs at ``precision``: ``int8`` needs the INT8 artifact
    (refused, listing what the bundle has, when it is missing), ``fp32`` and ``bf16`` the
    FP32 one (``bf16``: OpenVINO only, which computes it in bf16); ``auto`` prefers INT8 on
    a CPU when the bundle has it."""
    if precision not in PRECISIONS:
        raise ReminderError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    artifacts = manifest.formats
    have = ", ".join(f"{name} ({manifest.artifact(name).precision})" for name in artifacts) or "nothing"
    if precision == "bf16" and backend != "openvino":
        raise ReminderError(f"`precision` bf16 runs on the openvino backend only (the FP32 model computed in bf16, "
                            f"on CPUs with native bf16); the {backend} backend runs the artifacts as they are")
    if backend in ("ort", "openvino"):
        only_int8 = "onnx-int8" in artifacts and "onnx" not in artifacts
        if precision in ("fp32", "bf16") and only_int8:
            raise ReminderError(f"precision {precision}: bundle {bundle} has no FP32 artifact (it has: {have})")
        if precision == "int8" or (precision == "auto" and (on_cpu or only_int8) and "onnx-int8" in artifacts):
            if "onnx-int8" not in artifacts:
                raise ReminderError(f"`precision` int8: bundle {bundle} has no INT8 artifact (it has: {have}); "
                                    f"export it with `format` onnx-int8")
            return "onnx-int8"
        return "onnx"
    fmt = formats_of(backend)[0]
    actual = manifest.artifact(fmt).precision if fmt in artifacts else "fp32"
    if precision == "int8" and actual != "int8":
        raise ReminderError(f"`precision` int8: the {backend} backend runs bundle {bundle}'s {fmt} artifact, "
                            f"which is {actual if fmt in artifacts else 'missing'} (the bundle has: {have}); INT8 "
                            f"runs on the ort and openvino backends (onnx-int8) or a `trt_int8` engine")
    if precision == "fp32" and actual == "int8":
        raise ReminderError(f"`precision` fp32: bundle {bundle}'s {fmt} artifact is INT8 (the bundle has: {have})")
    return fmt


def select_backend(bundle: Path, manifest: Manifest, backend: str = "auto", *, precision: str = "auto", log=None,
                   **options):
    """Open the backend named (``ort``, ``openvino``, ``trt``, ``torchscript``, ``aoti``)
    at ``precision`` or, for ``auto``, the best one that works here: a TensorRT engine
    built for this GPU and TensorRT version, else (on an x86 CPU with OpenVINO installed)
    OpenVINO if it agrees with ONNX Runtime on the bundle's sample frame, else ONNX Runtime
    (TensorRT / CUDA / CPU providers), else TorchScript or AOTInductor when torch is
    installed. Each fallback is reported through ``log``."""
    if backend not in BACKEND_NAMES:
        raise ReminderError(f"unknown backend {backend!r}; choose one of {', '.join(BACKEND_NAMES)}")
    # an option no backend takes is a mistake (``thread=4``); one of another backend's is dropped
    takes = set().union(*_OPTIONS.values())
    unknown = sorted(set(options) - takes)
    if unknown:
        raise ReminderError(f"unknown backend option {unknown[0]!r}; the backends take {', '.join(sorted(takes))}")
    on_cpu = _ort_on_cpu(options)
    if backend == "openvino" or (backend == "auto" and precision in ("fp32", "bf16")):
        # OpenVINO computes an FP32 model in bf16 by default on CPUs with native bf16: fp32 asks for f32
        options = {"inference_precision": {"fp32": "f32", "bf16": "bf16"}.get(precision), **options}
    if backend != "auto":
        fmt = choose_format(bundle, manifest, backend, precision, on_cpu=on_cpu or backend == "openvino")
        return open_artifact(bundle, manifest, fmt, backend=backend, log=log, **options)
    artifacts = manifest.formats
    candidates = [b for b in runnable_backends(artifacts) if b != "openvino" or (on_cpu and _openvino_here())]
    if not candidates:
        raise ReminderError(f"bundle {bundle} has no runnable artifact (it has: {', '.join(artifacts) or 'none'})")
    reasons, local = [], True
    for name in candidates:
        try:
            fmt = choose_format(bundle, manifest, name, precision, on_cpu=on_cpu)
            opened = open_artifact(bundle, manifest, fmt, backend=name, log=log, **options)
            if name == "openvino":
                _check_openvino(bundle, manifest, opened, options)
            return opened
        except ReminderError as error:
            reasons.append(f"{name}: {error}")
            local = local and isinstance(error, LocalError)
            if log is not None and name != candidates[-1]:
                log(f"{name} backend not usable here ({error}); trying the next one")
    # only missing packages (or other local causes) stood in the way: this machine's problem
    raise (LocalError if local else ReminderError)(f"no artifact of bundle {bundle} can run here: "
                                                   + "; ".join(reasons))


def _openvino_here() -> bool:
    from reminder.runtime.openvino import openvino_available

    return openvino_available()


def _check_openvino(bundle: Path, manifest: Manifest, opened, options: dict) -> None:
    """Parity of OpenVINO with ONNX Runtime on the bundle's sample frame (the same
    artifact): at least 99.5% of the pixels with the same label (99% for INT8, whose
    rounding differs between the two runtimes; near-ties of a small model's logits flip
    between any two runtimes)."""
    sample = Path(bundle) / "sample.png"
    if not manifest.has_file("sample.png") or not sample.is_file():
        raise ReminderError("the bundle has no sample.png to check OpenVINO against ONNX Runtime")
    import cv2

    image = cv2.imread(str(sample))
    if image is None:
        raise ReminderError(f"cannot read {sample}")
    [batch] = manifest.input.to_inputs([image[:, :, ::-1]], resize="none")
    reference = open_artifact(bundle, manifest, opened.artifact, backend="ort",
                              **{k: v for k, v in options.items() if k == "threads"})
    expected = output_labels(reference(batch))
    try:
        actual = output_labels(opened(batch))
    except Exception as error:  # OpenVINO's own errors (RuntimeError...): a failed check, as a disagreement is
        raise ReminderError(f"OpenVINO failed on the sample frame: {type(error).__name__}: "
                            f"{str(error).strip()[:200]}") from None
    agreement = float((expected == actual).mean())
    needed = 0.99 if opened.precision == "int8" else 0.995
    if agreement < needed:
        raise ReminderError(f"OpenVINO agrees with ONNX Runtime on {100 * agreement:.2f}% of the sample's pixels, "
                            f"below {100 * needed:.1f}%")


def output_labels(outputs: dict) -> np.ndarray:
    """A backend's label map: its ``labels`` output, or the argmax of its ``logits``."""
    return outputs["logits"].argmax(axis=1) if "logits" in outputs else outputs["labels"]
