"""Per-class quality: which classes a model has not learnt, said loudly.

A mean hides a class at 0 IoU. Training, increments, updates, the exporter and the fleet
all judge each class by one rule (:func:`weak_classes`): a class is weak when its IoU is
under ``floor`` (10 points). Measured on thin and small classes (docs/own-data.md), that
floor separates the classes whose objects a model misses from those it finds: every class
under it found none of its objects, every class over it at least 89%. An earlier second
criterion, under a third of the other classes' median, flagged 1 px scratches at 14-22 IoU
that were found 89-96% of the time, so it is off unless ``ratio`` is given.
The bundle's manifest records the per-class IoU and the weak classes under ``quality``,
and ``fleet publish`` refuses a bundle whose *new* classes are weak unless told otherwise.
"""

from __future__ import annotations

import statistics
from typing import Mapping, Sequence

WEAK_FLOOR = 0.10

KNOBS = ("more labelled images of it", "more iterations (`max_iterations` or `epochs`)",
         "for thin or small objects `head` deeplabv3plus and `class_weights` sqrt (the defaults with `data`) or "
         "`output_stride` 8", "see docs/own-data.md")


def weak_classes(iou: Mapping[str, float | None], *, among: Sequence[str] | None = None,
                 floor: float = WEAK_FLOOR, ratio: float | None = None,
                 background: str | None = None) -> list[dict]:
    """The classes of ``among`` (default: every class but ``background``, the first one)
    whose IoU (0..1) is under ``floor``, or, when ``ratio`` is given, under ``ratio`` times
    the median of the other classes' IoU (background left out of that median). A class
    without a value (absent from the evaluation data) is not judged.
    Each entry: ``name``, ``iou``, ``median_others`` and ``why``."""
    names = list(iou)
    background = names[0] if background is None and names else background
    judged = [n for n in (among if among is not None else names) if n != background and iou.get(n) is not None]
    weak = []
    for name in judged:
        others = [v for n, v in iou.items() if n not in (name, background) and v is not None]
        median = statistics.median(others) if others else None
        value = float(iou[name])
        if value < floor:
            why = f"IoU {100 * value:.1f} is under {100 * floor:.0f}"
        elif ratio is not None and median is not None and value < ratio * median:
            why = f"IoU {100 * value:.1f} is under {ratio:.2g} of the other classes' median ({100 * median:.1f})"
        else:
            continue
        weak.append({"name": name, "iou": round(value, 4), "median_others": None if median is None else
                     round(median, 4), "why": why})
    return weak


def describe_weak(weak: Sequence[dict], *, where: str = "validation",
                  pixel_share: Mapping[str, float] | None = None) -> list[str]:
    """One warning line per weak class: its name, its IoU on ``where``, its share of the
    labelled pixels when known, and what helps."""
    lines = []
    for entry in weak:
        share = (pixel_share or {}).get(entry["name"])
        shown = f", {100 * share:.2f}% of the labelled pixels" if share is not None else ""
        lines.append(f"WARNING: class {entry['name']!r} is not learnt ({entry['why']} on {where}{shown}); "
                     f"what helps: {'; '.join(KNOBS)}")
    return lines


def iou_table(iou: Mapping[str, float | None], weak: Sequence[dict] = ()) -> list[str]:
    """Per-class IoU lines, the weak ones marked."""
    marked = {w["name"] for w in weak}
    width = max((len(n) for n in iou), default=5)
    return [f"  {name:<{width}}  {'-' if value is None else f'{100 * value:5.1f}'}"
            + ("  <- not learnt" if name in marked else "") for name, value in iou.items()]


def per_class_report(metrics: dict) -> list[str]:
    """The per-class IoU table of a step's evaluation (``iou``, ``pixel_share``), and a
    warning naming each class that is not learnt, with its pixel share and what helps."""
    iou = metrics.get("iou") or {}
    weak = weak_classes(iou)
    return (["per-class IoU:"] + iou_table(iou, weak)
            + describe_weak(weak, where="the evaluation images", pixel_share=metrics.get("pixel_share")))
