import pytest

from reminder.train.config import resolve_config
from reminder.train.run import train_scenario

QUICK = dict(max_iterations=3, batch_size=4, crop_size=48, workers=0, eval_batch_size=8, epochs=5, epochs_next=5)


def quick_config(root, out, *, setting="15-1", method="reminder", **overrides):
    return resolve_config(dataset="synthvoc", root=root, setting=setting, method=method, out=out,
                          **{**QUICK, **overrides})


@pytest.fixture(scope="session")
def step0_run(synthvoc_root, tmp_path_factory):
    """A finetune 15-5 run whose step 0 other tests reuse through from_step0."""
    out = tmp_path_factory.mktemp("step0_run")
    train_scenario(quick_config(synthvoc_root, out, setting="15-5", method="finetune", max_iterations=6),
                   progress=False, log=lambda m: None)
    return out
