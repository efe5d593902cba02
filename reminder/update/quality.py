"""The quality report of an on-device update: the new classes' IoU on held-out frames,
the old classes' agreement with the parent (overall, and per class, so that a thin class
cannot hide behind road and background), and the peak memory it took."""

from __future__ import annotations

import math
from typing import Sequence

import torch

from reminder.contracts.quality import describe_weak, weak_classes
from reminder.update.frames import Frame, FrameDataset


def peak_memory_mb(device: torch.device) -> dict:
    peak = {}
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                peak["process_rss_mb"] = round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    if device.type == "cuda":
        peak["cuda_allocated_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return peak


MAX_OLD_LOSS = 0.2  # an old class whose kept share (or IoU) falls by more is named


@torch.no_grad()
def measure_quality(student, teacher, frames: Sequence[Frame], num_classes: int, new_ids: Sequence[int],
                    holdout: Sequence[Frame], names: list[str], confidence: float, device: torch.device,
                    max_old_loss: float = MAX_OLD_LOSS) -> dict:
    """New-class IoU on ``holdout``; old-class agreement with the parent on ``frames``: the
    share of pixels the parent labels as an old class with confidence >= ``confidence``
    (outside the new classes' labels) that keep their label; and per old class
    (:func:`old_class_losses`): its IoU before and after where the held-out frames label it,
    else the share of the parent's pixels of it that keep their label, at any confidence."""
    from reminder.data.transforms import eval_transform
    from reminder.models.segmenter import top_confidence
    from reminder.train.metrics import ConfusionMatrix

    transform = eval_transform(None)
    student.eval()
    matrix, before = ConfusionMatrix(num_classes), ConfusionMatrix(num_classes)
    for frame in holdout:
        image, labels = FrameDataset([frame], transform)[0]
        matrix.update(student(image[None].to(device)).argmax(1).cpu(), labels[None])
        parent_labels = teacher(image[None].to(device)).argmax(1).cpu()
        before.update(parent_labels, torch.where(labels < teacher.num_classes, labels, 255)[None])
    iou = matrix.iou()
    kept, parent_pixels = torch.zeros(num_classes), torch.zeros(num_classes)
    agree = compared = 0
    for frame in frames:
        image, labels = FrameDataset([frame], transform)[0]
        image = image[None].to(device)
        teacher_logits = teacher(image).float()
        top, parent = top_confidence(teacher_logits, getattr(teacher, "outputs", "softmax")), teacher_logits.argmax(1)
        child = student(image).argmax(1)
        labelled_new = torch.isin(labels[None].to(device), torch.as_tensor(list(new_ids), device=device))
        mask = (parent > 0) & (top >= confidence) & ~labelled_new
        compared += int(mask.sum())
        agree += int((mask & (child == parent)).sum())
        outside = ~labelled_new
        parent_pixels += torch.bincount(parent[outside].cpu(), minlength=num_classes)[:num_classes].float()
        kept += torch.bincount(parent[outside & (child == parent)].cpu(), minlength=num_classes)[:num_classes].float()
    new_iou = {names[i]: (None if math.isnan(float(iou[i])) else round(float(iou[i]), 4)) for i in new_ids}
    old = old_class_losses(names[:min(new_ids)], before.iou(), iou, kept, parent_pixels, max_old_loss)
    return {"new_iou": new_iou, "holdout_frames": len(holdout),
            "old_agreement": round(agree / compared, 4) if compared else None, "old_pixels_compared": compared,
            "agreement_confidence": confidence, "old_classes": old,
            "forgotten": [name for name, entry in old.items() if entry["forgotten"]], "max_old_loss": max_old_loss}


def old_class_losses(names: Sequence[str], iou_before, iou_after, kept, parent_pixels, max_old_loss: float) -> dict:
    """Per old foreground class: ``iou_before``/``iou_after`` where the held-out frames
    label it (forgotten: a drop of more than ``max_old_loss``), else ``kept``, the share of
    the pixels the parent labels as it that the child labels the same (forgotten: under
    ``1 - max_old_loss``); a class neither labelled nor predicted by the parent is not judged."""
    out = {}
    for c, name in enumerate(names):
        if c == 0:
            continue
        before, after = float(iou_before[c]), float(iou_after[c])
        if not math.isnan(before) and not math.isnan(after):
            out[name] = {"iou_before": round(before, 4), "iou_after": round(after, 4),
                         "forgotten": before - after > max_old_loss}
        elif parent_pixels[c] > 0:
            share = float(kept[c] / parent_pixels[c])
            out[name] = {"kept": round(share, 4), "parent_pixels": int(parent_pixels[c]),
                         "forgotten": share < 1 - max_old_loss}
    return out


def format_report(report: dict) -> str:
    """The on-screen quality report."""
    lines = []
    for name, value in report["new_iou"].items():
        shown = "not measured (no held-out frame)" if value is None or not report["holdout_frames"] \
            else f"{100 * value:.1f}% on {report['holdout_frames']} held-out frames"
        lines.append(f"new class {name}: IoU {shown}")
    if report["holdout_frames"]:
        lines += describe_weak(weak_classes(report["new_iou"], background=""),
                               where=f"{report['holdout_frames']} held-out frames")
    agreement = report["old_agreement"]
    lines.append("old classes: " + ("no confident old-class pixel to compare" if agreement is None else
                                    f"{100 * agreement:.1f}% of {report['old_pixels_compared']} pixels the parent "
                                    f"labels with confidence >= {report['agreement_confidence']} keep their label"))
    for name in report.get("forgotten", []):
        entry = report["old_classes"][name]
        what = (f"IoU {100 * entry['iou_before']:.1f} -> {100 * entry['iou_after']:.1f} on the held-out frames"
                if "iou_before" in entry else
                f"{100 * entry['kept']:.1f}% of the {entry['parent_pixels']} pixels the parent labels {name} keep "
                f"that label")
        lines.append(f"WARNING: old class {name!r} is forgotten ({what}; more than {100 * report['max_old_loss']:.0f}% "
                     f"lost): fewer `iterations`, a lower `lr`, or `freeze_backbone` keep it")
    memory = report["peak_memory"]
    lines.append(f"{report['iterations']} iterations ({report['stopped_by']}) in {report['train_seconds']} s; "
                 f"peak memory " + ", ".join(f"{k} {v}" for k, v in memory.items()))
    return "\n".join(lines)
