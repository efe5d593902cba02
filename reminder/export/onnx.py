"""ONNX export: ``torch.onnx.export(dynamo=True)`` with dynamic batch, height and width."""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import torch

from reminder.errors import ReminderError
from reminder.export.graph import ExportModule
from reminder.io import atomic_write

OPSET = 18


def dynamic_dims(min_size: int = 32, max_size: int = 4096, max_batch: int = 64):
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    height = torch.export.Dim("height", min=min_size, max=max_size)
    width = torch.export.Dim("width", min=min_size, max=max_size)
    return {"images": {0: batch, 2: height, 3: width}}


def export_onnx(module: ExportModule, path: str | Path, example: torch.Tensor, *, metadata: dict | None = None,
                opset: int = OPSET, fp16: bool = False) -> Path:
    """Export ``module`` to ``path``; checked with ``onnx.checker``; ``metadata`` goes into
    ``metadata_props`` (values JSON-encoded). ``fp16`` exports half-precision weights and
    activations (the input stays float32), the form TensorRT 11 needs for FP16."""
    import onnx

    path = Path(path)
    module = module.eval()
    if fp16:
        module = _HalfPrecision(module)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(module, (example,), dynamo=True, dynamic_shapes=dynamic_dims(),
                                        input_names=["images"], output_names=module.output_names,
                                        opset_version=opset, verbose=False)
        except Exception as error:  # the exporter raises many types
            raise ReminderError(f"ONNX export failed: {str(error).splitlines()[0]}") from None
    model = program.model_proto
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)
    onnx.checker.check_model(model, full_check=False)
    atomic_write(path, lambda tmp: onnx.save_model(model, str(tmp)))
    return path


class _HalfPrecision(torch.nn.Module):
    """float32 in, half inside, outputs cast back to float32 (labels keep their type)."""

    def __init__(self, module: ExportModule):
        super().__init__()
        self.inner = copy.deepcopy(module).half()  # the caller's module stays float32
        self.output_names = module.output_names

    def forward(self, images):
        out = self.inner(images.half())
        if isinstance(out, tuple):
            return out[0], out[1].float()
        return out.float()
