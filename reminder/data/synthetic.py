"""SynthVOC: a procedural stand-in for Pascal VOC, written in VOC's exact on-disk layout.

Every VOC class is drawn as an object of its visual group. A group shares a shape
family (animals: an ellipse body with a head and legs; vehicles: a box on wheels;
indoor objects: upright blocks; person: a capsule with a head) and a colour family
(animals warm browns, vehicles blues, indoor greens, person magenta). Within a group
classes differ only in finer cues, proportions and texture, so a model that learns
``sheep`` can confuse it with ``dog`` or ``cow`` (same proportions, other texture), as in
Fig. 1 of the REMINDER paper. Images hold one to four objects that occlude each
other, on varied backgrounds with unlabelled clutter; masks carry VOC's 1-pixel void
(255) outline. Generation is deterministic for a seed and an image index.
"""

from __future__ import annotations

import colorsys
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from reminder.data.classes import IGNORE_INDEX, VOC_CLASSES, flat_palette
from reminder.progress import progress as progress_bar

GENERATOR_VERSION = 1
GROUP_HUES = {"animal": 30.0, "vehicle": 215.0, "indoor": 120.0, "person": 315.0}


@dataclass(frozen=True)
class ClassStyle:
    """How one class is drawn: its group's shape family, proportions and texture."""

    group: str
    aspect: float  # width / height of the main body
    texture: str  # plain | hstripes | vstripes | checker | dots | speckle | diagonal | frame
    period: float  # texture period as a fraction of the object height
    hue_offset: float  # degrees away from the group hue
    variant: str = ""  # a shape detail inside the family


CLASS_STYLES: dict[str, ClassStyle] = {
    "aeroplane": ClassStyle("vehicle", 3.0, "plain", 0.0, -8, "wings"),
    "bicycle": ClassStyle("vehicle", 1.6, "diagonal", 0.18, 6, "frame"),
    "bird": ClassStyle("animal", 1.2, "dots", 0.22, 8, "nolegs"),
    "boat": ClassStyle("vehicle", 2.2, "hstripes", 0.2, -4, "hull"),
    "bottle": ClassStyle("indoor", 0.35, "plain", 0.0, 10, "neck"),
    "bus": ClassStyle("vehicle", 2.4, "checker", 0.25, 0),
    "car": ClassStyle("vehicle", 1.8, "plain", 0.0, 4),
    "cat": ClassStyle("animal", 1.4, "hstripes", 0.14, -6),
    "chair": ClassStyle("indoor", 0.8, "vstripes", 0.2, -8, "back"),
    "cow": ClassStyle("animal", 1.7, "checker", 0.35, -2),
    "diningtable": ClassStyle("indoor", 2.0, "hstripes", 0.16, 4, "legs"),
    "dog": ClassStyle("animal", 1.5, "plain", 0.0, 4),
    "horse": ClassStyle("animal", 1.9, "vstripes", 0.2, -10),
    "motorbike": ClassStyle("vehicle", 1.5, "dots", 0.22, 10),
    "person": ClassStyle("person", 0.4, "plain", 0.0, 0),
    "pottedplant": ClassStyle("indoor", 0.7, "dots", 0.2, -4, "pot"),
    "sheep": ClassStyle("animal", 1.5, "speckle", 0.1, 0),
    "sofa": ClassStyle("indoor", 2.2, "plain", 0.0, 0, "back"),
    "train": ClassStyle("vehicle", 3.2, "checker", 0.25, -2),
    "tvmonitor": ClassStyle("indoor", 1.3, "frame", 0.0, 8, "stand"),
}
GROUPS: dict[str, list[int]] = {}
for _index, _name in enumerate(VOC_CLASSES[1:], start=1):
    GROUPS.setdefault(CLASS_STYLES[_name].group, []).append(_index)


def _hsv(hue: float, saturation: float, value: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb((hue % 360) / 360, saturation, value), np.float32)


def _texture(style: ClassStyle, height: int, width: int, size: float, rng) -> np.ndarray:
    """A (H, W) pattern in [0, 1] for an object of the given pixel height ``size``."""
    period = max(2.0, style.period * size)
    offset_y, offset_x = rng.uniform(0, period, size=2)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    yy += offset_y
    xx += offset_x
    kind = style.texture
    if kind == "hstripes":
        return (yy // period) % 2
    if kind == "vstripes":
        return (xx // period) % 2
    if kind == "diagonal":
        return ((xx + yy) // period) % 2
    if kind == "checker":
        return ((xx // period) + (yy // period)) % 2
    if kind == "dots":
        dy = yy % period - period / 2
        dx = xx % period - period / 2
        return (dx * dx + dy * dy < (period * 0.3) ** 2).astype(np.float32)
    if kind == "speckle":
        return (rng.random((height, width)) < 0.45).astype(np.float32)
    return np.zeros((height, width), np.float32)


def _draw_shape(draw: ImageDraw.ImageDraw, style: ClassStyle, x: float, y: float,
                w: float, h: float, facing: int) -> list[tuple[float, float, float, float]]:
    """Draw the class's silhouette with its body box at (x, y, w, h); return inner boxes
    (drawn in a darker shade: wheels, screens)."""
    dark: list[tuple[float, float, float, float]] = []
    group, variant = style.group, style.variant
    if group == "animal":
        draw.ellipse([x, y, x + w, y + h], fill=1)
        head = 0.55 * h
        hx = x + w - head * 0.4 if facing > 0 else x - head * 0.6
        draw.ellipse([hx, y - head * 0.45, hx + head, y + head * 0.55], fill=1)
        if variant != "nolegs":
            leg = max(1.0, 0.13 * h)
            for fx in (0.2, 0.7):
                lx = x + fx * w
                draw.rectangle([lx, y + 0.6 * h, lx + leg, y + 1.45 * h], fill=1)
    elif group == "vehicle":
        if variant == "hull":
            draw.polygon([(x, y), (x + w, y), (x + 0.8 * w, y + h), (x + 0.2 * w, y + h)], fill=1)
        elif variant == "wings":
            draw.ellipse([x, y + 0.25 * h, x + w, y + 0.75 * h], fill=1)
            draw.polygon([(x + 0.35 * w, y - 0.4 * h), (x + 0.6 * w, y + 0.5 * h),
                          (x + 0.35 * w, y + 1.4 * h)], fill=1)
        else:
            draw.rounded_rectangle([x, y, x + w, y + h], radius=0.15 * h, fill=1)
            wheel = 0.45 * h
            for fx in (0.12, 0.88 - 0.45 * h / max(w, 1)):
                box = (x + fx * w, y + h - wheel / 2, x + fx * w + wheel, y + h + wheel / 2)
                draw.ellipse(box, fill=1)
                dark.append(box)
    elif group == "indoor":
        if variant == "neck":
            draw.rectangle([x, y + 0.3 * h, x + w, y + h], fill=1)
            draw.rectangle([x + 0.3 * w, y, x + 0.7 * w, y + 0.3 * h], fill=1)
        elif variant == "pot":
            draw.polygon([(x + 0.15 * w, y + 0.6 * h), (x + 0.85 * w, y + 0.6 * h),
                          (x + 0.7 * w, y + h), (x + 0.3 * w, y + h)], fill=1)
            draw.ellipse([x - 0.1 * w, y, x + 1.1 * w, y + 0.7 * h], fill=1)
        elif variant == "legs":
            draw.rectangle([x, y, x + w, y + 0.3 * h], fill=1)
            for fx in (0.05, 0.87):
                draw.rectangle([x + fx * w, y, x + (fx + 0.08) * w, y + h], fill=1)
        elif variant == "back":
            draw.rectangle([x, y + 0.45 * h, x + w, y + h], fill=1)
            draw.rectangle([x, y, x + 0.25 * w, y + h], fill=1)
        else:  # a screen on a stand
            draw.rectangle([x, y, x + w, y + 0.8 * h], fill=1)
            draw.rectangle([x + 0.4 * w, y + 0.8 * h, x + 0.6 * w, y + h], fill=1)
            dark.append((x + 0.1 * w, y + 0.1 * h, x + 0.9 * w, y + 0.7 * h))
    else:  # person
        draw.rounded_rectangle([x, y + 0.25 * h, x + w, y + h], radius=0.45 * w, fill=1)
        head = 0.7 * w
        draw.ellipse([x + (w - head) / 2, y, x + (w + head) / 2, y + head * 1.1], fill=1)
    return dark


def _background(size: int, rng) -> np.ndarray:
    """Low-saturation gradient with smooth noise and unlabelled clutter shapes."""
    corners = np.stack([_hsv(rng.uniform(0, 360), rng.uniform(0, 0.25), rng.uniform(0.25, 0.9))
                        for _ in range(4)])
    t = np.linspace(0, 1, size, dtype=np.float32)
    top = corners[0] * (1 - t[:, None]) + corners[1] * t[:, None]
    bottom = corners[2] * (1 - t[:, None]) + corners[3] * t[:, None]
    image = top[None] * (1 - t[:, None, None]) + bottom[None] * t[:, None, None]
    coarse = rng.normal(0, 0.08, (8, 8, 3)).astype(np.float32)
    image += np.asarray(Image.fromarray(coarse[..., 0]).resize((size, size), Image.BILINEAR))[..., None]
    clutter = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(clutter)
    for shade in range(1, int(rng.integers(1, 4)) + 1):
        points = [tuple(p) for p in rng.uniform(-0.1, 1.1, (int(rng.integers(3, 6)), 2)) * size]
        draw.polygon(points, fill=shade)
    clutter_map = np.asarray(clutter)
    for shade in range(1, int(clutter_map.max()) + 1):
        color = _hsv(rng.uniform(0, 360), rng.uniform(0, 0.2), rng.uniform(0.2, 0.9))
        image[clutter_map == shade] = color
    return image


def render_sample(index: int, *, size: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Render image ``index`` of the dataset for ``seed``.

    Returns ``image: (size, size, 3) uint8`` and ``label: (size, size) uint8`` with VOC
    class ids, 0 background and 255 on each object's outline.
    """
    rng = np.random.default_rng([seed, index])
    image = _background(size, rng)
    label = np.zeros((size, size), np.uint8)
    first = int(rng.integers(1, len(VOC_CLASSES)))
    classes = [first]
    for _ in range(int(rng.choice([0, 1, 1, 2, 2, 3]))):
        if rng.random() < 0.5:
            classes.append(int(rng.choice(GROUPS[CLASS_STYLES[VOC_CLASSES[first]].group])))
        else:
            classes.append(int(rng.integers(1, len(VOC_CLASSES))))
    for class_id in classes:
        style = CLASS_STYLES[VOC_CLASSES[class_id]]
        h = rng.uniform(0.18, 0.42) * size
        w = style.aspect * h * rng.uniform(0.9, 1.1)
        if w > 0.85 * size:
            h, w = h * 0.85 * size / w, 0.85 * size
        x = rng.uniform(-0.15 * w, size - 0.85 * w)
        y = rng.uniform(0.05 * size, size - 0.9 * h)
        canvas = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(canvas)
        dark_boxes = _draw_shape(draw, style, x, y, w, h, facing=1 if rng.random() < 0.5 else -1)
        mask = np.asarray(canvas) > 0
        if not mask.any():
            continue
        hue = GROUP_HUES[style.group] + style.hue_offset + rng.uniform(-6, 6)
        color = _hsv(hue, rng.uniform(0.55, 0.9), rng.uniform(0.55, 0.95))
        pattern = _texture(style, size, size, h, rng)
        shade = 1.0 - 0.45 * pattern
        if dark_boxes:
            dark = Image.new("L", (size, size), 0)
            for box in dark_boxes:
                ImageDraw.Draw(dark).rectangle(box, fill=1)
            shade = np.where(np.asarray(dark) > 0, 0.3, shade)
        image[mask] = color[None] * shade[mask][:, None]
        label[mask] = class_id
    image += rng.normal(0, 0.03, image.shape).astype(np.float32)
    label = _void_outline(label)
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8), label


def _void_outline(label: np.ndarray) -> np.ndarray:
    """Mark object pixels with a differently labelled 4-neighbour as 255 (VOC's void)."""
    edge = np.zeros(label.shape, bool)
    edge[1:] |= label[1:] != label[:-1]
    edge[:-1] |= label[:-1] != label[1:]
    edge[:, 1:] |= label[:, 1:] != label[:, :-1]
    edge[:, :-1] |= label[:, :-1] != label[:, 1:]
    out = label.copy()
    out[edge & (label > 0)] = IGNORE_INDEX
    return out


def _write_sample(args: tuple[str, int, int, int]) -> str:
    root, index, size, seed = args
    image, label = render_sample(index, size=size, seed=seed)
    image_id = sample_id(index)
    voc = Path(root)
    Image.fromarray(image).save(voc / "JPEGImages" / f"{image_id}.jpg", quality=92)
    mask = Image.fromarray(label, mode="P")
    mask.putpalette(flat_palette())
    mask.save(voc / "SegmentationClass" / f"{image_id}.png")
    return image_id


def sample_id(index: int) -> str:
    return f"synth_{index:06d}"


def write_synthvoc(out: str | os.PathLike, *, images: int = 1000, size: int = 128, seed: int = 0,
                   val_fraction: float = 0.2, workers: int | None = None,
                   progress: bool = False) -> Path:
    """Write SynthVOC under ``out/VOCdevkit/VOC2012`` in the Pascal VOC layout.

    Files: ``JPEGImages/*.jpg``, ``SegmentationClass/*.png`` (palette PNG, values
    0..20 and 255) and ``ImageSets/Segmentation/{train,val,trainval,train_aug}.txt``;
    ``synthvoc.json`` records how it was made. Returns the ``VOC2012`` folder.
    """
    if images < 2:
        raise ValueError(f"images must be at least 2 (one train, one val), got {images}")
    if size < 32:
        raise ValueError(f"size must be at least 32 pixels, got {size}")
    voc = Path(out) / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    jobs = [(str(voc), index, size, seed) for index in range(images)]
    workers = workers or min(os.cpu_count() or 1, 8)
    ids = list(progress_bar(_run_jobs(jobs, workers), progress, total=images, desc="SynthVOC", unit="img"))
    order = np.random.default_rng(seed).permutation(images)
    num_val = max(1, int(round(images * val_fraction)))
    val = sorted(ids[i] for i in order[:num_val])
    train = sorted(ids[i] for i in order[num_val:])
    lists = {"train": train, "train_aug": train, "val": val, "trainval": sorted(ids)}
    for name, members in lists.items():
        (voc / "ImageSets" / "Segmentation" / f"{name}.txt").write_text("\n".join(members) + "\n")
    meta = {"generator": "SynthVOC", "version": GENERATOR_VERSION, "images": images,
            "size": size, "seed": seed, "train": len(train), "val": len(val)}
    (voc / "synthvoc.json").write_text(json.dumps(meta, indent=2) + "\n")
    return voc


def _run_jobs(jobs, workers):
    if workers <= 1 or len(jobs) < 64:
        yield from map(_write_sample, jobs)
        return
    with ProcessPoolExecutor(workers) as pool:
        yield from pool.map(_write_sample, jobs, chunksize=16)


def write_class_frames(root: str | os.PathLike, class_id: int, count: int, dest: str | os.PathLike, *,
                       split: str | None = None, min_share: float = 0.01) -> Path:
    """Frames for an on-device update: ``count`` images of the SynthVOC (or VOC) tree under
    ``root`` that show ``class_id`` on at least ``min_share`` of their pixels, copied to
    ``dest/images`` with masks in ``dest/masks`` that mark that class only (VOC palette,
    void kept), as an operator would label them. ``split``: an ImageSets list, or every mask."""
    import shutil

    voc = next(Path(root).glob("**/VOC2012"), Path(root))
    dest = Path(dest)
    if split is not None:
        ids = (voc / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()
    else:
        ids = sorted(p.stem for p in (voc / "SegmentationClass").glob("*.png"))
    (dest / "images").mkdir(parents=True, exist_ok=True)
    (dest / "masks").mkdir(exist_ok=True)
    found = 0
    for image_id in ids:
        mask = np.array(Image.open(voc / "SegmentationClass" / f"{image_id}.png"))
        if (mask == class_id).mean() < min_share:
            continue
        marked = np.where(mask == class_id, class_id, np.where(mask == IGNORE_INDEX, IGNORE_INDEX, 0))
        operator = Image.fromarray(marked.astype(np.uint8), mode="P")
        operator.putpalette(flat_palette())
        operator.save(dest / "masks" / f"{image_id}.png")
        shutil.copyfile(voc / "JPEGImages" / f"{image_id}.jpg", dest / "images" / f"{image_id}.jpg")
        found += 1
        if found == count:
            return dest
    from reminder.errors import ReminderError

    raise ReminderError(f"{voc} has only {found} images showing class {class_id} on {100 * min_share:g}% of "
                        f"their pixels; {count} were asked for")
