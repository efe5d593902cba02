"""The labelled frames of an on-device update: class colours, masks, image/mask pairs.

Masks (same file stem as their image, PNG): palette and RGB masks are read by colour
(the bundle's class colours and the new classes' colours) by the class table's one decoder:
VOC's void colour, index 255 and any colour of no class are ignored, and the unknown ones
are reported. Grey masks hold class ids in the new bundle's numbering (old ids, then the
new classes in the order given, 255 ignored).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from reminder.contracts import check_class_name, decode_colors
from reminder.errors import ReminderError
from reminder.runtime.sources import IMAGE_EXTENSIONS



@dataclass(frozen=True)
class NewClass:
    name: str
    color: tuple[int, int, int] | None = None  # default: VOC's colour for a VOC name, else one far from those in use


def parse_class(text: str) -> NewClass:
    """``NAME`` or ``NAME:R,G,B``."""
    name, _, color = text.partition(":")
    name = name.strip()
    if not name:
        raise ReminderError(f"`class` {text!r} has no name")
    check_class_name(name, "`class`")
    if not color:
        return NewClass(name)
    try:
        rgb = tuple(int(v) for v in color.split(","))
    except ValueError:
        rgb = ()
    if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
        raise ReminderError(f"`class` {text!r}: the colour must be R,G,B with values 0..255")
    return NewClass(name, rgb)


@dataclass
class Frame:
    name: str
    image: np.ndarray   # (H, W, 3) uint8 RGB
    labels: np.ndarray  # (H, W) uint8, new numbering, 255 ignored


def class_colors(manifest, new: Sequence[NewClass]) -> list[tuple[str, tuple[int, int, int]]]:
    """(name, colour) for every class of the updated model: the bundle's class table
    extended with the new classes (colours completed by the table's rule; clashes refused)."""
    table = manifest.classes
    table = table.extend([(c.name, c.color) for c in new], where="the new classes")
    return list(zip(table.names, table.colors))


def read_mask(path: Path, colors: list[tuple[int, int, int]], log) -> np.ndarray:
    """A mask file -> class ids in the new numbering (see the module docstring)."""
    from PIL import UnidentifiedImageError

    from reminder.data.samples import open_image

    try:
        with open_image(path, "mask") as image:
            mode = image.mode
            if mode in ("L", "I", "I;16"):
                ids = np.array(image)
                if ids.max(initial=0) > 255 or np.any((ids >= len(colors)) & (ids != 255)):
                    bad = int(ids[(ids >= len(colors)) & (ids != 255)].flat[0])
                    raise ReminderError(f"mask {path} has class id {bad}; the updated model has ids "
                                        f"0..{len(colors) - 1} (and 255 for ignore)")
                return ids.astype(np.uint8)
            rgb = np.array(image.convert("RGB"))
    except (OSError, UnidentifiedImageError, SyntaxError) as error:
        raise ReminderError(f"cannot decode mask {path}: {error}") from None
    labels, unknown = decode_colors(rgb, colors)
    if unknown:
        shown = ", ".join(",".join(map(str, c)) for c in unknown[:3])
        log(f"{path.name}: {len(unknown)} colours of no known class ({shown}) are ignored")
    return labels


def read_frames(images: Path, masks: Path, colors: list[tuple[int, int, int]], new_ids: Sequence[int],
                log: Callable[[str], None] = print) -> list[Frame]:
    """Pairs of image and mask by file stem, each checked (size, values, new-class pixels)."""
    from reminder.data.samples import read_image

    images, masks = Path(images), Path(masks)
    for folder, what in ((images, "`images`"), (masks, "`masks`")):
        if not folder.is_dir():
            raise ReminderError(f"{what} {folder} is not a folder")
    image_files = {p.stem: p for p in sorted(images.iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS}
    mask_files = {p.stem: p for p in sorted(masks.iterdir()) if p.suffix.lower() == ".png"}
    if not image_files:
        raise ReminderError(f"no frames: {images} has no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    missing = sorted(set(image_files) - set(mask_files))
    if missing:
        raise ReminderError(f"image {image_files[missing[0]]} has no mask {masks / (missing[0] + '.png')}")
    extra = sorted(set(mask_files) - set(image_files))
    if extra:
        raise ReminderError(f"mask {mask_files[extra[0]]} has no image of the same name in {images}")
    frames = []
    for stem, image_path in image_files.items():
        image = read_image(image_path)
        labels = read_mask(mask_files[stem], colors, log)
        if labels.shape != image.shape[:2]:
            raise ReminderError(f"mask {mask_files[stem]} is {labels.shape[1]}x{labels.shape[0]} but image "
                                f"{image_path} is {image.shape[1]}x{image.shape[0]}")
        if not np.isin(labels, list(new_ids)).any():
            raise ReminderError(f"mask {mask_files[stem]} has no pixel of the new class(es); label at least "
                                f"one region of them in every frame")
        frames.append(Frame(stem, image, labels))
    return frames


def split_holdout(frames: Sequence[Frame], share: float, seed: int) -> tuple[list[Frame], list[Frame]]:
    """(training frames, held-out frames): ``share`` of them held out when there are 4 or more."""
    order = np.random.default_rng(seed).permutation(len(frames))
    count = round(len(frames) * share) if len(frames) >= 4 else 0
    holdout = [frames[i] for i in sorted(order[:count])]
    return [frames[i] for i in sorted(order[count:])], holdout


class FrameDataset(torch.utils.data.Dataset):
    def __init__(self, frames: Sequence[Frame], transform):
        self.frames, self.transform = list(frames), transform

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, item: int):
        from torchvision import tv_tensors

        frame = self.frames[item]
        image = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(frame.image)).permute(2, 0, 1))
        mask = tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(frame.labels)))
        image, mask = self.transform(image, mask)
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor).long()
