"""The last half of an on-device update: the child bundle's manifest (lineage, classes,
report) and its export to the parent's formats through the exporter's ``write_bundle``."""

from __future__ import annotations

import copy
import re
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

from reminder.bundle import manifest_sha256
from reminder.contracts import ClassTable
from reminder.contracts.manifest import Manifest, Parent
from reminder.contracts.quality import weak_classes
from reminder.update.frames import Frame, NewClass


def child_manifest(parent: Manifest, folder: Path, table: Sequence[tuple[str, tuple[int, int, int]]],
                   classes: Sequence[NewClass], report: dict, version: str | None) -> Manifest:
    """The new bundle's manifest: the parent's input and outputs, the classes added, the
    lineage pointing at the parent, and the update's report; artifacts are filled in by the
    export."""
    added = [re.sub(r"[^A-Za-z0-9._-]", "_", c.name) for c in classes]  # names may hold spaces
    model = parent.model
    model["classes_per_step"] = list(model.get("classes_per_step", [])) + [len(classes)]
    model["method"] = f"{report['method']}, on device"
    return parent.derive(
        version=version or f"{parent.version}+{'+'.join(added)}"[:128],
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        parent=Parent(parent.version, manifest_sha256(folder)),
        classes=ClassTable(tuple(n for n, _ in table), tuple(c for _, c in table), where="the updated bundle"),
        model=model, tools=parent.tools,
        metrics={"new_iou": report["new_iou"], "old_agreement": report["old_agreement"]},
        quality={"per_class_iou": report["new_iou"], "new_classes": [c.name for c in classes],
                 "weak": weak_classes(report["new_iou"], background=""),
                 "measured_on": "the update's held-out frames (new classes only)",
                 "old_classes": report.get("old_classes", {}), "forgotten": report.get("forgotten", [])},
        update=report)


def export_child(student, bank: dict, manifest: Manifest, parent: Manifest, *, out: Path, frames: Sequence[Frame],
                 parent_folder: Path | None = None, parent_model=None,
                 formats: Sequence[str] | None, protect: Sequence[Path] = (), force: bool = False,
                 train_frames: Sequence[Frame] = (), holdout: Sequence[Frame] = (),
                 int8_min_agreement: float = 0.99,
                 log: Callable[[str], None]) -> Path:
    """Weights, prototypes and the parent's formats (or ``formats``) into ``out``: staged,
    parity-checked on the frames, and renamed into place by ``write_bundle``. An INT8
    artifact is calibrated on ``train_frames`` and gated on every frame (label agreement
    with FP32 only: the frames' masks mark the new classes alone). An INT8 child below its
    gate, even after the accuracy-aware fallback, does not cost the training: the child is
    written without it, and its manifest records the refusal (``skipped``, ``int8_refused``)."""
    from reminder.export.exporter import write_bundle
    from reminder.export.formats import parse_formats
    from reminder.export.graph import ExportModule
    from reminder.train.checkpoint import save_tensors
    from reminder.train.prototypes import save_prototypes

    student = student.cpu().eval()
    from reminder.export.quantize import DEFAULT_CALIBRATION_IMAGES, Int8Options

    names = formats or parent.formats + list(parent.skipped)
    int8 = None
    if "onnx-int8" in names:
        calibration = [f.image for f in (train_frames or frames)][:DEFAULT_CALIBRATION_IMAGES]
        gate, source = (holdout, "held-out frames") if holdout else \
            (frames, "of the update's frames (none held out: the gate saw frames it trained on)")
        int8 = Int8Options(calibration, {"source": "the update's training frames", "images": len(calibration)},
                           [(f.image, None) for f in gate[:32]], min_agreement=int8_min_agreement,
                           gate_source=source)
    from reminder.export.quantize import Int8GateError, describe_gate

    with tempfile.TemporaryDirectory(prefix="reminder-update-") as tmp:
        tmp = Path(tmp)
        save_tensors(tmp / "checkpoint.safetensors", student.state_dict())
        save_prototypes(tmp / "prototypes.safetensors", bank)
        module = ExportModule(student, output=parent.outputs.kind)
        onnx_base = None
        if parent_model is not None and parent_folder is not None and "onnx" in parent.formats:
            onnx_base = (parent_folder / parent.artifact("onnx").path,
                         ExportModule(parent_model.cpu().eval(), output=parent.outputs.kind))
        files = {"checkpoint.safetensors": tmp / "checkpoint.safetensors",
                 "prototypes.safetensors": tmp / "prototypes.safetensors"}
        attempt = copy.deepcopy(manifest)
        try:
            return write_bundle(module, attempt, out=out, formats=parse_formats(",".join(dict.fromkeys(names))),
                                parity_set=[f.image for f in frames[:8]], files=files,
                                int8=int8, protect=protect, force=force, onnx_base=onnx_base, log=log)
        except Int8GateError as refused:  # the training is kept: the child goes out in FP32
            names = [n for n in names if n != "onnx-int8"] or ["onnx"]
            manifest.refuse_int8(f"below its quality gate: {describe_gate(refused.result)}", refused.result)
            log(f"the INT8 child is below its quality gate ({describe_gate(refused.result)}): writing the FP32 "
                f"child ({', '.join(names)}); its manifest records the refusal")
            return write_bundle(module, manifest, out=out, formats=parse_formats(",".join(dict.fromkeys(names))),
                                parity_set=[f.image for f in frames[:8]], files=files,
                                protect=protect, force=force, onnx_base=onnx_base, log=log)
