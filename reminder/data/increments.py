"""Open-ended increments over your own data: one dataset YAML per step.

Step 0 learns every class its YAML names; step t learns the classes that YAML t adds
after the previous one's. The old classes keep their ids and names: YAML t must list
YAML t-1's classes first, unchanged. A step trains on its own YAML's training images that
hold one of its new classes (everything else in them is background, as in the paper), and
is scored on the union of the val sets of YAMLs 0..t.

The object has :class:`reminder.data.splits.ScenarioData`'s interface, so the training
code runs both the paper's benchmarks and these runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from reminder.data.catalog import DatasetSpec
from reminder.data.classes import IGNORE_INDEX
from reminder.data.custom import DataYaml, load_data
from reminder.data.index import ClassIndex, build_class_index
from reminder.data.samples import Sample
from reminder.data.scenario import Scenario
from reminder.errors import ReminderError


def check_extends(old: DataYaml, new: DataYaml) -> list[str]:
    """The names ``new`` adds after ``old``'s; an error when it renames, drops or reorders one."""
    for index, name in enumerate(old.names):
        if index >= len(new.names):
            raise ReminderError(f"{new.source} drops class {index} {name!r} of {old.source}: list every class of the "
                                f"run first, with the same ids")
        if new.names[index] != name:
            moved = f" (it lists {name!r} as class {new.names.index(name)})" if name in new.names else ""
            raise ReminderError(f"{new.source} renames class {index} from {name!r} to {new.names[index]!r}{moved}: "
                                f"the run's classes keep their ids and names")
    added = list(new.names[len(old.names):])
    if not added:
        raise ReminderError(f"{new.source} adds no class to {old.source}'s {len(old.names)}; a new step needs one")
    return added


@dataclass
class IncrementalData:
    spec: DatasetSpec
    scenario: Scenario
    datasets: list[DataYaml]
    train_sets: list[list[Sample]]
    train_indexes: list[ClassIndex]
    val_sets: list[list[Sample]]
    val_indexes: list[ClassIndex]
    colors: tuple[tuple[int, int, int], ...]

    @property
    def train_samples(self) -> list[Sample]:
        return [s for samples in self.train_sets for s in samples]

    @property
    def test_samples(self) -> list[Sample]:
        return [s for samples in self.val_sets for s in samples]

    def train_ids(self, step: int) -> list[str]:
        return self.scenario.train_ids(step, self.train_indexes[step].classes)

    def _val_parts(self, step: int, upto: Sequence[int] | None = None) -> list[tuple[int, list[str]]]:
        seen = set(self.scenario.seen_classes(step))
        parts = []
        for t in (range(step + 1) if upto is None else upto):
            index = self.val_indexes[t].classes
            parts.append((t, sorted(i for i, present in index.items() if seen & set(present))))
        return parts

    def test_ids(self, step: int) -> list[str]:
        return [f"{t}:{i}" for t, ids in self._val_parts(step) for i in ids]

    def step_test_samples(self, step: int) -> list[Sample]:
        parts = []
        for t, ids in self._val_parts(step):
            by_id = {s.id: s for s in self.val_sets[t]}
            parts += [by_id[i] for i in ids]
        return parts

    def train_dataset(self, step: int, transform=None, ids: Sequence[str] | None = None):
        from reminder.data.loading import SegmentationDataset, select

        data = self.datasets[step]
        return SegmentationDataset(select(self.train_sets[step], self.train_ids(step) if ids is None else ids),
                                   num_classes=data.num_classes, label_lut=self.scenario.train_lut(step),
                                   transform=transform, mask_reader=data.mask_reader())

    def test_dataset(self, step: int, transform=None, protocol: str | None = None):
        import torch

        from reminder.data.loading import SegmentationDataset, select

        lut = self.scenario.test_lut(step, protocol)
        parts = [SegmentationDataset(select(self.val_sets[t], ids), num_classes=self.datasets[t].num_classes,
                                     label_lut=lut, transform=transform, mask_reader=self.datasets[t].mask_reader())
                 for t, ids in self._val_parts(step) if ids]
        return torch.utils.data.ConcatDataset(parts)

    def missing_val_classes(self, step: int) -> list[str]:
        """Seen classes without a pixel in the step's val images (their IoU cannot be measured)."""
        present = set()
        for t in range(step + 1):
            for values in self.val_indexes[t].classes.values():
                present.update(values)
        return [self.spec.class_names[c] for c in self.scenario.seen_classes(step) if c not in present]

    def as_json(self) -> dict:
        steps = [{"step": t, "data": str(self.datasets[t].source), "classes": list(classes),
                  "train": self.train_ids(t), "test": self.test_ids(t)}
                 for t, classes in enumerate(self.scenario.steps)]
        return {"setting": "custom", "mode": self.scenario.mode, "steps": steps}


def run_colors(datasets: Sequence[DataYaml]) -> tuple[tuple[int, int, int], ...]:
    """Each class keeps the colour of the YAML that introduced it; one that another class
    already has is completed by the class table's rule (a distinct one)."""
    from reminder.contracts import ClassTable

    table = ClassTable(datasets[0].names, datasets[0].colors, where=str(datasets[0].source))
    for data in datasets[1:]:
        added = zip(data.names[len(table):], data.colors[len(table):])
        table = table.extend([(name, rgb if rgb not in table.colors else None) for name, rgb in added],
                             where=str(data.source))
    return table.colors


def load_increments(paths: Sequence[str | Path], *, mode: str = "overlap", test_protocol: str = "reminder",
                    cache_dir: str | Path | None = None, validation: float = 0.0,
                    progress: bool = False, holdouts: Sequence[float] = ()) -> IncrementalData:
    """Read the YAMLs of a run's steps, check that each extends the previous, index the masks.
    ``holdouts[t]`` > 0 keeps that share of step t's training images out of its training
    (:func:`holdout_samples`: what ``reminder compare`` scores the candidates on)."""
    from reminder.data.splits import carve_validation

    if not paths:
        raise ReminderError("no dataset YAML given")
    datasets = [load_data(p) for p in paths]
    steps = [tuple(range(1, datasets[0].num_classes))]
    for old, new in zip(datasets, datasets[1:]):
        check_extends(old, new)
        steps.append(tuple(range(old.num_classes, new.num_classes)))
    names = datasets[-1].names
    scenario = Scenario("custom", len(names), tuple(steps), mode, test_protocol)
    train_sets, train_indexes, val_sets, val_indexes = [], [], [], []
    for data in datasets:
        reader = data.mask_reader()
        train = data.samples("train")
        if len(holdouts) > len(train_sets) and holdouts[len(train_sets)] > 0:
            train = holdout_samples(data, holdouts[len(train_sets)])[0]
        index = build_class_index(train, num_classes=data.num_classes, cache_dir=cache_dir, progress=progress,
                                  mask_reader=reader)
        if validation > 0:
            train, val = carve_validation(train, validation)
            val_index = ClassIndex({s.id: index.classes[s.id] for s in val})
            index = ClassIndex({s.id: index.classes[s.id] for s in train})
        else:
            val = data.samples("val")
            val_index = build_class_index(val, num_classes=data.num_classes, cache_dir=cache_dir, progress=progress,
                                          mask_reader=reader)
        train_sets.append(train)
        train_indexes.append(index)
        val_sets.append(val)
        val_indexes.append(ClassIndex({k: tuple(v for v in c if v != IGNORE_INDEX)
                                       for k, c in val_index.classes.items()}))
    spec = DatasetSpec("custom", names, lambda root, split: [])
    return IncrementalData(spec, scenario, datasets, train_sets, train_indexes, val_sets, val_indexes,
                           run_colors(datasets))


def union_val_dataset(paths: Sequence[str | Path], class_names: Sequence[str], num_seen: int, transform=None):
    """The val images of every YAML in ``paths``, labelled for a model that knows the first
    ``num_seen`` of ``class_names`` (later classes are background, as unseen classes are in
    the paper's protocol). Each YAML must agree with the run on the ids and names they share."""
    import numpy as np
    import torch

    from reminder.data.loading import SegmentationDataset

    parts = []
    for path in paths:
        data = load_data(path)
        shared = min(len(data.names), len(class_names))
        for index in range(shared):
            if data.names[index] != class_names[index]:
                raise ReminderError(f"{data.source} calls class {index} {data.names[index]!r}, but the run calls it "
                                    f"{class_names[index]!r}")
        lut = np.arange(256, dtype=np.uint8)
        lut[num_seen:IGNORE_INDEX] = 0
        parts.append(SegmentationDataset(data.samples("val"), num_classes=data.num_classes, label_lut=lut,
                                         transform=transform, mask_reader=data.mask_reader()))
    return torch.utils.data.ConcatDataset(parts)


def holdout_samples(data, share: float):
    """``(kept, held out)``: the training images of ``data`` (a :class:`DataYaml`) split by a
    stable hash of their ids, about ``share`` held out (the same images on every machine)."""
    from reminder.data.splits import carve_validation

    return carve_validation(data.samples("train"), share)
