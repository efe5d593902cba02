"""``reminder data``: SynthVOC and continual splits."""

from __future__ import annotations

import json
from pathlib import Path

import click

from reminder.cli.common import parse_order


@click.group()
def data() -> None:
    """Check your own dataset, generate SynthVOC or warehouse scenes, inspect continual splits."""


@data.command("synth")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder to write VOCdevkit/ into.")
@click.option("--images", type=int, default=1000, show_default=True, help="Number of images (train + val).")
@click.option("--size", type=int, default=128, show_default=True, help="Image side in pixels.")
@click.option("--seed", type=int, default=0, show_default=True, help="Generator seed.")
@click.option("--workers", type=int, default=None, help="Processes (default: CPU count).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def data_synth(out: Path, images: int, size: int, seed: int, workers: int | None, quiet: bool) -> None:
    """Write SynthVOC in the Pascal VOC 2012 layout (JPEG images, palette PNG masks, split lists)."""
    from reminder.data.synthetic import write_synthvoc

    voc = write_synthvoc(out, images=images, size=size, seed=seed, workers=workers, progress=not quiet)
    click.echo(f"SynthVOC: {images} images of {size}x{size} px (seed {seed}) in {voc}")


@data.command("split")
@click.option("--dataset", type=click.Choice(["voc", "ade", "synthvoc"]), required=True)
@click.option("--root", type=click.Path(path_type=Path), required=True, help="Dataset root folder.")
@click.option("--setting", required=True, help="N-M or N-Ms, e.g. 15-1, 15-5s, 100-50.")
@click.option("--mode", type=click.Choice(["overlap", "disjoint"]), default="overlap", show_default=True)
@click.option("--order", default=None, help="Class order, comma-separated ids (default: natural).")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="Where the class index is cached (default: $REMINDER_CACHE or ~/.cache/reminder).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the per-step image ids.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def data_split(dataset: str, root: Path, setting: str, mode: str, order: str | None,
               cache_dir: Path | None, as_json: bool, quiet: bool) -> None:
    """Show which images and classes each step of a continual setting uses."""
    from reminder.data.splits import format_split_table, load_scenario

    scenario_data = load_scenario(dataset, root, setting, mode=mode, order=parse_order(order),
                                  cache_dir=cache_dir, progress=not (as_json or quiet))
    if as_json:
        click.echo(json.dumps(scenario_data.as_json()))
    else:
        click.echo(format_split_table(scenario_data))


@data.command("check")
@click.argument("data_yaml", type=click.Path(path_type=Path))
@click.option("--sheet", type=click.Path(path_type=Path), default=None,
              help="Where to write the PNG sheet of examples [default: beside the YAML, <name>-check.png].")
@click.option("--examples", type=int, default=8, show_default=True, help="Examples on the sheet.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def data_check(data_yaml: Path, sheet: Path | None, examples: int, as_json: bool, quiet: bool) -> None:
    """Check a dataset YAML: class pixel/image counts per split, bad mask values, size mismatches.

    Exits with 1 when an error is found (a value that is no class, a missing mask, a size
    mismatch), so it can gate a pipeline."""
    from reminder.data.check import check_data, format_report, write_sheet
    from reminder.data.custom import load_data

    data = load_data(data_yaml)
    report = check_data(data, progress=not (quiet or as_json), examples=max(0, examples))
    if sheet is None:
        base = data.source if data.source.suffix in (".yaml", ".yml") else data.root / "data"
        sheet = base.with_name(base.stem + "-check.png")
    written = write_sheet(report, sheet) if examples > 0 else None
    if as_json:
        click.echo(json.dumps(report.to_json() | {"sheet": str(written) if written else None}))
    else:
        click.echo(format_report(report))
        if written:
            click.echo(f"examples: {written}")
    if report.errors:
        raise SystemExit(1)


@data.command("warehouse")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Dataset folder to write.")
@click.option("--classes", default="shelf,pallet,forklift,person", show_default=True,
              help="The YAML's classes after background, in id order (of: shelf, pallet, forklift, person, "
                   "cart, cone).")
@click.option("--labelled", default=None, help="Classes labelled in the train masks (default: all); the others "
                                               "drawn are background, as unlabelled objects in real data.")
@click.option("--drawn", default=None, help="Classes the scenes show (default: --classes).")
@click.option("--every-image", default="", help="Classes drawn in every scene.")
@click.option("--train", type=int, default=48, show_default=True, help="Training images.")
@click.option("--val", type=int, default=16, show_default=True, help="Validation images.")
@click.option("--size", type=int, default=96, show_default=True, help="Image side in pixels.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def data_warehouse(out: Path, classes: str, labelled: str | None, drawn: str | None, every_image: str, train: int,
                   val: int, size: int, seed: int, quiet: bool) -> None:
    """Write generated warehouse scenes with their dataset YAML (a small dataset of your own kind)."""
    from reminder.cli.common import parse_list
    from reminder.data.warehouse import write_warehouse

    names = ["background"] + parse_list(classes, "--classes")
    path = write_warehouse(out, names=names, labelled=parse_list(labelled, "--labelled") if labelled else None,
                           drawn=parse_list(drawn, "--drawn") if drawn else None,
                           must=parse_list(every_image, "--every-image") if every_image else (),
                           train=train, val=val, size=size, seed=seed, progress=not quiet)
    click.echo(f"warehouse: {train} train + {val} val images of {size}x{size} px, classes {', '.join(names[1:])}; "
               f"dataset YAML {path}")


@data.command("inspection")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Dataset folder to write.")
@click.option("--classes", default="panel,cable,scratch,screw", show_default=True,
              help="The YAML's classes after background, in id order (of: panel, cable, scratch, screw, rust, "
                   "sticker).")
@click.option("--labelled", default=None, help="Classes labelled in the train masks (default: all); the others "
                                               "drawn are background, as unlabelled objects in real data.")
@click.option("--train", type=int, default=60, show_default=True, help="Training images.")
@click.option("--val", type=int, default=20, show_default=True, help="Validation images.")
@click.option("--size", default="192x320", show_default=True, metavar="HEIGHTxWIDTH", help="Frame size.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def data_inspection(out: Path, classes: str, labelled: str | None, train: int, val: int, size: str, seed: int,
                    quiet: bool) -> None:
    """Write generated inspection frames (thin and small classes: cables, scratches, screws) with their YAML."""
    from reminder.cli.common import parse_list, parse_size
    from reminder.data.inspection import write_inspection

    names = ["background"] + parse_list(classes, "--classes")
    height, width = parse_size(size)
    path = write_inspection(out, names=names, labelled=parse_list(labelled, "--labelled") if labelled else None,
                            train=train, val=val, width=width, height=height, seed=seed, progress=not quiet)
    click.echo(f"inspection: {train} train + {val} val frames of {width}x{height} px, classes "
               f"{', '.join(names[1:])}; dataset YAML {path}")
