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


class RandomRescale(v2.Transform):
    """Rescale the whole image (and mask) by a factor drawn from ``scale``, keeping its aspect."""

    def __init__(self, scale: tuple[float, float]):
        super().__init__()
        self.scale = scale

    def make_params(self, flat_inputs: list) -> dict:
        from torchvision.transforms.v2._utils import query_size

        height, width = query_size(flat_inputs)
        factor = float(torch.empty(()).uniform_(*self.scale))
        return {"size": [max(1, round(height * factor)), max(1, round(width * factor))]}

    def transform(self, inpt, params: dict):
        if isinstance(inpt, tv_tensors.Mask):  # nearest with the image's pixel centres: a 1 px label stays on its line
            return v2.functional.resize(inpt, params["size"], interpolation=v2.InterpolationMode.NEAREST_EXACT)
        return v2.functional.resize(inpt, params["size"], antialias=True)


CROP_MODES = ("resized", "native")


def train_transform(crop_size: int, *, scale: tuple[float, float] = (0.5, 2.0), mode: str = "resized",
                    mean=IMAGENET_MEAN, std=IMAGENET_STD) -> v2.Compose:
    """A random crop, flip, normalise.

    ``mode="resized"``: a random resized crop, ``scale`` its share of the image's area (0.5-2.0,
    as the reference code), resized to ``crop_size`` (what the paper trains with).
    ``mode="native"``: the image rescaled by a factor drawn from ``scale`` (1.0-1.5 keeps every
    object at least its native size), then a ``crop_size`` crop, padded with ignored pixels
    where the image is smaller: thin and small objects keep their pixels.
    """
    if mode == "native":
        crop = [RandomRescale(scale), v2.RandomCrop(crop_size, pad_if_needed=True,
                                                    fill={tv_tensors.Image: 0, tv_tensors.Mask: 255})]
    elif mode == "resized":
        crop = [v2.RandomResizedCrop(crop_size, scale=scale, antialias=True)]
    else:
        raise ValueError(f"crop mode must be one of {CROP_MODES}, got {mode!r}")
    return v2.Compose([
        *crop,
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
