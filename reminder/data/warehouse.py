"""Warehouse: a second generated domain with its own class names (not VOC's), for trying and
testing the own-data workflow end to end without downloading anything.

Scenes are a concrete floor under a wall, with drawn shelves, pallets, forklifts, people,
carts and cones, each with its own shape and colours. ``write_warehouse`` writes the
layout a user's dataset has (``images/{train,val}``, ``masks/{train,val}``, index PNGs)
and the dataset YAML that names it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from reminder.errors import ReminderError
from reminder.io import atomic_write_text
from reminder.progress import progress as progress_bar

WAREHOUSE_CLASSES = ("shelf", "pallet", "forklift", "person", "cart", "cone")


def _draw(kind: str, rng: np.random.Generator, size: int):
    """(RGB layer, mask) of one object placed at random; the mask marks its pixels."""
    from PIL import Image, ImageDraw

    layer = Image.new("RGB", (size, size))
    mask = Image.new("L", (size, size))
    paint, mark = ImageDraw.Draw(layer), ImageDraw.Draw(mask)
    s = size / 96
    jitter = lambda c: tuple(int(np.clip(v + rng.integers(-20, 21), 0, 255)) for v in c)  # noqa: E731
    x, y = int(rng.integers(0, size * 0.75)), int(rng.integers(size * 0.3, size * 0.85))

    def box(x0, y0, x1, y1, color, shape="rectangle"):
        getattr(paint, shape)([x0, y0, x1, y1], fill=color)
        getattr(mark, shape)([x0, y0, x1, y1], fill=255)

    if kind == "shelf":
        w, h = int(rng.integers(22, 34) * s), int(rng.integers(45, 70) * s)
        y = max(0, y - h)
        box(x, y, x + w, y + h, jitter((60, 80, 140)))
        for level in range(y + 4, y + h, max(4, int(12 * s))):
            paint.rectangle([x, level, x + w, level + max(1, int(2 * s))], fill=jitter((230, 120, 20)))
    elif kind == "pallet":
        w, h = int(rng.integers(20, 30) * s), int(rng.integers(6, 9) * s)
        box(x, y, x + w, y + h, jitter((150, 100, 50)))
        for slat in range(x + 2, x + w, max(3, int(6 * s))):
            paint.rectangle([slat, y, slat + max(1, int(2 * s)), y + h], fill=(90, 60, 30))
    elif kind == "forklift":
        w, h = int(rng.integers(20, 28) * s), int(rng.integers(14, 20) * s)
        y = max(0, y - h)
        box(x, y, x + w, y + h, jitter((240, 200, 20)))
        box(x + w, y - int(10 * s), x + w + max(2, int(3 * s)), y + h, (30, 30, 30))
        for cx in (x + int(5 * s), x + w - int(5 * s)):
            box(cx - int(4 * s), y + h - int(4 * s), cx + int(4 * s), y + h + int(4 * s), (20, 20, 20), "ellipse")
    elif kind == "person":
        w, h = int(rng.integers(8, 12) * s), int(rng.integers(26, 34) * s)
        y = max(0, y - h)
        box(x + w // 4, y, x + 3 * w // 4, y + w // 2, jitter((220, 180, 150)), "ellipse")
        box(x, y + w // 2, x + w, y + h * 2 // 3, jitter((120, 230, 40)))
        box(x + w // 6, y + h * 2 // 3, x + 5 * w // 6, y + h, jitter((40, 40, 90)))
    elif kind == "cart":
        w, h = int(rng.integers(16, 22) * s), int(rng.integers(10, 14) * s)
        y = max(0, y - h)
        box(x, y, x + w, y + h, jitter((30, 140, 230)))
        for gx in range(x, x + w, max(3, int(4 * s))):
            paint.line([gx, y, gx, y + h], fill=(200, 230, 255))
        for cx in (x + int(3 * s), x + w - int(3 * s)):
            box(cx - int(2 * s), y + h, cx + int(2 * s), y + h + int(4 * s), (10, 10, 10), "ellipse")
    elif kind == "cone":
        w, h = int(rng.integers(14, 20) * s), int(rng.integers(18, 26) * s)
        y = max(0, y - h)
        paint.polygon([(x + w // 2, y), (x, y + h), (x + w, y + h)], fill=jitter((250, 90, 10)))
        mark.polygon([(x + w // 2, y), (x, y + h), (x + w, y + h)], fill=255)
        paint.line([x + w // 4, y + h // 2, x + 3 * w // 4, y + h // 2], fill=(255, 255, 255), width=max(1, int(2 * s)))
    else:
        raise ReminderError(f"warehouse has no class {kind!r}; it draws {', '.join(WAREHOUSE_CLASSES)}")
    return np.array(layer), np.array(mask) > 0


def warehouse_scene(rng: np.random.Generator, size: int, drawn: Sequence[str], must: Sequence[str] = ()):
    """(image (H, W, 3) uint8, {class name: its visible pixels}) of one scene."""
    floor = np.array([rng.integers(110, 160)] * 3) + rng.integers(-10, 11, 3)
    wall = np.array([rng.integers(170, 220), rng.integers(170, 220), rng.integers(150, 200)])
    image = np.empty((size, size, 3), np.float32)
    horizon = int(size * rng.uniform(0.25, 0.4))
    image[:horizon], image[horizon:] = wall, floor
    image += rng.normal(0, 6, image.shape)
    count = int(rng.integers(2, 5))
    kinds = list(must) + [str(k) for k in rng.choice(list(drawn), size=max(0, count - len(must)))]
    rng.shuffle(kinds)
    visible: dict[str, np.ndarray] = {}
    for kind in kinds:
        layer, pixels = _draw(kind, rng, size)
        image[pixels] = layer[pixels]
        for other in visible.values():
            other &= ~pixels
        visible[kind] = visible.get(kind, np.zeros_like(pixels)) | pixels
    return np.clip(image, 0, 255).astype(np.uint8), visible


def write_warehouse(root: str | Path, *, names: Sequence[str] = ("background", "shelf", "pallet", "forklift", "person"),
                    drawn: Sequence[str] | None = None, labelled: Sequence[str] | None = None,
                    must: Sequence[str] = (), train: int = 48, val: int = 16, size: int = 96, seed: int = 0,
                    yaml_name: str = "data.yaml", progress: bool = False) -> Path:
    """Write a warehouse dataset under ``root`` and its YAML; returns the YAML's path.

    ``names``: the YAML's classes (background first). ``drawn``: what the scenes show
    (default: the named classes). ``labelled``: the classes that training masks label
    (default: all named; others drawn are background, as unlabelled objects are in real
    data); val masks label every named class. ``must``: classes in every scene.
    """

    root = Path(root)
    drawn = list(drawn or names[1:])
    labelled = set(labelled or names[1:])
    for name in list(drawn) + list(labelled) + list(must):
        if name not in WAREHOUSE_CLASSES:
            raise ReminderError(f"warehouse has no class {name!r}; it draws {', '.join(WAREHOUSE_CLASSES)}")
    if any(split_size < 1 for split_size in (train, val)):
        raise ReminderError("warehouse needs at least one train and one val image")
    return write_generated(root, lambda rng: warehouse_scene(rng, size, drawn, must), names=names, labelled=labelled,
                           train=train, val=val, seed=seed, yaml_name=yaml_name, progress=progress,
                           what="warehouse scenes (reminder data warehouse)")


def write_generated(root: Path, scene, *, names: Sequence[str], labelled: set, train: int, val: int, seed: int,
                    yaml_name: str, progress: bool, what: str) -> Path:
    """Write ``train`` + ``val`` generated images in the own-data layout (``images/{train,val}``
    JPEGs, ``masks/{train,val}`` index PNGs) and the dataset YAML naming them; ``scene(rng)
    -> (image, {class name: its pixels})``. Train masks label only ``labelled`` classes, val
    masks every named one."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    jobs = [("train", i) for i in range(train)] + [("val", i) for i in range(val)]
    for split, i in progress_bar(jobs, progress, desc=what.split()[0], unit="image"):
        image, visible = scene(rng)
        mask = np.zeros(image.shape[:2], np.uint8)
        for name, pixels in visible.items():
            if name in names and (split == "val" or name in labelled):
                mask[pixels] = names.index(name)
        for folder, array, suffix in (("images", image, ".jpg"), ("masks", mask, ".png")):
            path = root / folder / split / f"{seed:03d}_{i:04d}{suffix}"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(path, quality=95) if suffix == ".jpg" else Image.fromarray(array).save(path)
    listing = "\n".join(f"  {i}: {name}" for i, name in enumerate(names))
    text = f"# {what}, seed {seed}\npath: .\ntrain: images/train\nval: images/val\nnames:\n{listing}\n"
    return atomic_write_text(root / yaml_name, text)
