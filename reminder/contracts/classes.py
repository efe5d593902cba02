"""The class table: the ids, names and colours of a model's classes, and what a mask's
value means. One shape from the dataset YAML to the device:

- a YAML's ``names`` and ``colors`` or a labelling tool's ``labelmap.txt``
  (:meth:`ClassTable.from_names`);
- a run's ``meta.json`` (``classes``/``colors`` lists, the table's fields as they are);
- a bundle manifest's ``classes`` (``[{id, name, color}]``, :meth:`ClassTable.from_manifest`
  and :meth:`ClassTable.to_manifest`);
- an update's new classes (:meth:`ClassTable.extend`), checked against the parent by the
  fleet and the Triton repository as well (:meth:`ClassTable.check_extends`).

It validates once, when it is built: at least one class, ids consecutive from 0, names
unique and safe (letters, digits, spaces and ``._+-``, at most 64 characters, no path, no
newline), one colour per class, and no two classes with the same colour. Missing colours
are completed by one rule (:func:`complete_colors`). Colour masks are decoded by one
decoder (:func:`decode_colors`): a colour of no class is ignored (255) and reported, never
taken as background.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from reminder.errors import ReminderError

IGNORE_INDEX = 255
VOID_COLOR = (224, 224, 192)  # Pascal VOC's and CVAT's "difficult / void" colour: ignored in colour masks
_CLASS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._+-]{0,63}")

RGB = tuple[int, int, int]

VOC_CLASSES: tuple[str, ...] = (
    "background",
    "aeroplane", "bicycle", "bird", "boat", "bottle",
    "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person",
    "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)


def check_class_name(value, where: str) -> str:
    """``value`` if it may name a class, else an error naming ``where`` it came from."""
    if not isinstance(value, str) or not _CLASS_NAME.fullmatch(value) or value != value.strip():
        shown = repr(value) if not isinstance(value, str) or len(value) <= 80 else repr(value[:80] + "...")
        raise ReminderError(f"{where}: class name {shown} is not allowed: use letters, digits, spaces and . _ + - "
                            f"(starting with a letter or digit, at most 64 characters)")
    return value


def voc_palette(num_colors: int = 256) -> list[RGB]:
    """The Pascal VOC colour map (bit-interleaved label index), as used in its PNG masks."""
    palette = []
    for label in range(num_colors):
        r = g = b = 0
        value = label
        for shift in range(7, -1, -1):
            r |= ((value >> 0) & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        palette.append((r, g, b))
    return palette


def distinct_colors(used, count: int) -> list[RGB]:
    """``count`` colours, each as far (Euclidean RGB distance) from every colour in ``used``
    and from the ones picked before it as a grid of 8 levels per channel allows (black and
    white excluded: background and borders)."""
    levels = [0, 36, 73, 109, 146, 182, 219, 255]
    grid = [(r, g, b) for r in levels for g in levels for b in levels if (r, g, b) not in ((0, 0, 0), (255, 255, 255))]
    taken = [tuple(int(v) for v in c) for c in used] or [(0, 0, 0)]
    picked: list[RGB] = []
    for _ in range(count):
        best = max(grid, key=lambda c: (min(sum((a - b) ** 2 for a, b in zip(c, t)) for t in taken), c))
        picked.append(best)
        taken.append(best)
    return picked


def _rgb(value, where: str) -> RGB:
    try:
        rgb = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        rgb = ()
    if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb) or any(isinstance(v, bool) for v in value):
        raise ReminderError(f"{where}: colour {value!r} is not [R, G, B] with values 0..255")
    return rgb  # type: ignore[return-value]


def complete_colors(names: Sequence[str], given: Mapping[str, Sequence[int]], where: str,
                    taken: Iterable[RGB] = ()) -> tuple[RGB, ...]:
    """Every class's colour, by the one rule: the given ones; else black for class 0 when
    ``taken`` is empty (a new table's background); else VOC's colour for a VOC name; else
    one far from every colour in use (and from VOC's void colour)."""
    taken = [tuple(c) for c in taken]
    colors: dict[str, RGB] = {name: _rgb(rgb, f"{where}: class {name!r}") for name, rgb in given.items()}
    used = taken + list(colors.values())
    palette = voc_palette()
    for index, name in enumerate(names):
        if name in colors:
            continue
        candidate = (0, 0, 0) if index == 0 and not taken else (
            palette[VOC_CLASSES.index(name)] if name in VOC_CLASSES else None)
        if candidate is not None and candidate not in used:
            colors[name] = candidate
            used.append(candidate)
    missing = [n for n in names if n not in colors]
    for name, rgb in zip(missing, distinct_colors(used + [VOID_COLOR], len(missing))):
        colors[name] = rgb
    return tuple(colors[n] for n in names)


@dataclass(frozen=True)
class ClassTable:
    """A model's classes: ``names[i]`` and ``colors[i]`` are class ``i``'s; ``ignore`` is the
    mask value of pixels that no loss or metric counts."""

    names: tuple[str, ...]
    colors: tuple[RGB, ...]
    ignore: int = IGNORE_INDEX
    where: str = "class table"

    def __post_init__(self):
        if not self.names:
            raise ReminderError(f"{self.where}: no class")
        names = tuple(check_class_name(n, self.where) for n in self.names)
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ReminderError(f"{self.where}: class name {duplicates[0]!r} is used twice")
        if len(self.colors) != len(names):
            raise ReminderError(f"{self.where}: {len(names)} classes but {len(self.colors)} colours")
        colors = tuple(_rgb(c, f"{self.where}: class {n!r}") for n, c in zip(names, self.colors))
        for i, rgb in enumerate(colors):
            if colors.index(rgb) != i:
                raise ReminderError(f"{self.where}: classes {names[colors.index(rgb)]!r} and {names[i]!r} have the "
                                    f"same colour {','.join(map(str, rgb))}")
        if not len(names) <= self.ignore <= IGNORE_INDEX:
            raise ReminderError(f"{self.where}: ignore must be a mask value in {len(names)}..255 (no class id), "
                                f"got {self.ignore!r}")
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "colors", colors)

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def from_names(cls, names: Sequence[str], colors: Mapping[str, Sequence[int]] | None = None, *,
                   ignore: int = IGNORE_INDEX, where: str = "class table") -> "ClassTable":
        """Names in id order, with the colours given by name, the others completed."""
        for name in colors or {}:
            if name not in names:
                raise ReminderError(f"{where}: 'colors' names {name!r}, which is not in 'names'")
        names = tuple(check_class_name(n, where) for n in names)
        return cls(names, complete_colors(names, colors or {}, where), ignore, where)

    @classmethod
    def from_manifest(cls, entries, *, where: str = "manifest") -> "ClassTable":
        """A manifest's ``[{id, name, color}]``: ids must run 0, 1, 2, ... in order."""
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise ReminderError(f"{where}: 'classes' must be a list of {{id, name, color}}")
        ids = [e.get("id") for e in entries]
        if ids != list(range(len(entries))):
            raise ReminderError(f"{where}: class ids must be 0..{len(entries) - 1} in order, got {ids[:8]}")
        return cls(tuple(e.get("name") for e in entries), tuple(tuple(e.get("color") or ()) for e in entries),
                   where=where)

    def to_manifest(self) -> list[dict]:
        return [{"id": i, "name": n, "color": list(c)} for i, (n, c) in enumerate(zip(self.names, self.colors))]

    def extend(self, new: Sequence[tuple[str, Sequence[int] | None]], *, where: str | None = None) -> "ClassTable":
        """This table with the classes ``new`` (name, colour or None) after its own. A name
        already here, or a given colour already used, is an error; missing colours are
        completed by the one rule, away from every colour in use."""
        where = where or self.where
        given: dict[str, Sequence[int]] = {}
        for name, color in new:
            check_class_name(name, where)
            if name in self.names or name in given:
                raise ReminderError(f"{where}: class {name!r} already exists; choose another name")
            if color is not None:
                rgb = _rgb(color, f"{where}: class {name!r}")
                owner = self.names[self.colors.index(rgb)] if rgb in self.colors else None
                if owner is not None:
                    raise ReminderError(f"{where}: colour {','.join(map(str, rgb))} of class {name!r} is already "
                                        f"used by {owner!r}")
                given[name] = rgb
        names = [n for n, _ in new]
        added = complete_colors(names, given, where, taken=self.colors)
        return ClassTable(self.names + tuple(names), self.colors + added, self.ignore, where)

    def check_extends(self, old: "ClassTable", *, what: str = "the new classes") -> tuple[str, ...]:
        """The names this table adds after ``old``'s; an error when it drops, renames or
        reorders one of them."""
        if self.names[:len(old.names)] != old.names:
            raise ReminderError(f"{what} do not extend {', '.join(old.names)}: the first {len(old.names)} classes "
                                f"are {', '.join(self.names[:len(old.names)])}")
        return self.names[len(old.names):]


def decode_colors(rgb: np.ndarray, colors: Sequence[RGB]) -> tuple[np.ndarray, list[RGB]]:
    """A colour mask ``(H, W, 3)`` -> class ids ``(H, W) uint8``, and the colours that are no
    class's. VOC's void colour, and every unknown colour, become 255 (ignored): an unknown
    colour is a labelling mistake or an anti-aliased edge, not background."""
    codes = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    table = {(int(r) << 16) | (int(g) << 8) | int(b): i for i, (r, g, b) in enumerate(colors)}
    table.setdefault((VOID_COLOR[0] << 16) | (VOID_COLOR[1] << 8) | VOID_COLOR[2], IGNORE_INDEX)
    values, inverse = np.unique(codes, return_inverse=True)
    lut = np.array([table.get(int(v), IGNORE_INDEX) for v in values], np.uint8)
    unknown = [(int(v) >> 16, (int(v) >> 8) & 255, int(v) & 255) for v in values if int(v) not in table]
    return lut[inverse.reshape(codes.shape)], unknown
