"""Image/mask file pairs and reading them with errors that name the file."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from reminder.errors import ReminderError


@dataclass(frozen=True)
class Sample:
    """One image of a dataset: its id (the file stem), image path and mask path."""

    id: str
    image: Path
    mask: Path


DEFAULT_MAX_PIXELS = 40_000_000  # an 8K frame is 33 MP; REMINDER_MAX_IMAGE_PIXELS changes it
Image.MAX_IMAGE_PIXELS = None  # open_image's check replaces PIL's (a warning, then an error at twice its limit)


def shown(name) -> str:
    """A file name as text that can be printed, plotted and written: bytes that are not
    UTF-8 (a name Python keeps as surrogates) shown as ``\xff`` escapes."""
    return str(name).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def name_bytes(name) -> bytes:
    """A file name's bytes, whatever they are (for hashing)."""
    return str(name).encode("utf-8", "surrogateescape")


def max_pixels() -> int:
    """The largest image (width x height) that is decoded: ``REMINDER_MAX_IMAGE_PIXELS``, else 40 MP."""
    value = os.environ.get("REMINDER_MAX_IMAGE_PIXELS", "")
    try:
        return int(value) if value else DEFAULT_MAX_PIXELS
    except ValueError:
        raise ReminderError(f"REMINDER_MAX_IMAGE_PIXELS must be a whole number of pixels, got {value!r}") from None


@contextlib.contextmanager
def open_image(path: Path, what: str = "image"):
    """``PIL.Image.open`` that refuses, in one line and before decoding anything, a file
    larger than :func:`max_pixels` (a 20000 x 20000 mask was a PIL traceback, and a
    12000 x 12000 one took 7.8 GB to check)."""
    limit = max_pixels()
    with Image.open(path) as image:
        width, height = image.size
        if width * height > limit:
            raise ReminderError(f"{what} {path} is {width}x{height} ({width * height / 1e6:.0f} MP), above the "
                                f"{limit / 1e6:.0f} MP limit; resize it, or raise REMINDER_MAX_IMAGE_PIXELS")
        yield image


def read_image(path: Path) -> np.ndarray:
    """Decode an image file to ``(H, W, 3) uint8`` RGB."""
    try:
        with open_image(path) as image:
            return np.array(image.convert("RGB"))  # writable, for torch.from_numpy
    except (OSError, UnidentifiedImageError, SyntaxError) as error:
        raise ReminderError(f"cannot decode image {path}: {error}") from None


def read_mask(path: Path) -> np.ndarray:
    """Decode a label PNG to ``(H, W) uint8`` class ids (palette indices stay indices)."""
    try:
        with open_image(path, "mask") as image:
            if image.mode not in ("P", "L", "I", "I;16"):
                raise ReminderError(
                    f"mask {path} has image mode {image.mode}; expected a palette or grey PNG of class ids")
            mask = np.array(image)
    except (OSError, UnidentifiedImageError, SyntaxError) as error:
        raise ReminderError(f"cannot decode mask {path}: {error}") from None
    if mask.dtype != np.uint8:
        if mask.max(initial=0) > 255:
            raise ReminderError(f"mask {path} has value {int(mask.max())}, above 255")
        mask = mask.astype(np.uint8)
    return mask


def check_mask_values(mask: np.ndarray, num_classes: int, path: Path) -> np.ndarray:
    """Return the sorted values present; fail naming the file if one is not a class or 255."""
    present = np.flatnonzero(np.bincount(mask.ravel(), minlength=256))
    bad = present[(present >= num_classes) & (present != 255)]
    if bad.size:
        raise ReminderError(
            f"mask {path} has value {int(bad[0])}, outside classes 0..{num_classes - 1} and 255")
    return present


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise ReminderError(f"{what}: folder {path} is missing")
    return path
