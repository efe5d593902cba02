"""The one training loop: server steps and both on-device update paths run through it.

Each path supplies its own batches (a loader's, the update's frames, or views of cached
backbone features) and the function that turns one batch into the method's loss terms.
The engine does the rest, the same way for all of them: the poly learning rate, the
divergence check (a term that is not finite stops training, naming it), backward with or
without a gradient scaler, gradient clipping, the optimizer step, the running means and
progress bar, the history record, the time budget and the CPU speed check.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
from torch import nn

from reminder.errors import ReminderError


class TrainingDiverged(ReminderError):
    """A loss term became NaN or infinite."""


def poly_lr(base_lr: float, iteration: int, total: int, power: float) -> float:
    return base_lr * (1 - iteration / max(total, 1)) ** power


def check_finite(terms: dict[str, torch.Tensor], step: int, iteration: int) -> None:
    """Stop with the first term (the total last) that is NaN or infinite."""
    named_first = sorted(terms.items(), key=lambda item: item[0] == "loss")
    for name, value in named_first:
        if not torch.isfinite(value).all():
            raise TrainingDiverged(
                f"step {step}, iteration {iteration}: loss term '{name}' is {value.item()}; the step "
                f"was stopped and the previous step's checkpoint is kept (try a lower `lr`)")


def record_terms(sums: dict[str, float], terms: dict[str, torch.Tensor], bar) -> dict[str, float]:
    """Add one iteration's terms to the running sums and show them on the progress bar."""
    values = {name: float(value.detach()) for name, value in terms.items()}
    for name, value in values.items():
        sums[name] = sums.get(name, 0.0) + value
    if bar is not None:
        bar.update(1)
        bar.set_postfix({k: f"{v:.3f}" for k, v in values.items()}, refresh=False)
    return values


@dataclass
class Outcome:
    iterations: int
    stopped_by: str                  # "iterations" or "time budget"
    seconds: float
    sums: dict = field(default_factory=dict)

    def means(self, digits: int | None = None) -> dict[str, float]:
        means = {k: v / max(self.iterations, 1) for k, v in self.sums.items()}
        return means if digits is None else {k: round(v, digits) for k, v in means.items()}


@dataclass
class Engine:
    """SGD over ``model``'s trainable parameters through ``optimizer``, for ``total``
    iterations at most (``time_budget`` seconds at most, when given, but one iteration at
    least), with a poly LR from ``lr``. ``epoch`` is set by the batches' source for the history record; ``on_iteration``
    (the speed check) is called after each iteration with the count done."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    lr: float
    total: int
    lr_power: float
    step: int
    scaler: Any = None
    clip_norm: float | None = None
    time_budget: float | None = None
    bar: Any = None
    history: Any = None
    on_iteration: Callable[[int], None] | None = None
    iteration: int = 0
    epoch: int = 0

    def run(self, batches: Iterable, terms_of: Callable[[Any], dict[str, torch.Tensor]]) -> Outcome:
        """One iteration per batch of ``batches`` until ``total``, the time budget or the end
        of the batches; ``terms_of(batch)`` -> ``{"loss": total, term: value, ...}``."""
        started = time.perf_counter()
        sums: dict[str, float] = {}
        stopped_by = "iterations"
        for batch in batches:
            if self.iteration >= self.total:
                break
            # at least one step, even when the budget ran out before training (a feature cache
            # on a busy machine): untrained new classes tie with the class they were copied from
            if (self.time_budget is not None and self.iteration > 0
                    and time.perf_counter() - started >= self.time_budget):
                stopped_by = "time budget"
                break
            step_lr = poly_lr(self.lr, self.iteration, self.total, self.lr_power)
            for group in self.optimizer.param_groups:
                group["lr"] = step_lr * group.get("lr_factor", 1.0)
            terms = terms_of(batch)
            check_finite(terms, self.step, self.iteration)
            self._update(terms["loss"])
            values = record_terms(sums, terms, self.bar)
            if self.history is not None:
                self.history.iteration(self.epoch, self.iteration, step_lr, values)
            self.iteration += 1
            if self.on_iteration is not None:
                self.on_iteration(self.iteration)
        return Outcome(self.iteration, stopped_by, time.perf_counter() - started, sums)

    def _update(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            if self.clip_norm is not None:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            if self.clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_norm)
            self.optimizer.step()
