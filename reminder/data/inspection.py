"""Inspection: a generated domain of thin and small classes, on non-square frames.

Frames (320x192 by default) show a workbench with metal panels, on which a camera must find
what users label in practice: ``cable`` (curves 2-3 px wide), ``scratch`` (1 px lines),
``screw`` (discs of 3-5 px radius, each under 0.1% of a frame), ``rust`` (small blotches)
and ``sticker`` (small rectangles). ``panel`` is the one large class. Used to measure what
the heads, crops and class weights do for such classes (benchmarks/thin_classes.py), and,
small, by the tests. ``write_inspection`` writes the own-data layout and its YAML.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from reminder.data.warehouse import write_generated
from reminder.errors import ReminderError

INSPECTION_CLASSES = ("panel", "cable", "scratch", "screw", "rust", "sticker")


def _jitter(rng: np.random.Generator, color, spread: int = 18) -> tuple[int, ...]:
    return tuple(int(np.clip(c + rng.integers(-spread, spread + 1), 0, 255)) for c in color)


def inspection_scene(rng: np.random.Generator, width: int, height: int, drawn: Sequence[str]):
    """(image (H, W, 3) uint8, {class name: its visible pixels}) of one frame; later
    drawings cover earlier ones (panels, then rust and stickers, screws, scratches, cables)."""
    from PIL import Image, ImageDraw

    s = height / 192
    base = np.array([rng.integers(60, 100), rng.integers(60, 90), rng.integers(50, 80)], np.float32)
    image = Image.fromarray(np.clip(base + rng.normal(0, 8, (height, width, 3)), 0, 255).astype(np.uint8))
    paint = ImageDraw.Draw(image)
    layers: list[tuple[str, Image.Image]] = []

    def layer(name):
        mask = Image.new("L", (width, height))
        layers.append((name, mask))
        return ImageDraw.Draw(mask)

    panels = []
    if "panel" in drawn:
        mark = layer("panel")
        for _ in range(int(rng.integers(1, 3))):
            w, h = int(rng.uniform(0.35, 0.6) * width), int(rng.uniform(0.45, 0.8) * height)
            x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
            box = [x, y, x + w, y + h]
            paint.rectangle(box, fill=_jitter(rng, (165, 170, 178)))
            mark.rectangle(box, fill=255)
            panels.append(box)
    spots = panels or [[0, 0, width - 1, height - 1]]

    def inside(margin: int = 4):
        x0, y0, x1, y1 = spots[int(rng.integers(len(spots)))]
        return (int(rng.integers(x0 + margin, max(x0 + margin + 1, x1 - margin))),
                int(rng.integers(y0 + margin, max(y0 + margin + 1, y1 - margin))))

    if "rust" in drawn:
        mark = layer("rust")
        for _ in range(int(rng.integers(1, 3))):
            cx, cy = inside(8)
            for _ in range(4):
                r = rng.uniform(2, 5) * s
                dx, dy = rng.normal(0, 3 * s, 2)
                ellipse = [cx + dx - r, cy + dy - r * 0.8, cx + dx + r, cy + dy + r * 0.8]
                paint.ellipse(ellipse, fill=_jitter(rng, (150, 70, 25)))
                mark.ellipse(ellipse, fill=255)
    if "sticker" in drawn:
        mark = layer("sticker")
        cx, cy = inside(12)
        w, h = rng.uniform(10, 18) * s, rng.uniform(6, 10) * s
        paint.rectangle([cx, cy, cx + w, cy + h], fill=_jitter(rng, (235, 215, 40)))
        paint.line([cx + 2, cy + h / 2, cx + w - 2, cy + h / 2], fill=(30, 30, 30), width=1)
        mark.rectangle([cx, cy, cx + w, cy + h], fill=255)
    if "screw" in drawn:
        mark = layer("screw")
        for x0, y0, x1, y1 in panels or [inside(10) * 2 for _ in range(2)]:
            r = rng.uniform(3, 5) * s
            for cx, cy in ((x0 + 3 * r, y0 + 3 * r), (x1 - 3 * r, y0 + 3 * r), (x0 + 3 * r, y1 - 3 * r),
                           (x1 - 3 * r, y1 - 3 * r)):
                if rng.random() < 0.75:
                    paint.ellipse([cx - r, cy - r, cx + r, cy + r], fill=_jitter(rng, (45, 45, 50), 10))
                    paint.line([cx - r + 1, cy, cx + r - 1, cy], fill=(200, 200, 205), width=1)
                    mark.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    if "scratch" in drawn:
        mark = layer("scratch")
        for _ in range(int(rng.integers(2, 4))):
            (x, y), length, angle = inside(6), rng.uniform(30, 70) * s, rng.uniform(0, np.pi)
            end = (x + length * np.cos(angle), y + length * np.sin(angle))
            paint.line([x, y, *end], fill=_jitter(rng, (240, 240, 245), 8), width=1)
            mark.line([x, y, *end], fill=255, width=1)
    if "cable" in drawn:
        mark = layer("cable")
        for _ in range(int(rng.integers(1, 3))):
            start, end = (0, rng.uniform(0, height)), (width, rng.uniform(0, height))
            bend = (rng.uniform(0.2, 0.8) * width, rng.uniform(0, height))
            t = np.linspace(0, 1, 60)[:, None]
            points = ((1 - t) ** 2 * start + 2 * (1 - t) * t * bend + t ** 2 * end).round().tolist()
            color, thickness = _jitter(rng, rng.choice([(20, 60, 200), (200, 30, 30), (30, 30, 30)]), 10), \
                int(rng.integers(2, 4))
            paint.line([tuple(p) for p in points], fill=color, width=thickness, joint="curve")
            mark.line([tuple(p) for p in points], fill=255, width=thickness, joint="curve")
    visible: dict[str, np.ndarray] = {}
    for name, mask in layers:
        pixels = np.array(mask) > 0
        for other in visible.values():
            other &= ~pixels
        visible[name] = visible.get(name, np.zeros_like(pixels)) | pixels
    return np.array(image), visible


def write_inspection(root: str | Path, *, names: Sequence[str] = ("background", "panel", "cable", "scratch", "screw"),
                     drawn: Sequence[str] | None = None, labelled: Sequence[str] | None = None,
                     train: int = 60, val: int = 20, width: int = 320, height: int = 192, seed: int = 0,
                     yaml_name: str = "data.yaml", progress: bool = False) -> Path:
    """Write inspection frames under ``root`` and their YAML; returns the YAML's path.

    ``names``: the YAML's classes (background first); ``drawn``: what the frames show
    (default: every inspection class, so a later step's classes are in the images, unlabelled,
    as in real data); ``labelled``: what the train masks label (default: the named classes;
    val masks label every named class)."""

    root = Path(root)
    drawn = list(drawn or INSPECTION_CLASSES)
    labelled = set(labelled or names[1:])
    for name in list(drawn) + list(labelled) + list(names[1:]):
        if name not in INSPECTION_CLASSES:
            raise ReminderError(f"inspection has no class {name!r}; it draws {', '.join(INSPECTION_CLASSES)}")
    if train < 1 or val < 1 or width < 32 or height < 32:
        raise ReminderError("inspection needs at least one train and one val image of at least 32x32 px")
    return write_generated(root, lambda rng: inspection_scene(rng, width, height, drawn), names=names,
                           labelled=labelled, train=train, val=val, seed=seed, yaml_name=yaml_name, progress=progress,
                           what="inspection frames (reminder data inspection)")
