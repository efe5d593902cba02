"""Class balancing for rare classes: per-class weights of the cross-entropy terms, from the
pixel counts of a step's training labels.

``sqrt`` weights each class by the inverse square root of its pixel share, normalised so
that the pixel-weighted mean weight is 1 (the loss keeps its scale, and with it the
learning rate's meaning). A class of 0.2% of the pixels among a road of 55% gets about 13
times background's weight; plain inverse frequency (``inverse``) gives rare classes their
full share and is noisier. Classes without a pixel in the step's labels (the old classes
of an increment, which its labels mark background) keep weight 1. docs/own-data.md gives
the measured effect.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from reminder.errors import ReminderError

CLASS_WEIGHTS = ("none", "sqrt", "inverse")
MAX_WEIGHT = 50.0  # a class of a handful of pixels must not dominate the loss


def label_pixel_counts(dataset, num_classes: int) -> np.ndarray:
    """Pixels per training label (``num_classes`` entries, 255 ignored) over ``dataset``'s
    masks, read without their images and with the dataset's label table applied."""
    from reminder.data.samples import read_mask

    counts = np.zeros(num_classes, np.int64)
    for sample in dataset.samples:
        mask = read_mask(sample.mask) if dataset.mask_reader is None else dataset.mask_reader(sample.mask)
        if dataset.label_lut is not None:
            mask = dataset.label_lut[mask]
        counts += np.bincount(mask.ravel(), minlength=256)[:num_classes]
    return counts


def class_weights(counts: Sequence[int], mode: str) -> torch.Tensor | None:
    """Per-class weights from pixel ``counts`` (None for ``mode="none"``)."""
    if mode not in CLASS_WEIGHTS:
        raise ReminderError(f"class weights must be one of {', '.join(CLASS_WEIGHTS)}, got {mode!r}")
    if mode == "none":
        return None
    counts = np.asarray(counts, np.float64)
    present = counts > 0
    if not present.any():
        raise ReminderError("class weights: the step's labels hold no labelled pixel")
    share = counts / counts.sum()
    power = 0.5 if mode == "sqrt" else 1.0
    weights = np.ones_like(share)
    weights[present] = share[present] ** -power
    weights[present] /= (share[present] * weights[present]).sum()
    return torch.tensor(np.minimum(weights, MAX_WEIGHT), dtype=torch.float32)


def step_class_weights(dataset, num_classes: int, mode: str, device) -> torch.Tensor | None:
    """The weights of a step's CE terms from its training ``dataset`` (None when ``mode`` is none)."""
    if mode == "none":
        return None
    return class_weights(label_pixel_counts(dataset, num_classes), mode).to(device)
