"""The one training loop (reminder/train/engine.py) that server steps and both on-device
update paths run through."""

from pathlib import Path

import pytest
import torch

from reminder.train.engine import Engine, TrainingDiverged

PACKAGE = Path(__file__).resolve().parents[2] / "reminder"


def _engine(model, **options):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return Engine(model, optimizer, lr=0.1, total=options.pop("total", 5), lr_power=0.9, step=3, **options)


def _terms(model):
    def terms_of(batch):
        loss = (model(batch) ** 2).mean()
        return {"loss": loss, "square": loss}
    return terms_of


def test_it_runs_the_batches_with_a_poly_lr_and_records_means():
    model = torch.nn.Linear(4, 1)
    seen = []

    class History:
        def iteration(self, epoch, iteration, lr, values):
            seen.append((iteration, round(lr, 6), set(values)))

    engine = _engine(model, history=History())
    outcome = engine.run(iter(torch.randn(100, 2, 4)), _terms(model))
    assert outcome.iterations == 5 and outcome.stopped_by == "iterations"
    assert [s[0] for s in seen] == list(range(5)) and seen[0][2] == {"loss", "square"}
    assert seen[0][1] == 0.1 and seen[-1][1] == round(0.1 * (1 - 4 / 5) ** 0.9, 6)
    assert set(outcome.means()) == {"loss", "square"}


def test_the_time_budget_stops_it_after_one_iteration_at_least():
    """A budget spent before training (a feature cache on a busy machine) still trains one
    step: new classes that never trained tie with the class they were copied from."""
    model = torch.nn.Linear(4, 1)
    before = model.weight.detach().clone()
    outcome = _engine(model, time_budget=0.0).run(iter(torch.randn(10, 2, 4)), _terms(model))
    assert outcome.iterations == 1 and outcome.stopped_by == "time budget"
    assert not torch.equal(model.weight, before)


def test_a_term_that_is_not_finite_stops_it_naming_the_term():
    model = torch.nn.Linear(4, 1)

    def terms_of(batch):
        return {"loss": model(batch).mean() * float("nan"), "kd": torch.tensor(float("inf"))}

    with pytest.raises(TrainingDiverged, match="step 3, iteration 0: loss term 'kd' is inf"):
        _engine(model).run(iter(torch.randn(3, 2, 4)), terms_of)


def test_clipping_caps_the_gradient_norm():
    model = torch.nn.Linear(4, 1, bias=False)
    engine = _engine(model, clip_norm=1e-3, total=1)
    engine.run([torch.full((2, 4), 100.0)], _terms(model))
    assert float(model.weight.grad.norm()) <= 1e-3 * 1.001


def test_no_other_module_steps_an_optimizer():
    """Backward for training, clipping and optimizer steps happen in the engine only (the
    Fisher estimate's backward, in train/step.py, trains nothing)."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if any(s in line for s in ("optimizer.step()", "clip_grad_norm_", ".backward()")):
                found.append(f"{path.relative_to(PACKAGE)}:{number}")
    assert sorted({f.split(":")[0] for f in found}) == ["train/engine.py", "train/step.py"]
    assert sum(f.startswith("train/step.py") for f in found) == 1  # estimate_fisher's
