"""A torch ``Dataset`` over image/mask files with a step's label table applied."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torchvision import tv_tensors

from reminder.data.samples import Sample, check_mask_values, read_image, read_mask
from reminder.errors import ReminderError


class SegmentationDataset(torch.utils.data.Dataset):
    """Items are ``(image: (3, H, W) float32, labels: (H, W) int64)``.

    ``label_lut`` maps dataset labels to training/test labels before ``transform``
    (e.g. ``Scenario.train_lut(step)`` composed with the dataset's raw label table);
    mask values outside ``0..num_classes-1`` and 255 raise an error naming the file.
    ``mask_reader`` decodes a mask path to class ids in place of reading the PNG's values
    (a user dataset's colour masks, :class:`reminder.data.custom.MaskReader`).
    """

    def __init__(self, samples: Sequence[Sample], *, num_classes: int,
                 label_lut: np.ndarray | None = None, transform: Callable | None = None,
                 mask_reader: Callable | None = None):
        self.samples = list(samples)
        self.mask_reader = mask_reader  # a dataset's own decoder (colour masks): path -> ids
        self.num_classes = num_classes
        self.label_lut = label_lut
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample = self.samples[item]
        image = read_image(sample.image)
        mask = read_mask(sample.mask) if self.mask_reader is None else self.mask_reader(sample.mask)
        if image.shape[:2] != mask.shape:
            raise ReminderError(
                f"mask {sample.mask} is {mask.shape[1]}x{mask.shape[0]} but image {sample.image} "
                f"is {image.shape[1]}x{image.shape[0]}")
        check_mask_values(mask, self.num_classes, sample.mask)
        if self.label_lut is not None:
            mask = self.label_lut[mask]
        image_t = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1))
        mask_t = tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(mask)))
        if self.transform is not None:
            image_t, mask_t = self.transform(image_t, mask_t)
        return image_t.as_subclass(torch.Tensor), mask_t.as_subclass(torch.Tensor).long()


def select(samples: Sequence[Sample], ids: Sequence[str]) -> list[Sample]:
    """The samples whose id is in ``ids``, in the order of ``ids``."""
    by_id = {s.id: s for s in samples}
    return [by_id[i] for i in ids]
