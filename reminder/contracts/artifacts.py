"""The artifact table: every format a bundle can hold, its file, its precision, the runtime
backends that run it (in order of preference) and what those need. The exporter writes
through it (``reminder.export.formats``), the runtime chooses a backend through it
(``reminder.runtime.backends.select_backend``), and the CLI and docs list it.
"""

from __future__ import annotations

from dataclasses import dataclass

# runtime backends, in the order ``auto`` tries them
BACKEND_ORDER = ("trt", "openvino", "ort", "torchscript", "aoti")


@dataclass(frozen=True)
class ArtifactKind:
    name: str
    filename: str              # in the bundle; "{sm}" is the GPU's compute capability
    precision: str             # what it computes in (an engine records its own: fp32, fp16 or int8)
    backends: tuple[str, ...]  # the backends that run it, preferred first
    needs_gpu: bool
    needs_torch_to_run: bool
    description: str


ARTIFACTS: dict[str, ArtifactKind] = {
    "onnx": ArtifactKind("onnx", "model.onnx", "fp32", ("ort", "openvino"), False, False,
                         "ONNX (opset 18, dynamic batch/height/width); ONNX Runtime CPU/CUDA/TensorRT EP"),
    # static QDQ INT8 of the ONNX above (which it needs beside it, as its quality reference)
    "onnx-int8": ArtifactKind("onnx-int8", "model.int8.onnx", "int8", ("ort", "openvino"), False, False,
                              "ONNX INT8 (static QDQ: U8 activations, S8 per-channel weights), calibrated on "
                              "the step's training images; ONNX Runtime or OpenVINO on CPUs"),
    "torchscript": ArtifactKind("torchscript", "model.ts", "fp32", ("torchscript",), False, True,
                                "TorchScript trace (deprecated upstream; kept for older stacks)"),
    "aoti": ArtifactKind("aoti", "model.pt2", "fp32", ("aoti",), False, True,
                         "torch.export + AOTInductor package, compiled for this machine's CPU or GPU"),
    # runs with tensorrt plus torch (its GPU buffers); ONNX Runtime's TensorRT provider needs no torch
    "tensorrt": ArtifactKind("tensorrt", "model.{sm}.engine", "fp32", ("trt",), True, True,
                             "TensorRT engine built from the ONNX, tied to one GPU and TensorRT version"),
}


def formats_of(backend: str) -> tuple[str, ...]:
    """The formats ``backend`` runs, in the table's order."""
    return tuple(name for name, kind in ARTIFACTS.items() if backend in kind.backends)


def runnable_backends(artifacts) -> list[str]:
    """The backends that run at least one of ``artifacts`` (format names), in ``auto``'s order."""
    return [b for b in BACKEND_ORDER if any(fmt in artifacts for fmt in formats_of(b))]
