"""TorchScript export by tracing (deprecated upstream, kept for stacks that need it).

The trace uses batch 2, and shape arithmetic is recorded, so the file runs at other
batch sizes, heights and widths (a test checks it). Metadata goes into the archive's
``extra/reminder.json``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from reminder.export.graph import ExportModule
from reminder.io import atomic_write


def export_torchscript(module: ExportModule, path: str | Path, example: torch.Tensor, *,
                       metadata: dict | None = None) -> Path:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module.eval(), example, check_trace=False)
    extra = {"reminder.json": json.dumps(metadata or {})}
    return atomic_write(Path(path), lambda tmp: torch.jit.save(traced, str(tmp), _extra_files=extra))
