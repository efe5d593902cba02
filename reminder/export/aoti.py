"""AOTInductor: ``torch.export`` with dynamic shapes, compiled into a ``.pt2`` package.

The package holds native code for the device it was compiled on (this machine's CPU, or
a CUDA GPU when ``device="cuda"``); load it with ``torch._inductor.aoti_load_package``.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
import warnings
from pathlib import Path

import torch

from reminder.errors import ReminderError
from reminder.export.graph import ExportModule
from reminder.export.onnx import dynamic_dims


def export_aoti(module: ExportModule, path: str | Path, example: torch.Tensor, *,
                metadata: dict | None = None, device: str = "cpu") -> Path:
    """Compile ``module`` for ``device`` into ``path``. The caller's module is left as it
    was (a copy is moved and put in eval mode): later exports still get it on its device."""
    path = Path(path)
    module = copy.deepcopy(module).eval().to(device)
    example = example.to(device)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            program = torch.export.export(module, (example,), dynamic_shapes=dynamic_dims())
            fd, tmp = tempfile.mkstemp(prefix=".model.", suffix=".pt2", dir=path.parent)
            os.close(fd)
            configs = {"aot_inductor.metadata": {"reminder": json.dumps(metadata or {})}}
            torch._inductor.aoti_compile_and_package(program, package_path=tmp, inductor_configs=configs)
        except Exception as error:
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            detail = next((line for line in lines[1:] if line.startswith("- ")), "")  # a violated shape guard
            raise ReminderError(f"AOTInductor export failed: {lines[0] if lines else type(error).__name__}"
                                + (f" {detail[:300]}" if detail else "")) from None
    os.replace(tmp, path)
    return path
