"""A dataset on disk plus a setting: the per-step image lists and datasets of a scenario."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from reminder.data.catalog import DatasetSpec, get_dataset, raw_label_lut
from reminder.data.index import ClassIndex, build_class_index
from reminder.data.samples import Sample, name_bytes
from reminder.data.scenario import Scenario, make_scenario


@dataclass
class ScenarioData:
    spec: DatasetSpec
    scenario: Scenario
    train_samples: list[Sample]
    test_samples: list[Sample]
    train_index: ClassIndex
    test_index: ClassIndex
    other_as_background: bool = True

    def train_ids(self, step: int) -> list[str]:
        return self.scenario.train_ids(step, self.train_index.classes)

    def test_ids(self, step: int) -> list[str]:
        return self.scenario.test_ids(step, self.test_index.classes)

    def step_test_samples(self, step: int) -> list[Sample]:
        by_id = {s.id: s for s in self.test_samples}
        return [by_id[i] for i in self.test_ids(step)]

    def as_json(self) -> dict:
        """The ``reminder data split --json`` object (docs/design.md)."""
        steps = [{"step": t, "classes": list(classes), "train": self.train_ids(t), "test": self.test_ids(t)}
                 for t, classes in enumerate(self.scenario.steps)]
        return {"setting": self.scenario.setting, "mode": self.scenario.mode, "steps": steps}

    def train_dataset(self, step: int, transform=None, ids: Sequence[str] | None = None):
        """Step ``step``'s training images with its training labels (model channels)."""
        lut = self.scenario.train_lut(step)
        return self._dataset(self.train_samples, self.train_ids(step) if ids is None else ids, lut, transform)

    def test_dataset(self, step: int, transform=None, protocol: str | None = None):
        lut = self.scenario.test_lut(step, protocol)
        return self._dataset(self.test_samples, self.test_ids(step), lut, transform)

    def _dataset(self, samples, ids, lut, transform):
        from reminder.data.loading import SegmentationDataset, select

        raw = raw_label_lut(self.spec.name, other_as_background=self.other_as_background)
        return SegmentationDataset(select(samples, ids), num_classes=self.spec.num_classes,
                                   label_lut=lut[raw], transform=transform)


def carve_validation(samples: list[Sample], fraction: float) -> tuple[list[Sample], list[Sample]]:
    """(training, validation): about ``fraction`` of the training images, chosen by a
    stable hash of their ids (the same images on every machine, seed and step)."""
    import hashlib

    def held_out(sample: Sample) -> bool:
        return int(hashlib.sha256(name_bytes(sample.id)).hexdigest()[:8], 16) / 0xFFFFFFFF < fraction

    return [s for s in samples if not held_out(s)], [s for s in samples if held_out(s)]


def load_scenario(dataset: str, root: str | Path, setting: str, *, mode: str = "overlap",
                  order: Sequence[int] | None = None, test_protocol: str = "reminder",
                  other_as_background: bool = True, cache_dir: str | Path | None = None,
                  validation: float = 0.0, progress: bool = False) -> ScenarioData:
    """List the dataset's train/val files, index their classes (cached) and build the scenario.

    ``validation > 0`` carves that share of the training images out
    (:func:`carve_validation`) and uses them in place of the test set: for choosing
    options without ever looking at the test numbers."""
    spec = get_dataset(dataset)
    scenario = make_scenario(setting, num_classes=spec.num_classes, order=order, mode=mode,
                             test_protocol=test_protocol)
    train = spec.list_samples(root, "train")
    test = spec.list_samples(root, "val")
    train_index = build_class_index(train, num_classes=spec.num_classes, cache_dir=cache_dir, progress=progress)
    if validation > 0:
        train, test = carve_validation(train, validation)
        test_index = ClassIndex({s.id: train_index.classes[s.id] for s in test})
        train_index = ClassIndex({s.id: train_index.classes[s.id] for s in train})
    else:
        test_index = build_class_index(test, num_classes=spec.num_classes, cache_dir=cache_dir, progress=progress)
    return ScenarioData(spec, scenario, train, test, train_index, test_index, other_as_background)


def format_split_table(data: ScenarioData) -> str:
    """A human-readable table of a scenario: classes and image counts per step."""
    names = data.spec.class_names
    lines = [f"{data.spec.name} {data.scenario.setting} ({data.scenario.mode}): "
             f"{data.scenario.num_steps} steps, {len(data.train_samples)} train / "
             f"{len(data.test_samples)} test images",
             f"{'step':>4}  {'train':>6}  {'test':>6}  classes"]
    for step, classes in enumerate(data.scenario.steps):
        label = ", ".join(f"{c} {names[c]}" for c in classes)
        if len(label) > 90:
            label = f"{len(classes)} classes: {classes[0]} {names[classes[0]]} ... {classes[-1]} {names[classes[-1]]}"
        lines.append(f"{step:>4}  {len(data.train_ids(step)):>6}  {len(data.test_ids(step)):>6}  {label}")
    return "\n".join(lines)
