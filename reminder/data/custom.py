"""A dataset of your own, named by one YAML file (Ultralytics' dataset YAML, masks for labels).

::

    path: warehouse          # the root, relative to this file (default: its folder)
    train: images/train      # an image folder under the root, a list file, or a list of either
    val: images/val
    names: {0: background, 1: forklift, 2: pallet, 3: person, 4: shelf}
    colors: {forklift: [250, 200, 0]}   # optional, name -> RGB; the others get distinct colours
    ignore: 255              # optional: the mask value of pixels to ignore
    mask_format: index       # index (grey/palette PNG of ids, the default) or color (RGB via colors)

The mask of ``ROOT/images/train/a.jpg`` is ``ROOT/masks/train/a.png`` (the ``images``
folder component becomes ``masks``, the extension ``.png``); Pascal-VOC-style exports
(``JPEGImages`` -> ``SegmentationClass``) work the same way. A list file holds one image
per line: a path under the root, or a bare name looked up in ``JPEGImages`` or ``images``.

The mask exports of labelling tools: ``labelmap: labelmap.txt`` (CVAT's and Pascal VOC's
``name:R,G,B::`` lines, background first) gives the names and colours and reads the masks
by colour; ``load_data`` also takes such an export's folder directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from reminder.contracts.classes import VOID_COLOR, ClassTable, check_class_name, decode_colors  # noqa: F401
from reminder.data.classes import IGNORE_INDEX
from reminder.data.samples import Sample, open_image
from reminder.errors import ReminderError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
MASK_FORMATS = ("index", "color")
CARVED_VAL_SHARE = 0.2
_MASK_FOLDERS = {"images": "masks", "JPEGImages": "SegmentationClass"}


@dataclass(frozen=True)
class MaskReader:
    """Decodes a mask file to ``(H, W) uint8`` class ids, ignored pixels 255 (picklable)."""

    num_classes: int
    colors: tuple[tuple[int, int, int], ...] | None = None  # None: the PNG holds ids
    ignore: int = IGNORE_INDEX

    def decode(self, path: Path) -> tuple[np.ndarray, list[str]]:
        """(ids, problems): the values that are no class, described, instead of an error."""
        from PIL import UnidentifiedImageError

        try:
            with open_image(path, "mask") as image:
                if self.colors is None:
                    if image.mode not in ("P", "L", "I", "I;16"):
                        return np.zeros(image.size[::-1], np.uint8), [
                            f"mode {image.mode}: expected a palette or grey PNG of class ids (mask_format: index)"]
                    raw = np.array(image)
                else:
                    raw = np.array(image.convert("RGB"))
        except (OSError, UnidentifiedImageError, SyntaxError) as error:
            raise ReminderError(f"cannot decode mask {path}: {error}") from None
        return self._index(raw) if self.colors is None else self._color(raw)

    def __call__(self, path: Path) -> np.ndarray:
        ids, problems = self.decode(Path(path))
        if problems:
            raise ReminderError(f"mask {path} has {problems[0]}")
        return ids

    def _index(self, raw: np.ndarray) -> tuple[np.ndarray, list[str]]:
        values = np.unique(raw)
        bad = [int(v) for v in values if v >= self.num_classes and v != self.ignore]
        ids = np.where(raw == self.ignore, IGNORE_INDEX, raw)
        ids = np.where(ids >= self.num_classes, IGNORE_INDEX, ids).astype(np.uint8)
        return ids, [f"value {v}, which is no class (0..{self.num_classes - 1}, ignore {self.ignore})" for v in bad]

    def _color(self, rgb: np.ndarray) -> tuple[np.ndarray, list[str]]:
        ids, unknown = decode_colors(rgb, self.colors)
        return ids, [f"colour {r},{g},{b}, which is no class colour" for r, g, b in unknown]


@dataclass(frozen=True)
class DataYaml:
    """A user's dataset: where its splits are and what its classes are called."""

    source: Path
    root: Path
    splits: dict = field(hash=False)  # "train"/"val" -> list of folder or list-file paths under root
    names: tuple[str, ...] = ()
    colors: tuple[tuple[int, int, int], ...] = ()
    ignore: int = IGNORE_INDEX
    mask_format: str = "index"
    # a share of the train list carved out as val (a labelling-tool export with one list only)
    carve_val: float = 0.0
    notes: tuple[str, ...] = ()  # warnings for whoever loads it (data check, training)

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def mask_reader(self) -> MaskReader:
        return MaskReader(self.num_classes, self.colors if self.mask_format == "color" else None, self.ignore)

    def samples(self, split: str) -> list[Sample]:
        """The image/mask pairs of ``split``; a missing mask is an error naming it."""
        samples, seen = [], set()
        for entry in self.splits[split]:
            folder = under_root(self.root, self.root / entry, f"{self.source}: {split}")
            for image in _list_images(self.root, folder, self.source):
                if image in seen:
                    continue
                seen.add(image)
                samples.append(Sample(_sample_id(self.root, image), image, mask_path(self.root, image)))
        if self.carve_val:  # the same images on both sides otherwise: a stable share by id goes to val
            samples = [s for s in samples if (_share(s.id) < self.carve_val) == (split == "val")]
        if not samples:
            raise ReminderError(f"{self.source}: split {split!r} has no images ({', '.join(self.splits[split])})")
        return samples

    def to_json(self) -> dict:
        return {"source": str(self.source), "root": str(self.root), "names": list(self.names),
                "colors": [list(c) for c in self.colors], "mask_format": self.mask_format, "ignore": self.ignore}


def _share(sample_id: str) -> float:
    """A stable number in [0, 1) for an image id (the same on every machine and run)."""
    import hashlib

    return int.from_bytes(hashlib.sha256(sample_id.encode("utf-8", "surrogateescape")).digest()[:8], "big") / 2 ** 64


def mask_path(root: Path, image: Path) -> Path:
    """``ROOT/images/x/a.jpg`` -> ``ROOT/masks/x/a.png`` (``JPEGImages`` -> ``SegmentationClass``)."""
    try:
        parts = list(image.relative_to(root).parts)
    except ValueError:
        parts = list(image.parts)
    for i, part in enumerate(parts[:-1]):
        if part in _MASK_FOLDERS:
            parts[i] = _MASK_FOLDERS[part]
            return (root.joinpath(*parts)).with_suffix(".png")
    raise ReminderError(f"image {image} is not in an 'images' (or 'JPEGImages') folder, so its mask cannot be "
                        f"found; put images in ROOT/images/... and masks in ROOT/masks/...")


def _sample_id(root: Path, image: Path) -> str:
    try:
        return image.relative_to(root).with_suffix("").as_posix()
    except ValueError:
        return image.with_suffix("").as_posix()


def _list_images(root: Path, entry: Path, source: Path) -> list[Path]:
    if entry.is_dir():
        return sorted(p for p in entry.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if entry.is_file() and entry.suffix == ".txt":
        images = []
        for number, line in enumerate(entry.read_text().splitlines(), start=1):
            name = line.strip().split()[0] if line.strip() else ""
            if name and not name.startswith("#"):
                images.append(_resolve_listed(root, name, f"{entry}:{number}"))
        return images
    raise ReminderError(f"{source}: {entry} is neither an image folder nor a .txt list of images")


def under_root(root: Path, path: Path, where: str) -> Path:
    """``path`` if it names something under ``root`` (lexically: ``..`` and absolute paths
    that leave it are refused; a symbolic link inside the root may point anywhere)."""
    import os

    base, target = os.path.normpath(root), os.path.normpath(path)
    if target != base and not target.startswith(base.rstrip(os.sep) + os.sep):
        raise ReminderError(f"{where}: {path} is outside the dataset root {root}; splits and list files name "
                            f"paths under it (link a folder into the root to use it)")
    return path


def _resolve_listed(root: Path, name: str, where: str) -> Path:
    path = under_root(root, root / name.lstrip("/"), where)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        if path.is_file():
            return path
        raise ReminderError(f"{where}: image {path} is missing")
    for folder in ("JPEGImages", "images"):
        for suffix in IMAGE_SUFFIXES:
            candidate = under_root(root, root / folder / f"{name}{suffix}", where)
            if candidate.is_file():
                return candidate
    raise ReminderError(f"{where}: no image {name!r} under {root} (looked in JPEGImages/ and images/)")


def read_labelmap(path: Path) -> tuple[tuple[str, ...], tuple[tuple[int, int, int], ...]]:
    """CVAT / Pascal VOC ``labelmap.txt``: ``name:R,G,B:parts:actions`` per class, background first."""
    names, colors = [], []
    path = Path(path)
    if not path.is_file():
        raise ReminderError(f"labelmap {path} " + ("is a folder, not a file" if path.is_dir() else "does not exist"))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ReminderError(f"labelmap {path} is not UTF-8 text (byte {error.start}); save it as UTF-8") from None
    except OSError as error:
        raise ReminderError(f"cannot read labelmap {path}: {error.strerror}") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, rest = line.partition(":")
        try:
            rgb = tuple(int(v) for v in rest.split(":")[0].split(","))
        except ValueError:
            rgb = ()
        if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
            raise ReminderError(f"{path}:{number}: expected name:R,G,B::, got {line.strip()!r}")
        names.append(check_class_name(name.strip(), f"{path}:{number}"))
        colors.append(rgb)
    if not names:
        raise ReminderError(f"{path} lists no class")
    return tuple(names), tuple(colors)


def _parse_names(value, source: Path) -> tuple[str, ...]:
    if isinstance(value, list):
        value = dict(enumerate(value))
    if not isinstance(value, dict) or not value:
        raise ReminderError(f"{source}: 'names' must map class ids to names, e.g. {{0: background, 1: forklift}}")
    try:
        ids = sorted(int(k) for k in value)
    except (TypeError, ValueError):
        raise ReminderError(f"{source}: 'names' has a key that is no class id: {sorted(map(str, value))}") from None
    if ids != list(range(len(ids))):
        missing = sorted(set(range(max(ids) + 1)) - set(ids))
        raise ReminderError(f"{source}: class ids must be 0..{len(ids) - 1} without gaps (0 is background); "
                            f"{'missing ' + str(missing[0]) if missing else 'got ' + str(ids)}")
    if len(ids) < 2:
        raise ReminderError(f"{source}: 'names' needs background (0) and at least one class")
    by_id = {int(k): v for k, v in value.items()}
    names = tuple(check_class_name(by_id[i], f"{source}: class {i}") for i in ids)
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ReminderError(f"{source}: class name {duplicates[0]!r} is used twice")
    if IGNORE_INDEX < len(names):
        raise ReminderError(f"{source}: at most {IGNORE_INDEX} classes, got {len(names)}")
    return names


def _parse_colors(value, names: tuple[str, ...], source: Path) -> tuple[tuple[int, int, int], ...]:
    value = value or {}
    if not isinstance(value, dict):
        raise ReminderError(f"{source}: 'colors' must map class names to [R, G, B]")
    return ClassTable.from_names(names, value, where=str(source)).colors


def _unique_keys_loader(yaml):
    """PyYAML's safe loader, refusing a key given twice in one mapping. The plain loader keeps
    the last value, so ``1: shelf`` then ``1: pallet`` silently lost shelf and shifted ids."""

    class UniqueKeys(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"the key {key!r} is given twice (line {key_node.start_mark.line + 1})",
                        key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return UniqueKeys


def load_data(path: str | Path) -> DataYaml:
    """Read and check a dataset YAML (or a labelling tool's export folder with ``labelmap.txt``)."""
    path = Path(path)
    if path.is_dir():
        return _labelmap_folder(path)
    if not path.is_file():
        raise ReminderError(f"dataset file {path} is missing")
    import yaml

    try:
        spec = yaml.load(path.read_text(), Loader=_unique_keys_loader(yaml))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ReminderError(f"{path} is not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(spec, dict):
        raise ReminderError(f"{path} must be a YAML mapping with path, train, val and names")
    unknown = sorted(set(spec) - {"path", "train", "val", "test", "names", "colors", "ignore", "mask_format",
                                  "labelmap", "download"})
    if unknown:
        raise ReminderError(f"{path}: unknown key {unknown[0]!r} (expected path, train, val, names, colors, "
                            f"ignore, mask_format, labelmap)")
    root = (path.parent / str(spec.get("path") or ".")).resolve()
    if not root.is_dir():
        raise ReminderError(f"{path}: dataset root {root} is missing")
    splits = {}
    for split in ("train", "val"):
        value = spec.get(split)
        entries = value if isinstance(value, list) else [value] if value else []
        if not entries or not all(isinstance(e, str) and e for e in entries):
            raise ReminderError(f"{path}: {split!r} must name an image folder or list file under {root}")
        splits[split] = entries
    mask_format = spec.get("mask_format", "color" if spec.get("labelmap") else "index")
    if mask_format not in MASK_FORMATS:
        raise ReminderError(f"{path}: mask_format must be index or color, got {mask_format!r}")
    if spec.get("labelmap"):
        if "names" in spec or "colors" in spec:
            raise ReminderError(f"{path}: give either labelmap or names/colors, not both")
        names, colors = read_labelmap(root / str(spec["labelmap"]))
        ClassTable(names, colors, where=str(path))  # two classes of one colour are refused
    elif "names" not in spec:
        raise ReminderError(f"{path} has no 'names': list the classes, e.g. names: {{0: background, 1: forklift}}")
    else:
        names = _parse_names(spec["names"], path)
        colors = _parse_colors(spec.get("colors"), names, path)
    if mask_format == "color" and "labelmap" not in spec and not spec.get("colors"):
        raise ReminderError(f"{path}: mask_format color needs 'colors' (name -> [R, G, B]) or a labelmap")
    ignore = spec.get("ignore", IGNORE_INDEX)
    if not isinstance(ignore, int) or not len(names) <= ignore <= 255:
        raise ReminderError(f"{path}: ignore must be a mask value in {len(names)}..255 (no class id), got {ignore!r}")
    return DataYaml(path.resolve(), root, splits, names, colors, ignore, mask_format)


def _labelmap_folder(folder: Path) -> DataYaml:
    labelmap = folder / "labelmap.txt"
    if not labelmap.is_file():
        raise ReminderError(f"{folder} is a folder without labelmap.txt; give a dataset YAML instead")
    names, colors = read_labelmap(labelmap)
    lists = folder / "ImageSets" / "Segmentation"
    splits = {}
    for split in ("train", "val"):
        for candidate in (f"{split}.txt", "default.txt"):
            if (lists / candidate).is_file():
                splits[split] = [str((lists / candidate).relative_to(folder))]
                break
        else:
            raise ReminderError(f"{folder}: {lists / (split + '.txt')} is missing; write a dataset YAML that names "
                                f"the train and val images")
    carve, notes = 0.0, ()
    if splits["train"] == splits["val"]:  # CVAT's default.txt: a task without subsets
        carve = CARVED_VAL_SHARE
        notes = (f"{folder} has one image list ({splits['train'][0]}) and no train/val subsets: "
                 f"{100 * carve:.0f}% of its images (chosen by id, the same every time) are held out as val, so "
                 f"training is not scored on the images it learns from",)
    return DataYaml(labelmap.resolve(), folder.resolve(), splits, names, colors, IGNORE_INDEX, "color", carve, notes)
