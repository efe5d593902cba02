"""TensorRT engine files as the runtime reads them, and ONNX Runtime's TensorRT provider.

Torch-free: what a device needs to refuse an engine of another GPU or TensorRT version
before deserialising it. Building engines is the exporter's job
(:mod:`reminder.export.tensorrt`), which writes the header read here.

An engine file starts with a small header (magic, length, JSON with the TensorRT version,
GPU compute capability and precision), then the serialised engine.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

from reminder.errors import ReminderError

MAGIC = b"RMDRTRT1"


def cache_root() -> Path:
    """``$REMINDER_CACHE`` or ``~/.cache/reminder``: engine and timing caches live below it."""
    import os

    return Path(os.environ.get("REMINDER_CACHE", Path.home() / ".cache" / "reminder"))


def import_tensorrt():
    try:
        import tensorrt
    except ImportError:
        raise ReminderError("TensorRT is not installed: install it from NVIDIA (pip install tensorrt, "
                            "or JetPack on Jetson); the other formats were exported") from None
    return tensorrt


def tensorrt_major(trt) -> int:
    return int(trt.__version__.split(".")[0])


def gpu_compute_capability(device: int = 0) -> str:
    """``"sm87"`` style: from torch when it is already loaded, else from nvidia-smi."""
    import sys

    torch = sys.modules.get("torch")  # never imported here: the runtime stays torch-free
    if torch is not None and torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability(device)
        return f"sm{major}{minor}"
    if shutil.which("nvidia-smi"):
        out = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        if out.returncode == 0 and out.stdout.strip():
            return "sm" + out.stdout.splitlines()[device].strip().replace(".", "")
    raise ReminderError("no CUDA GPU found: a TensorRT engine is built on the GPU it will run on")


@dataclass(frozen=True)
class EngineProfile:
    """The shapes an engine accepts for its ``images`` input: (batch, height, width) at the
    minimum, the optimum and the maximum. TensorRT refuses any input outside them."""

    min_shape: tuple[int, int, int] = (1, 256, 256)
    opt_shape: tuple[int, int, int] = (1, 512, 512)
    max_shape: tuple[int, int, int] = (8, 1024, 1024)

    def __post_init__(self):
        for low, opt, high in zip(self.min_shape, self.opt_shape, self.max_shape):
            if not 1 <= low <= opt <= high:
                raise ReminderError(f"engine profile {self.describe()} is not ordered min <= opt <= max")

    @classmethod
    def covering(cls, sizes: Iterable[tuple[int, int]], *, opt: tuple[int, int], max_batch: int = 8,
                 margin: float = 1.0) -> "EngineProfile":
        """The smallest profile that holds every ``(height, width)`` in ``sizes`` and ``opt``
        (the size the runtime resizes frames to), each widened by ``margin`` (0.5 lets
        sizes down to half and up to twice through)."""
        sizes = [tuple(int(v) for v in s) for s in sizes] + [tuple(int(v) for v in opt)]
        low_h, low_w = min(h for h, _ in sizes), min(w for _, w in sizes)
        high_h, high_w = max(h for h, _ in sizes), max(w for _, w in sizes)
        return cls((1, max(1, int(low_h * margin)), max(1, int(low_w * margin))),
                   (1, int(opt[0]), int(opt[1])),
                   (max(1, max_batch), int(high_h / margin), int(high_w / margin)))

    @classmethod
    def from_json(cls, data: dict) -> "EngineProfile":
        return cls(*(tuple(int(v) for v in data[key]) for key in ("min_shape", "opt_shape", "max_shape")))

    def to_json(self) -> dict:
        return {key: list(value) for key, value in asdict(self).items()}

    def shapes(self) -> list[tuple[int, int, int, int]]:
        return [(b, 3, h, w) for b, h, w in (self.min_shape, self.opt_shape, self.max_shape)]

    def holds(self, height: int, width: int, batch: int = 1) -> bool:
        return all(low <= v <= high for v, low, high in zip((batch, height, width), self.min_shape, self.max_shape))

    def describe(self) -> str:
        (b0, h0, w0), (b1, h1, w1) = self.min_shape, self.max_shape
        return f"batch {b0}-{b1}, height {h0}-{h1}, width {w0}-{w1}"

    def ort_options(self) -> dict[str, str]:
        """ONNX Runtime TensorRT provider options for the same profile (so it builds its
        engine once, not again for every new input shape)."""
        text = {name: "images:" + "x".join(map(str, shape))
                for name, shape in zip(("min", "opt", "max"), self.shapes())}
        return {f"trt_profile_{name}_shapes": value for name, value in text.items()}


def with_header(header: dict, engine: bytes) -> bytes:
    text = json.dumps(header).encode()
    return MAGIC + struct.pack("<I", len(text)) + text + engine


def read_engine(path: str | Path) -> tuple[dict, bytes]:
    """``(header, serialised engine)`` of a file written by the exporter."""
    data = Path(path).read_bytes()
    if not data.startswith(MAGIC):
        raise ReminderError(f"{path} is not a reminder TensorRT engine (no header)")
    (length,) = struct.unpack("<I", data[len(MAGIC):len(MAGIC) + 4])
    start = len(MAGIC) + 4
    return json.loads(data[start:start + length]), data[start + length:]


def check_engine_compatible(header: dict, path: str | Path) -> None:
    """Refuse an engine built for another GPU or TensorRT version (one line, both named)."""
    trt = import_tensorrt()
    here = {"tensorrt": trt.__version__, "compute_capability": gpu_compute_capability()}
    for key, value in here.items():
        if header.get(key) != value:
            raise ReminderError(f"engine {path} was built for {key} {header.get(key)}, this device has {value}; "
                                f"rebuild it here or use the ONNX artifact")


def ort_tensorrt_provider(cache_dir: str | Path, *, fp16: bool = False,
                          profile: EngineProfile | None = None) -> tuple[str, dict]:
    """ONNX Runtime's TensorRT execution provider with its engine and timing caches in
    ``cache_dir`` (keyed by ORT on the model, the TensorRT version and the GPU), and an
    explicit shape profile so that one engine serves every input inside it."""
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    options = {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache_dir),
               "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache_dir), "trt_fp16_enable": fp16}
    if profile is not None:
        options.update(profile.ort_options())
    return ("TensorrtExecutionProvider", options)


# ONNX Runtime releases that can drive each TensorRT major version through its TensorRT
# execution provider (older ones fall back to the CUDA provider without saying so).
ORT_FOR_TENSORRT = {10: (1, 18), 11: (1, 27)}


def ort_tensorrt_mismatch(ort_version: str, tensorrt_version: str | None) -> str | None:
    """Why this ONNX Runtime cannot use this TensorRT (``None`` when it can, or when
    TensorRT is absent)."""
    if not tensorrt_version:
        return None
    major = int(tensorrt_version.split(".")[0])
    needed = ORT_FOR_TENSORRT.get(major, max(ORT_FOR_TENSORRT.values()) if major > max(ORT_FOR_TENSORRT) else None)
    have = tuple(int(v) for v in ort_version.split(".")[:2])
    if needed is None or have >= needed:
        return None
    return (f"onnxruntime {ort_version} cannot drive TensorRT {tensorrt_version} (it needs onnxruntime-gpu >= "
            f"{needed[0]}.{needed[1]}); the TensorRT execution provider is left out")


def installed_tensorrt_version() -> str | None:
    """The installed TensorRT's version, from package metadata (without importing it)."""
    from importlib.metadata import PackageNotFoundError, version

    for name in ("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt_libs"):
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return None


def tensorrt_libraries_present() -> bool:
    """Whether TensorRT can be loaded here: a TensorRT Python package (pip or JetPack), or
    ``libnvinfer`` known to the dynamic loader. onnxruntime-gpu lists its TensorRT execution
    provider either way, and without TensorRT every session start then prints a provider
    error and retries (seen on a GPU server without TensorRT)."""
    import ctypes.util

    return installed_tensorrt_version() is not None or ctypes.util.find_library("nvinfer") is not None


def default_ort_providers(available: list[str], *, ort_version: str, tensorrt_version: str | None,
                          tensorrt_present: bool) -> tuple[list[str], str | None]:
    """ONNX Runtime's providers in order of preference, and why TensorRT's is left out when
    it is listed but cannot drive the TensorRT installed (``None`` otherwise). The TensorRT
    provider is named ``"TensorrtExecutionProvider"`` here; the caller adds its options."""
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    if "TensorrtExecutionProvider" not in available or not tensorrt_present:
        return providers, None
    mismatch = ort_tensorrt_mismatch(ort_version, tensorrt_version)
    if mismatch:
        return providers, mismatch
    return ["TensorrtExecutionProvider", *providers], None


class CudaBuffers:
    """Device memory and a dedicated CUDA stream for the TensorRT backend, through torch's
    CUDA allocator: the TensorRT backend needs torch (PyTorch for Jetson, or any CUDA build
    of torch on a server) besides TensorRT. The ONNX Runtime backend, TensorRT execution
    provider included, does not."""

    def __init__(self):
        import importlib

        try:  # loaded only when a TensorRT engine is opened, like the torch backends' torch
            torch = importlib.import_module("torch")
        except ImportError:
            raise ReminderError("the TensorRT backend needs torch for its GPU buffers (pip install torch, or "
                                "NVIDIA's PyTorch wheel on Jetson); or run the ONNX artifact with `backend` ort, "
                                "whose TensorRT execution provider needs no torch") from None
        if not torch.cuda.is_available():
            raise ReminderError("the TensorRT backend needs a CUDA GPU, and torch sees none")
        self.torch = torch
        self.stream = torch.cuda.Stream()  # not the default stream: no implicit synchronisation

    @property
    def handle(self) -> int:
        return self.stream.cuda_stream

    def upload(self, array):
        with self.torch.cuda.stream(self.stream):
            return self.torch.from_numpy(array).to("cuda", non_blocking=True)

    def empty(self, shape: tuple[int, ...], dtype: str):
        with self.torch.cuda.stream(self.stream):
            return self.torch.empty(shape, dtype=getattr(self.torch, dtype), device="cuda")

    @staticmethod
    def address(tensor) -> int:
        return tensor.data_ptr()

    def synchronize(self) -> None:
        self.stream.synchronize()

    @staticmethod
    def download(tensor):
        return tensor.cpu().numpy()
