"""ADE20k SceneParsing (ADEChallengeData2016): 150 classes, label 0 is "other".

Layout: ``root`` is ``ADEChallengeData2016`` or its parent, with
``images/{training,validation}/*.jpg`` and ``annotations/{training,validation}/*.png``.
"""

from __future__ import annotations

from pathlib import Path

from reminder.data.samples import Sample, require_dir
from reminder.errors import ReminderError

SPLIT_FOLDERS = {"train": "training", "val": "validation"}


def find_ade_root(root: Path) -> Path:
    for candidate in (root, root / "ADEChallengeData2016"):
        if (candidate / "images").is_dir() or (candidate / "annotations").is_dir():
            return candidate
    raise ReminderError(
        f"ADE20k root {root}: folder images is missing (looked in {root} and "
        f"{root / 'ADEChallengeData2016'})")


def ade_samples(root: str | Path, split: str = "train") -> list[Sample]:
    """The image/mask pairs of an ADE20k split (``train`` or ``val``), sorted by id."""
    if split not in SPLIT_FOLDERS:
        raise ReminderError(f"unknown ADE20k split {split!r}; expected train or val")
    base = find_ade_root(require_dir(Path(root), "ADE20k root"))
    folder = SPLIT_FOLDERS[split]
    images = require_dir(base / "images" / folder, "ADE20k root")
    masks = require_dir(base / "annotations" / folder, "ADE20k root")
    samples = []
    for image in sorted(images.glob("*.jpg")):
        mask = masks / f"{image.stem}.png"
        if not mask.is_file():
            raise ReminderError(f"ADE20k: annotation {mask} is missing for image {image}")
        samples.append(Sample(image.stem, image, mask))
    return samples
