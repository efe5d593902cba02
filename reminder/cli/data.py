"""``reminder data``: SynthVOC and continual splits."""

from __future__ import annotations

import json
from pathlib import Path

import click

from reminder.cli.common import parse_order


@click.group()
def data() -> None:
    """Generate SynthVOC and inspect continual splits of VOC, ADE20k or SynthVOC."""


@data.command("synth")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder to write VOCdevkit/ into.")
@click.option("--images", type=int, default=1000, show_default=True, help="Number of images (train + val).")
@click.option("--size", type=int, default=128, show_default=True, help="Image side in pixels.")
@click.option("--seed", type=int, default=0, show_default=True, help="Generator seed.")
@click.option("--workers", type=int, default=None, help="Processes (default: CPU count).")
def data_synth(out: Path, images: int, size: int, seed: int, workers: int | None) -> None:
    """Write SynthVOC in the Pascal VOC 2012 layout (JPEG images, palette PNG masks, split lists)."""
    from reminder.data.synthetic import write_synthvoc

    voc = write_synthvoc(out, images=images, size=size, seed=seed, workers=workers, progress=True)
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
def data_split(dataset: str, root: Path, setting: str, mode: str, order: str | None,
               cache_dir: Path | None, as_json: bool) -> None:
    """Show which images and classes each step of a continual setting uses."""
    from reminder.data.splits import format_split_table, load_scenario

    scenario_data = load_scenario(dataset, root, setting, mode=mode, order=parse_order(order),
                                  cache_dir=cache_dir, progress=not as_json)
    if as_json:
        click.echo(json.dumps(scenario_data.as_json()))
    else:
        click.echo(format_split_table(scenario_data))
