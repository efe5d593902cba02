"""Confusion-matrix IoU and the continual metrics of the paper (old / new / all / avg).

- ``old``: mean IoU over the classes of step 0, background included (rigidity);
- ``new``: mean IoU over the classes learnt after step 0 (plasticity);
- ``all``: mean IoU over the seen classes;
- ``avg``: the mean of ``all`` over the steps so far (PLOP's definition).

Means skip classes whose IoU is undefined (absent from both prediction and target).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from reminder.data.classes import IGNORE_INDEX


class ConfusionMatrix:
    """``matrix[target, prediction]`` pixel counts over ``num_classes`` classes."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> "ConfusionMatrix":
        """Add ``pred`` and ``target`` (same shape, int class ids); targets 255 are skipped."""
        if pred.shape != target.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} differs from target {tuple(target.shape)}")
        pred = pred.reshape(-1).to("cpu", torch.int64)
        target = target.reshape(-1).to("cpu", torch.int64)
        keep = target != IGNORE_INDEX
        pred, target = pred[keep], target[keep]
        if target.numel() and (int(target.max()) >= self.num_classes or int(target.min()) < 0):
            raise ValueError(f"target has class {int(target.max())}, outside 0..{self.num_classes - 1}")
        if pred.numel() and (int(pred.max()) >= self.num_classes or int(pred.min()) < 0):
            raise ValueError(f"prediction has class {int(pred.max())}, outside 0..{self.num_classes - 1}")
        counts = torch.bincount(target * self.num_classes + pred, minlength=self.num_classes ** 2)
        self.matrix += counts.reshape(self.num_classes, self.num_classes)
        return self

    def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        self.matrix += other.matrix
        return self

    def iou(self) -> torch.Tensor:
        """``(K,)`` float64 IoU per class; NaN where the class is in neither pred nor target."""
        matrix = self.matrix.double()
        true_positive = matrix.diagonal()
        union = matrix.sum(0) + matrix.sum(1) - true_positive
        return torch.where(union > 0, true_positive / union.clamp(min=1), torch.full_like(union, float("nan")))

    def pixel_accuracy(self) -> float:
        total = self.matrix.sum().item()
        return float(self.matrix.diagonal().sum().item() / total) if total else float("nan")


def _nanmean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def continual_miou(iou: Sequence[float] | torch.Tensor, *, num_old: int, num_seen: int) -> dict[str, float]:
    """``old`` / ``new`` / ``all`` mIoU from per-class IoU over model channels.

    ``num_old``: channels of step 0 (background included); ``num_seen``: channels seen so far.
    At step 0 ``new`` is NaN (no class learnt after step 0 yet).
    """
    iou = np.asarray(iou, dtype=np.float64)[:num_seen]
    return {"old": _nanmean(iou[:num_old]), "new": _nanmean(iou[num_old:]), "all": _nanmean(iou)}


def average_over_steps(all_per_step: Sequence[float]) -> float:
    """PLOP's ``avg``: the mean of each step's ``all`` mIoU."""
    return _nanmean(np.asarray(all_per_step, dtype=np.float64))
