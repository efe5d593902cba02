"""Pascal VOC 2012 (with the augmented labels) in the layouts people actually have.

Accepted ``root`` layouts, looked up in this order:

1. The MiB / PLOP layout: ``root/list/{train_aug,val}.txt`` holding
   ``/JPEGImages/x.jpg /SegmentationClassAug/x.png`` pairs, images under
   ``root/VOCdevkit/VOC2012`` and ``SegmentationClassAug/`` beside ``VOCdevkit/``.
2. The VOC devkit: ``root`` is ``VOC2012``, ``VOCdevkit`` or their parent; images in
   ``JPEGImages``; masks in ``SegmentationClassAug`` (in ``VOC2012`` or beside
   ``VOCdevkit``), else ``SegmentationClass``; split lists ``train_aug.txt`` / ``val.txt``
   in ``VOC2012``, ``ImageSets/Segmentation`` or ``root``.

SynthVOC (``reminder data synth``) is written in layout 2.
"""

from __future__ import annotations

from pathlib import Path

from reminder.data.samples import Sample, require_dir
from reminder.errors import ReminderError

SPLIT_FILES = {"train": ("train_aug", "train"), "val": ("val",), "trainval": ("trainval",)}


def find_voc2012(root: Path) -> Path:
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    raise ReminderError(
        f"Pascal VOC root {root}: folder JPEGImages is missing (looked in {root}, "
        f"{root / 'VOC2012'} and {root / 'VOCdevkit' / 'VOC2012'})")


def _split_names(split: str) -> tuple[str, ...]:
    if split not in SPLIT_FILES:
        raise ReminderError(f"unknown VOC split {split!r}; expected one of {', '.join(SPLIT_FILES)}")
    return SPLIT_FILES[split]


def _read_list(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


def _mib_layout(root: Path, split: str) -> list[Sample] | None:
    lists = root / "list"
    if not lists.is_dir():
        return None
    for name in _split_names(split):
        path = lists / f"{name}.txt"
        if path.is_file():
            break
    else:
        return None
    voc2012 = find_voc2012(root)
    samples = []
    for fields in _read_list(path):
        if len(fields) != 2:
            raise ReminderError(f"{path}: expected 'image mask' pairs, got {' '.join(fields)!r}")
        image, mask = (field.lstrip("/") for field in fields)
        mask_path = root / mask
        if not mask_path.exists():
            mask_path = voc2012 / mask
        samples.append(Sample(Path(image).stem, voc2012 / image, mask_path))
    return samples


def _mask_dir(root: Path, voc2012: Path) -> Path:
    for candidate in (voc2012 / "SegmentationClassAug", voc2012.parent.parent / "SegmentationClassAug",
                      root / "SegmentationClassAug", voc2012 / "SegmentationClass"):
        if candidate.is_dir():
            return candidate
    raise ReminderError(
        f"Pascal VOC root {root}: folder SegmentationClassAug (or SegmentationClass) is missing "
        f"in {voc2012}")


def voc_samples(root: str | Path, split: str = "train") -> list[Sample]:
    """The image/mask pairs of a VOC split (``train`` reads ``train_aug`` when present)."""
    root = require_dir(Path(root), "Pascal VOC root")
    samples = _mib_layout(root, split)
    if samples is not None:
        return samples
    voc2012 = find_voc2012(root)
    mask_dir = _mask_dir(root, voc2012)
    list_dirs = (voc2012, voc2012 / "ImageSets" / "Segmentation", root)
    candidates = [d / f"{name}.txt" for name in _split_names(split) for d in list_dirs]
    path = next((c for c in candidates if c.is_file()), None)
    if path is None:
        raise ReminderError(
            f"Pascal VOC root {root}: split list {candidates[0].name} is missing "
            f"(looked in {', '.join(str(d) for d in list_dirs)})")
    samples = []
    for fields in _read_list(path):
        image_id = Path(fields[0]).stem
        samples.append(Sample(image_id, voc2012 / "JPEGImages" / f"{image_id}.jpg",
                              mask_dir / f"{image_id}.png"))
    return samples
