"""Class prototypes: the mean pre-classifier feature of each class, kept with checkpoints.

After step t the prototypes of step t's classes (background too at step 0) are computed
over the step's training data with the final model and stored in
``RUN/step<t>/prototypes.safetensors`` together with those of earlier steps. They are
frozen afterwards and give CSW-KD its class similarities. The mean is over all the step's
pixels of the class (the reference code averages per-batch means instead).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from reminder.progress import progress as progress_bar
from reminder.train.checkpoint import load_tensors, save_tensors
from reminder.train.losses import class_feature_sums


@torch.no_grad()
def compute_prototypes(model, loader, classes: Sequence[int], *, device: torch.device,
                       reduce=None, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sums / counts, counts)`` of ``classes`` over ``loader``; ``(len(classes), C)``."""
    model.eval()
    sums = counts = None
    for images, labels in progress_bar(loader, progress, desc="prototypes", leave=False, unit="batch"):
        images, labels = images.to(device), labels.to(device)
        features = model.forward_features(images).features.float()
        batch_sums, batch_counts = class_feature_sums(features, labels, list(classes))
        sums = batch_sums if sums is None else sums + batch_sums
        counts = batch_counts if counts is None else counts + batch_counts
    if reduce is not None:
        sums, counts = reduce(sums), reduce(counts)
    return sums / counts.clamp(min=1)[:, None], counts


def merge_prototypes(previous: dict | None, classes: Sequence[int], prototypes: torch.Tensor,
                     counts: torch.Tensor, num_classes: int) -> dict[str, torch.Tensor]:
    """All prototypes so far, ``{"prototypes": (K, C), "counts": (K,)}``, rows by channel."""
    channels = prototypes.shape[1]
    table = torch.zeros(num_classes, channels)
    pixel_counts = torch.zeros(num_classes)
    if previous is not None:
        old = previous["prototypes"]
        table[: old.shape[0]] = old
        pixel_counts[: old.shape[0]] = previous["counts"]
    index = torch.as_tensor(list(classes))
    table[index] = prototypes.cpu()
    pixel_counts[index] = counts.cpu()
    return {"prototypes": table, "counts": pixel_counts}


def save_prototypes(path: Path, bank: dict[str, torch.Tensor]) -> Path:
    return save_tensors(path, bank)


def load_prototypes(path: Path) -> dict[str, torch.Tensor]:
    return load_tensors(path)
