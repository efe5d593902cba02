"""Joint image/mask transforms on torchvision.transforms.v2.

Images are ``tv_tensors.Image`` (uint8, CHW) and masks ``tv_tensors.Mask`` (HW); v2
resamples masks with nearest-neighbour only, so labels are never blended.
"""

from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_TO_FLOAT = {tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.int64, "others": None}


def train_transform(crop_size: int, *, scale: tuple[float, float] = (0.5, 2.0),
                    mean=IMAGENET_MEAN, std=IMAGENET_STD) -> v2.Compose:
    """Random resized crop (area scale 0.5-2.0, as the reference code), flip, normalise."""
    return v2.Compose([
        v2.RandomResizedCrop(crop_size, scale=scale, antialias=True),
        v2.RandomHorizontalFlip(),
        v2.ToDtype(_TO_FLOAT, scale=True),
        v2.Normalize(mean, std),
    ])


def eval_transform(size: int | None = 512, *, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> v2.Compose:
    """``Resize(size) + CenterCrop(size)`` as the reference evaluation; ``None`` keeps the
    full image (its numbers differ by several points)."""
    steps: list = []
    if size is not None:
        steps += [v2.Resize(size, antialias=True), v2.CenterCrop(size)]
    steps += [v2.ToDtype(_TO_FLOAT, scale=True), v2.Normalize(mean, std)]
    return v2.Compose(steps)
