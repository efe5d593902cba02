"""What a step's training did, iteration by iteration: ``RUN/step<t>/history.csv``.

One row per iteration (epoch, iteration, learning rate, every loss term) and one per
validation (epoch, iteration, ``val_miou``). A step that is trained again (steps restart
from their beginning when resumed) starts its file again. The same values go to
TensorBoard (``RUN/tensorboard/step<t>``, needs ``tensorboard``) and Weights & Biases
(needs ``wandb``) when asked for.
"""

from __future__ import annotations

import csv
from pathlib import Path

from reminder.errors import ReminderError

FIXED = ("epoch", "iteration", "lr")


class History:
    """Appends rows to ``history.csv`` (flushed every row: a killed run keeps what it did)."""

    def __init__(self, step_dir: Path, step: int, *, tensorboard: bool = False, wandb: bool = False,
                 run_name: str = "run"):
        step_dir.mkdir(parents=True, exist_ok=True)
        self.path = step_dir / "history.csv"
        self.step = step
        self._file = open(self.path, "w", newline="")
        self._writer: csv.writer | None = None
        self._columns: list[str] = []
        self._board = self._wandb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ReminderError("`tensorboard` needs the tensorboard package: "
                                    "pip install 'reminder[tensorboard]'") from None
            self._board = SummaryWriter(str(step_dir.parent / "tensorboard" / f"step{step}"))
        if wandb:
            try:
                import wandb as wandb_module
            except ImportError:
                raise ReminderError("`wandb` needs the wandb package: pip install 'reminder[wandb]'") from None
            self._wandb = wandb_module.init(project="reminder", name=f"{run_name}-step{step}", dir=str(step_dir),
                                            reinit=True)

    def _row(self, values: dict) -> None:
        if self._writer is None:
            self._columns = list(FIXED) + [k for k in values if k not in FIXED and k != "val_miou"] + ["val_miou"]
            self._writer = csv.writer(self._file)
            self._writer.writerow(self._columns)
        self._writer.writerow(["" if values.get(c) is None else _fmt(values[c]) for c in self._columns])
        self._file.flush()

    def iteration(self, epoch: int, iteration: int, lr: float, terms: dict[str, float]) -> None:
        self._row({"epoch": epoch, "iteration": iteration, "lr": lr, **terms})
        for name, value in (("lr", lr), *terms.items()):
            if self._board is not None:
                self._board.add_scalar(f"train/{name}", value, iteration)
        if self._wandb is not None:
            self._wandb.log({"lr": lr, **{f"train/{k}": v for k, v in terms.items()}}, step=iteration)

    def validation(self, epoch: int, iteration: int, miou: float) -> None:
        self._row({"epoch": epoch, "iteration": iteration, "val_miou": miou})
        if self._board is not None:
            self._board.add_scalar("val/miou", miou, iteration)
        if self._wandb is not None:
            self._wandb.log({"val/miou": miou}, step=iteration)

    def close(self) -> None:
        self._file.close()
        if self._board is not None:
            self._board.close()
        if self._wandb is not None:
            self._wandb.finish()


def _fmt(value) -> str:
    return str(value) if isinstance(value, int) else f"{float(value):.6g}"


def read_history(step_dir: Path) -> dict[str, list]:
    """``history.csv`` as columns (empty cells None); {} when the step has none."""
    path = Path(step_dir) / "history.csv"
    if not path.is_file():
        return {}
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return {}
    columns = {name: [] for name in rows[0]}
    for row in rows[1:]:
        for name, cell in zip(rows[0], row):
            columns[name].append(float(cell) if cell else None)
    return columns
