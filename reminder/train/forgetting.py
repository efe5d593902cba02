"""Similarity-driven forgetting, the paper's Fig. 5 argument measured: at each step, do the
old classes that resemble the new ones lose more IoU than the other old classes?

For step t >= 1 the old foreground classes (seen before t; background left out: it
resembles everything) are split into the ``k`` most similar to the step's new classes and
the rest, and each group's mean IoU drop from step t-1 to step t is reported:

- ``prototypes``: on any dataset, similarity is the cosine between the classes' stored
  prototypes (the run's last bank, 256-channel pre-classifier features): an old class's
  similarity is its highest cosine with any new class of the step;
- ``group``: on SynthVOC, classes drawn in the same visual group as a new class.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np


def _mean(values: Sequence[float]) -> float | None:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(values)) if values else None


def _drops(previous: dict, current: dict, names: Sequence[str]) -> list[float]:
    return [previous[n] - current[n] for n in names
            if previous.get(n) is not None and current.get(n) is not None]


def prototype_neighbours(prototypes: np.ndarray, old: Sequence[int], new: Sequence[int], k: int) -> list[int]:
    """The ``k`` ids of ``old`` whose prototypes are nearest (cosine) to any of ``new``."""
    bank = prototypes / np.maximum(np.linalg.norm(prototypes, axis=1, keepdims=True), 1e-12)
    similarity = bank[list(old)] @ bank[list(new)].T
    nearest = similarity.max(axis=1)
    return [old[i] for i in np.argsort(-nearest, kind="stable")[:k]]


def similarity_forgetting(steps: Sequence[dict], names: Sequence[str], *, prototypes: np.ndarray | None = None,
                          groups: dict[str, str] | None = None, k: int = 3) -> list[dict]:
    """One record per step t >= 1: the similar and the other old classes by each available
    criterion, and their mean IoU drops (IoU fractions; positive = forgotten).

    ``steps``: the run's per-step metrics (``iou`` by class name, ``num_seen``), in order;
    ``names``: the class names in channel order (background first)."""
    records = []
    for previous, current in zip(steps, steps[1:]):
        old = list(range(1, previous["num_seen"]))
        new = list(range(previous["num_seen"], current["num_seen"]))
        record = {"step": current["step"], "new": [names[c] for c in new]}
        criteria = {}
        if prototypes is not None and len(prototypes) >= current["num_seen"]:
            criteria["prototypes"] = prototype_neighbours(prototypes, old, new, min(k, len(old)))
        if groups is not None:
            new_groups = {groups.get(names[c]) for c in new}
            criteria["group"] = [c for c in old if groups.get(names[c]) in new_groups]
        for criterion, similar in criteria.items():
            others = [c for c in old if c not in similar]
            record[criterion] = {
                "similar": [names[c] for c in similar],
                "similar_drop": _mean(_drops(previous["iou"], current["iou"], [names[c] for c in similar])),
                "other_drop": _mean(_drops(previous["iou"], current["iou"], [names[c] for c in others])),
            }
        records.append(record)
    return records


def run_similarity_forgetting(run: Path, steps: Sequence[dict], dataset: str, *, k: int = 3) -> list[dict]:
    """:func:`similarity_forgetting` for a run folder: its last prototype bank, and on
    SynthVOC its visual groups."""
    from reminder.train.checkpoint import read_meta
    from reminder.train.prototypes import load_prototypes

    if len(steps) < 2:
        return []
    last = Path(run) / f"step{steps[-1]['step']}"
    names = read_meta(last)["classes"]
    bank = None
    if (last / "prototypes.safetensors").is_file():
        bank = load_prototypes(last / "prototypes.safetensors")["prototypes"].float().numpy()
    groups = None
    if dataset == "synthvoc":
        from reminder.data.synthetic import CLASS_STYLES

        groups = {name: style.group for name, style in CLASS_STYLES.items()}
    return similarity_forgetting(steps, names, prototypes=bank, groups=groups, k=k)
