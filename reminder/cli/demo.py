"""``reminder demo``: the embedded default, end to end."""

from __future__ import annotations

from pathlib import Path

import click

from reminder.cli.common import parse_list


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/demo"), show_default=True,
              help="Folder for the demo's data, runs, bundles and report (an interrupted demo resumes).")
@click.option("--quick", is_flag=True, help="A smaller, shorter demo (about 2 minutes; what the tests run).")
@click.option("--methods", default="finetune,reminder", show_default=True,
              help="Comma-separated methods to train (reminder required; plop adds a third run).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def demo(out: Path, quick: bool, methods: str, quiet: bool) -> None:
    """The whole product on SynthVOC on this CPU: train 15-1, export, run, update on device, report."""
    from reminder.demo import run_demo

    run_demo(out, quick=quick, methods=parse_list(methods, "--methods"), echo=click.echo, progress=not quiet)
