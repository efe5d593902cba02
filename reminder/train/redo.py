"""``increment --redo``: train a run's last step again with other options, keeping the old
step until the new one is complete.

The new step trains in a staging run beside the old one, ``RUN/.redo-step<t>``, whose
earlier steps are hard links to the run's (copies where the file system has none). When it
completes, its folder takes the old step's place, and the run's ``config.json``,
``results.json`` and the step's bundle (``--export-each-step``) follow. An interrupted redo
leaves the run as it was; running it again resumes the staging run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Callable

from reminder.errors import ReminderError
from reminder.io import atomic_write_text, folder_lock


def _link_tree(source: Path, target: Path) -> None:
    """``target`` as a tree of hard links to ``source``'s files (copies across file systems)."""
    for folder, _, files in os.walk(source):
        destination = target / Path(folder).relative_to(source)
        destination.mkdir(parents=True, exist_ok=True)
        for name in files:
            if not (destination / name).exists():
                try:
                    os.link(Path(folder) / name, destination / name)
                except OSError:
                    shutil.copy2(Path(folder) / name, destination / name)


def redo_last_step(run: str | Path, data: str | Path, *, method: str | None = None, progress: bool = True,
                   log: Callable[[str], None] = print, on_step=None, **options) -> dict:
    """Train ``run``'s last step (the one ``data`` added) again with ``options``; the run's
    ``results.json`` after the swap."""
    from reminder.train.checkpoint import completed_steps
    from reminder.train.config import load_config
    from reminder.train.custom import increment_config
    from reminder.train.results import read_results, write_results
    from reminder.train.run import train_scenario

    run, path = Path(run), str(Path(data).resolve())
    saved, done = load_config(run), completed_steps(run)
    if saved.dataset != "custom" or not done or done[-1] == 0 or path not in saved.data \
            or saved.data.index(path) != done[-1]:
        last = saved.data[done[-1]] if saved.dataset == "custom" and done else "none"
        raise ReminderError(f"`redo` trains the last complete increment of {run} again, and {data} is not it (the "
                            f"last is {last}); step 0 is trained again in a new run folder")
    step = done[-1]
    with folder_lock(run, what="run", log=log):
        staging = run / f".redo-step{step}"
        for earlier in range(step):
            _link_tree(run / f"step{earlier}", staging / f"step{earlier}")
        base = dataclasses.replace(saved, data=saved.data[:step], increments=saved.increments[:step - 1],
                                   out=str(staging))
        if not (staging / "config.json").is_file():
            atomic_write_text(staging / "config.json", json.dumps(base.to_json(), indent=2))
        config = increment_config(staging, data, method=method, log=log, **options)
        if config is None:  # the staging step completed before an interruption: only the swap is left
            config = load_config(staging)
        else:
            train_scenario(config, progress=progress, log=log, on_step=on_step)
        old = run / f".redone-step{step}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(run / f"step{step}", old)
        os.replace(staging / f"step{step}", run / f"step{step}")
        atomic_write_text(run / "config.json", json.dumps(dataclasses.replace(config, out=str(run)).to_json(),
                                                         indent=2))
        if (staging / "bundles" / f"step{step}").is_dir():
            (run / "bundles").mkdir(exist_ok=True)
            shutil.rmtree(run / "bundles" / f"step{step}", ignore_errors=True)
            os.replace(staging / "bundles" / f"step{step}", run / "bundles" / f"step{step}")
        write_results(run)
        shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)
        log(f"step {step} of {run} was trained again; the previous one is replaced")
        return read_results(run)
