"""``reminder data check``: what a dataset YAML's files hold, and what is wrong with them.

Per split: every class's pixel and image counts; classes without any image; mask values
that are no class (named, with the file); images whose mask is missing or of another size.
A sheet of examples (image, mask in the class colours, legend) shows the labels as they
will be read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from reminder.data.custom import DataYaml
from reminder.data.samples import Sample, open_image, shown
from reminder.errors import ReminderError
from reminder.progress import progress as progress_bar


@dataclass
class SplitReport:
    images: int = 0
    pixels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    image_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    ignored_pixels: int = 0


@dataclass
class CheckReport:
    data: DataYaml
    splits: dict[str, SplitReport]
    errors: list[str]
    warnings: list[str]
    examples: list[Sample]

    def to_json(self) -> dict:
        names = self.data.names
        return {"data": str(self.data.source), "classes": list(names), "errors": self.errors,
                "warnings": self.warnings,
                "splits": {split: {"images": r.images, "ignored_pixels": r.ignored_pixels,
                                   "classes": {n: {"pixels": int(r.pixels[i]), "images": int(r.image_counts[i])}
                                               for i, n in enumerate(names)}}
                           for split, r in self.splits.items()}}


def check_data(data: DataYaml, *, progress: bool = False, examples: int = 8) -> CheckReport:
    """Read every image header and mask of the train and val splits."""
    from PIL import UnidentifiedImageError

    reader = data.mask_reader()
    errors: list[str] = []
    splits: dict[str, SplitReport] = {}
    shown: list[Sample] = []
    for split in ("train", "val"):
        try:
            samples = data.samples(split)
        except ReminderError as error:
            errors.append(str(error))
            continue
        report = SplitReport(len(samples), np.zeros(data.num_classes, np.int64), np.zeros(data.num_classes, np.int64))
        for sample in progress_bar(samples, progress, desc=f"check {split}", unit="image"):
            if not sample.mask.is_file():
                errors.append(f"{sample.image}: its mask {sample.mask} is missing")
                continue
            try:
                with open_image(sample.image) as image:
                    size = image.size
                ids, problems = reader.decode(sample.mask)
            except (OSError, UnidentifiedImageError, SyntaxError) as error:
                errors.append(f"{sample.image}: cannot decode: {error}")
                continue
            except ReminderError as error:
                errors.append(str(error))
                continue
            errors += [f"{sample.mask}: {problem}" for problem in problems]
            if ids.shape != (size[1], size[0]):
                errors.append(f"{sample.mask} is {ids.shape[1]}x{ids.shape[0]} but its image {sample.image} is "
                              f"{size[0]}x{size[1]}")
            counts = np.bincount(ids.ravel(), minlength=256)
            report.pixels += counts[:data.num_classes]
            report.image_counts += counts[:data.num_classes] > 0
            report.ignored_pixels += int(counts[255])
            if split == "train" and len(shown) < examples and not problems:
                shown.append(sample)
        splits[split] = report
    warnings = list(data.notes)
    for split, report in splits.items():
        absent = [name for i, name in enumerate(data.names) if i and report.image_counts[i] == 0]
        if absent:
            warnings.append(f"{split}: no image holds {', '.join(absent)}")
    return CheckReport(data, splits, errors, warnings, shown)


def format_report(report: CheckReport) -> str:
    data = report.data
    lines = [f"{data.source}: {data.num_classes} classes, masks '{data.mask_format}', root {data.root}"]
    splits = list(report.splits)
    header = f"{'id':>3}  {'class':<20}" + "".join(f"{s + ' images':>16}{s + ' pixels %':>16}" for s in splits)
    lines += ["", header]
    for i, name in enumerate(data.names):
        row = f"{i:>3}  {name:<20}"
        for split in splits:
            r = report.splits[split]
            share = 100 * r.pixels[i] / max(1, r.pixels.sum())
            row += f"{int(r.image_counts[i]):>16}{share:>16.2f}"
        lines.append(row)
    lines.append("")
    lines += [f"{split}: {r.images} images, {r.ignored_pixels} ignored pixels" for split, r in report.splits.items()]
    lines += [f"warning: {w}" for w in report.warnings]
    shown = report.errors[:20]
    lines += [f"error: {e}" for e in shown]
    if len(report.errors) > len(shown):
        lines.append(f"... and {len(report.errors) - len(shown)} more errors")
    lines.append(f"{len(report.errors)} error(s), {len(report.warnings)} warning(s)")
    return "\n".join(lines)


def write_sheet(report: CheckReport, path: str | Path) -> Path | None:
    """A PNG grid of example images and their masks in the class colours, with a legend."""
    if not report.examples:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from reminder.data.samples import read_image

    data, reader = report.data, report.data.mask_reader()
    palette = np.zeros((256, 3), np.uint8)
    palette[:data.num_classes] = data.colors
    palette[255] = (255, 255, 255)
    rows = len(report.examples)
    fig, axes = plt.subplots(rows, 2, figsize=(6, 2.6 * rows), squeeze=False)
    present: set[int] = set()
    for row, sample in enumerate(report.examples):
        ids = reader(sample.mask)
        present.update(int(v) for v in np.unique(ids) if v != 255)
        axes[row, 0].imshow(read_image(sample.image))
        axes[row, 1].imshow(palette[ids])
        axes[row, 0].set_title(shown(sample.id), fontsize=7)
        for ax in axes[row]:
            ax.axis("off")
    handles = [Patch(color=np.array(data.colors[i]) / 255, label=f"{i} {data.names[i]}") for i in sorted(present)]
    fig.legend(handles=handles, loc="lower center", ncol=min(4, len(handles)), fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
