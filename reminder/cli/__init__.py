"""The ``reminder`` command line: one module per command group, each a thin layer over the
library's functions. This module assembles them."""

from __future__ import annotations

import click

from reminder.cli import data, demo, export, fleet, run, train, triton, update
from reminder.cli.common import ReminderGroup


@click.group(cls=ReminderGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="reminder")
def main() -> None:
    """Continual semantic segmentation (REMINDER, CVPR 2022) from training to devices."""


for command in (demo.demo, data.data, train.train, train.increment, train.compare, train.eval_, train.report,
                export.export, export.bundle,
                run.run_command, run.bench_command, update.update_command, fleet.fleet, triton.triton):
    main.add_command(command)

__all__ = ["main"]
