"""The quality report of an on-device update: the new classes' IoU on held-out frames,
the old classes' agreement with the parent, and the peak memory it took."""

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


@torch.no_grad()
def measure_quality(student, teacher, frames: Sequence[Frame], num_classes: int, new_ids: Sequence[int],
                    holdout: Sequence[Frame], names: list[str], confidence: float, device: torch.device) -> dict:
    """New-class IoU on ``holdout``; old-class agreement with the parent on ``frames``: the
    share of pixels the parent labels as an old class with confidence >= ``confidence``
    (outside the new classes' labels) that keep their label."""
    from reminder.data.transforms import eval_transform
    from reminder.train.metrics import ConfusionMatrix

    transform = eval_transform(None)
    student.eval()
    matrix = ConfusionMatrix(num_classes)
    for frame in holdout:
        image, labels = FrameDataset([frame], transform)[0]
        matrix.update(student(image[None].to(device)).argmax(1).cpu(), labels[None])
    iou = matrix.iou()
    agree = compared = 0
    for frame in frames:
        image, labels = FrameDataset([frame], transform)[0]
        image = image[None].to(device)
        teacher_logits = teacher(image).float()
        probabilities = teacher_logits.softmax(1)
        top, parent = probabilities.max(1)
        child = student(image).argmax(1)
        labelled_new = torch.isin(labels[None].to(device), torch.as_tensor(list(new_ids), device=device))
        mask = (parent > 0) & (top >= confidence) & ~labelled_new
        compared += int(mask.sum())
        agree += int((mask & (child == parent)).sum())
    new_iou = {names[i]: (None if math.isnan(float(iou[i])) else round(float(iou[i]), 4)) for i in new_ids}
    return {"new_iou": new_iou, "holdout_frames": len(holdout),
            "old_agreement": round(agree / compared, 4) if compared else None, "old_pixels_compared": compared,
            "agreement_confidence": confidence}


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
    memory = report["peak_memory"]
    lines.append(f"{report['iterations']} iterations ({report['stopped_by']}) in {report['train_seconds']} s; "
                 f"peak memory " + ", ".join(f"{k} {v}" for k, v in memory.items()))
    return "\n".join(lines)
