"""The export formats: the artifact table that the CLI, the docs, the tests and the runtime read."""

from __future__ import annotations

from reminder.contracts.artifacts import ARTIFACTS, ArtifactKind
from reminder.errors import ReminderError


# the one artifact table (reminder/contracts/artifacts.py): the runtime chooses through it too
ExportFormat = ArtifactKind
FORMATS: dict[str, ArtifactKind] = ARTIFACTS


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
