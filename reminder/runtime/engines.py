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
from pathlib import Path

from reminder.errors import ReminderError

MAGIC = b"RMDRTRT1"


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


def ort_tensorrt_provider(cache_dir: str | Path, *, fp16: bool = False) -> tuple[str, dict]:
    """ONNX Runtime's TensorRT execution provider with its engine cache in ``cache_dir``
    (keyed by ORT on the model, the TensorRT version and the GPU)."""
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    return ("TensorrtExecutionProvider", {
        "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache_dir),
        "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache_dir), "trt_fp16_enable": fp16,
    })
