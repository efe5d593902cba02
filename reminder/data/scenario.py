"""Continual scenarios: which classes each step learns, which images it sees, its labels.

A setting ``"N-M"`` learns N classes at step 0 and M new classes per step until every
class is learnt; ``"N-Ms"`` (PLOP's spelling, e.g. ``15-5s``) learns N classes, then M
single-class steps. Background (0) is part of step 0. Classes are learnt in ``order``;
the model's output channel ``i`` is the class at position ``i`` of ``(0, *order)``, so
labels are remapped to that position (the identity with the natural order).

Label rules (docs/design.md):

- train at step t: classes of step t keep their label, every other class becomes 0,
  255 stays 255;
- test at step t: seen classes keep their label; unseen classes become 0 under the
  REMINDER/PLOP protocol (the paper's numbers) or 255 under the MiB protocol.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from reminder.data.classes import IGNORE_INDEX
from reminder.errors import ReminderError

MODES = ("overlap", "disjoint")
TEST_PROTOCOLS = ("reminder", "mib")
NAMED_SETTINGS = {
    "voc": ("19-1", "15-5", "15-1", "10-1", "15-5s"),
    "ade": ("100-50", "50-50", "100-10", "100-5"),
}


def parse_setting(setting: str, num_foreground: int) -> list[int]:
    """Number of new classes at each step for a setting over ``num_foreground`` classes.

    ``"offline"`` (or ``"joint"``) is one step with every class.
    """
    if setting in ("offline", "joint"):
        return [num_foreground]
    match = re.fullmatch(r"(\d+)-(\d+)(s?)", setting.strip())
    if not match:
        raise ReminderError(f"setting {setting!r} is not of the form N-M or N-Ms (e.g. 15-1, 15-5s)")
    initial, increment, singles = int(match[1]), int(match[2]), bool(match[3])
    if not 0 < initial < num_foreground:
        raise ReminderError(
            f"setting {setting}: {initial} initial classes must be between 1 and {num_foreground - 1}")
    if increment < 1:
        raise ReminderError(f"setting {setting}: steps must add at least one class")
    remaining = num_foreground - initial
    if singles:
        if increment != remaining:
            raise ReminderError(
                f"setting {setting}: {initial} + {increment} single-class steps is "
                f"{initial + increment} classes, but the dataset has {num_foreground}")
        return [initial] + [1] * increment
    if increment > remaining:
        raise ReminderError(
            f"setting {setting}: {initial} initial classes and a step of {increment} need "
            f"{initial + increment} classes, but the dataset has {num_foreground}")
    if remaining % increment:
        raise ReminderError(
            f"setting {setting}: after {initial} initial classes, {remaining} classes remain, "
            f"which steps of {increment} cannot split evenly (dataset has {num_foreground} classes)")
    return [initial] + [increment] * (remaining // increment)


@dataclass(frozen=True)
class Scenario:
    """A continual scenario over one dataset; ``steps[t]`` lists step t's class ids."""

    setting: str
    num_classes: int  # dataset classes, background included (VOC 21, ADE 151)
    steps: tuple[tuple[int, ...], ...]
    mode: str = "overlap"
    test_protocol: str = "reminder"

    @property
    def order(self) -> tuple[int, ...]:
        return tuple(c for step in self.steps for c in step)

    @property
    def num_steps(self) -> int:
        return len(self.steps)

    def classes_per_step(self) -> list[int]:
        """Output channels each step adds to the model (step 0 includes background)."""
        return [len(self.steps[0]) + 1] + [len(step) for step in self.steps[1:]]

    def num_seen(self, step: int) -> int:
        """Model channels after ``step``, background included."""
        return sum(self.classes_per_step()[: step + 1])

    def seen_classes(self, step: int) -> tuple[int, ...]:
        """Dataset class ids learnt up to and including ``step`` (background excluded)."""
        self._check_step(step)
        return tuple(c for s in self.steps[: step + 1] for c in s)

    def model_index(self) -> np.ndarray:
        """``(num_classes,)``: dataset class id -> model channel."""
        mapping = np.zeros(self.num_classes, np.int64)
        for position, class_id in enumerate(self.order, start=1):
            mapping[class_id] = position
        return mapping

    def _check_step(self, step: int) -> None:
        if not 0 <= step < self.num_steps:
            raise ReminderError(f"step {step} is outside 0..{self.num_steps - 1} of setting {self.setting}")

    def _lut(self, keep: Iterable[int], other: int) -> np.ndarray:
        lut = np.full(256, other, np.uint8)
        lut[IGNORE_INDEX] = IGNORE_INDEX
        lut[0] = 0
        index = self.model_index()
        for class_id in keep:
            lut[class_id] = index[class_id]
        return lut

    def train_lut(self, step: int) -> np.ndarray:
        """``(256,) uint8`` dataset label -> step-t training label (model channel)."""
        self._check_step(step)
        return self._lut(self.steps[step], other=0)

    def test_lut(self, step: int, protocol: str | None = None) -> np.ndarray:
        """``(256,) uint8`` dataset label -> step-t test label (see the module docstring)."""
        protocol = protocol or self.test_protocol
        if protocol not in TEST_PROTOCOLS:
            raise ReminderError(f"unknown test protocol {protocol!r}; expected {' or '.join(TEST_PROTOCOLS)}")
        return self._lut(self.seen_classes(step), other=0 if protocol == "reminder" else IGNORE_INDEX)

    def train_ids(self, step: int, index: Mapping[str, Sequence[int]]) -> list[str]:
        """Training images of ``step``: those with a class of the step (and, in disjoint
        mode, no class of a future step)."""
        current = set(self.steps[step])
        allowed = set(self.seen_classes(step)) | {0, IGNORE_INDEX}
        ids = []
        for image_id, present in index.items():
            labels = set(present) - {0, IGNORE_INDEX}
            if not labels & current:
                continue
            if self.mode == "disjoint" and not labels <= allowed:
                continue
            ids.append(image_id)
        return sorted(ids)

    def test_ids(self, step: int, index: Mapping[str, Sequence[int]]) -> list[str]:
        """Test images of ``step``: every image with a seen class."""
        seen = set(self.seen_classes(step))
        return sorted(i for i, present in index.items() if seen & (set(present) - {0, IGNORE_INDEX}))


def make_scenario(setting: str, *, num_classes: int, order: Sequence[int] | None = None,
                  mode: str = "overlap", test_protocol: str = "reminder") -> Scenario:
    """Build a scenario; ``order`` is a permutation of 1..num_classes-1 (natural if None)."""
    if mode not in MODES:
        raise ReminderError(f"unknown mode {mode!r}; expected overlap or disjoint")
    if test_protocol not in TEST_PROTOCOLS:
        raise ReminderError(f"unknown test protocol {test_protocol!r}; expected reminder or mib")
    foreground = list(range(1, num_classes))
    order = list(order) if order is not None else foreground
    check_order(order, num_classes)
    sizes = parse_setting(setting, len(foreground))
    steps, start = [], 0
    for size in sizes:
        steps.append(tuple(order[start:start + size]))
        start += size
    return Scenario(setting, num_classes, tuple(steps), mode, test_protocol)


def check_order(order: Sequence[int], num_classes: int) -> None:
    seen: set[int] = set()
    duplicates = sorted({c for c in order if c in seen or seen.add(c)})
    if duplicates:
        raise ReminderError(f"class order repeats class {duplicates[0]}")
    outside = sorted(c for c in order if not 1 <= c < num_classes)
    if outside:
        raise ReminderError(f"class order has class {outside[0]}, outside 1..{num_classes - 1}")
    missing = sorted(set(range(1, num_classes)) - set(order))
    if missing:
        raise ReminderError(f"class order is missing class {missing[0]} ({len(missing)} missing in all)")
