"""The export formats in one table that the CLI, the docs and the tests read."""

from __future__ import annotations

from dataclasses import dataclass

from reminder.errors import ReminderError


@dataclass(frozen=True)
class ExportFormat:
    name: str
    filename: str  # in the bundle; "{sm}" is the GPU's compute capability
    needs_gpu: bool
    needs_torch_to_run: bool
    backend: str  # the runtime backend that runs it
    description: str


FORMATS: dict[str, ExportFormat] = {
    "onnx": ExportFormat("onnx", "model.onnx", False, False, "ort",
                         "ONNX (opset 18, dynamic batch/height/width); ONNX Runtime CPU/CUDA/TensorRT EP"),
    # static QDQ INT8 of the ONNX above (which it needs beside it, as its quality reference)
    "onnx-int8": ExportFormat("onnx-int8", "model.int8.onnx", False, False, "ort",
                              "ONNX INT8 (static QDQ: U8 activations, S8 per-channel weights), calibrated on "
                              "the step's training images; ONNX Runtime or OpenVINO on CPUs"),
    "torchscript": ExportFormat("torchscript", "model.ts", False, True, "torchscript",
                                "TorchScript trace (deprecated upstream; kept for older stacks)"),
    "aoti": ExportFormat("aoti", "model.pt2", False, True, "aoti",
                         "torch.export + AOTInductor package, compiled for this machine's CPU or GPU"),
    # runs with tensorrt plus torch (its GPU buffers); ONNX Runtime's TensorRT provider needs no torch
    "tensorrt": ExportFormat("tensorrt", "model.{sm}.engine", True, True, "trt",
                             "TensorRT engine built from the ONNX, tied to one GPU and TensorRT version"),
}


def parse_formats(value: str | list[str]) -> list[ExportFormat]:
    """``"onnx,torchscript"`` -> formats, in the table's order; unknown names are refused.
    ``onnx-int8`` brings ``onnx`` with it: the INT8 model is measured against it."""
    names = [v.strip() for v in (value.split(",") if isinstance(value, str) else value) if v.strip()]
    unknown = [n for n in names if n not in FORMATS]
    if unknown:
        raise ReminderError(f"unknown export format {unknown[0]!r}; expected {', '.join(FORMATS)}")
    if not names:
        raise ReminderError("no export format given; expected some of " + ", ".join(FORMATS))
    if "onnx-int8" in names:
        names.append("onnx")
    return [FORMATS[n] for n in FORMATS if n in names]
