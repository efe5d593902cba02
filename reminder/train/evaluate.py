"""Evaluation of a step's model: confusion matrix, per-class IoU, old / new / all."""

from __future__ import annotations

import torch
from torch import nn

from reminder.data.scenario import Scenario
from reminder.progress import progress as progress_bar
from reminder.train.metrics import ConfusionMatrix, continual_miou


@torch.no_grad()
def confusion_matrix(model: nn.Module, loader, num_classes: int, *, device: torch.device,
                     reduce=None, progress: bool = False) -> ConfusionMatrix:
    """Predictions (argmax) of ``model`` on ``loader`` against its labels."""
    model.eval()
    matrix = ConfusionMatrix(num_classes)
    for images, labels in progress_bar(loader, progress, desc="evaluate", leave=False, unit="batch"):
        logits = model(images.to(device))
        matrix.update(logits.argmax(dim=1).cpu(), labels)
    if reduce is not None:
        matrix.matrix = reduce(matrix.matrix.to(device)).cpu()
    return matrix


def step_metrics(matrix: ConfusionMatrix, scenario: Scenario, step: int,
                 class_names: tuple[str, ...]) -> dict:
    """old / new / all mIoU and per-class IoU (by class name) of the seen classes."""
    num_seen = scenario.num_seen(step)
    iou = matrix.iou()[:num_seen]
    names = [class_names[0]]
    names += [class_names[c] for c in scenario.order[: num_seen - 1]]
    summary = continual_miou(iou, num_old=scenario.classes_per_step()[0], num_seen=num_seen)
    counts = matrix.matrix.sum(dim=1)[:num_seen].double()  # labelled pixels of each class
    share = (counts / counts.sum().clamp(min=1)).tolist()
    return {**summary, "iou": {name: _number(v) for name, v in zip(names, iou.tolist())},
            "pixel_share": {name: round(v, 6) for name, v in zip(names, share)},
            "pixel_accuracy": matrix.pixel_accuracy()}


def _number(value: float) -> float | None:
    return None if value != value else round(value, 6)  # NaN -> null in JSON
