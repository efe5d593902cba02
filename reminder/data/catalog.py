"""The supported datasets in one table: class names, how to list files, label protocol.

SynthVOC is written in the VOC layout and read with the VOC reader.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from reminder.data.ade import ade_samples
from reminder.data.classes import ADE_CLASSES, IGNORE_INDEX, VOC_CLASSES
from reminder.data.samples import Sample
from reminder.data.voc import voc_samples
from reminder.errors import ReminderError


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    class_names: tuple[str, ...]
    list_samples: Callable[[str | Path, str], list[Sample]]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


DATASETS: dict[str, DatasetSpec] = {
    "voc": DatasetSpec("voc", VOC_CLASSES, voc_samples),
    "synthvoc": DatasetSpec("synthvoc", VOC_CLASSES, voc_samples),
    "ade": DatasetSpec("ade", ADE_CLASSES, ade_samples),
}


def get_dataset(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise ReminderError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}") from None


def raw_label_lut(name: str, *, other_as_background: bool = True) -> np.ndarray:
    """``(256,) uint8`` applied to a dataset's masks before the scenario's labels.

    ADE20k's class 0 ("other") is background under the PLOP/REMINDER protocol (kept, and
    counted in mIoU) and ignored (255) under MiB's; other datasets keep their labels.
    """
    lut = np.arange(256, dtype=np.uint8)
    if name == "ade" and not other_as_background:
        lut[0] = IGNORE_INDEX
    return lut
