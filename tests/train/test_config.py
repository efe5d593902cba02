"""Presets follow the reference launch scripts (their --batch_size is per GPU)."""

import pytest

from reminder.errors import ReminderError
from reminder.train.config import resolve_config


@pytest.mark.parametrize("dataset, setting, method, batch, lr_next", [
    ("voc", "15-1", "reminder", 16, 0.001),     # reminder_15-1.sh: 1 GPU x 16
    ("voc", "15-5s", "reminder", 16, 0.001),    # PLOP's name for 15-1
    ("voc", "15-5", "reminder", 32, 0.001),     # reminder_15-5.sh: 2 GPUs x 16
    ("voc", "19-1", "reminder-kd", 32, 0.001),  # reminder_19-1.sh: 2 GPUs x 16
    ("voc", "10-1", "reminder", 24, 0.001),     # no REMINDER script: plop_10-1.sh, 2 GPUs x 12
    ("voc", "15-1", "plop", 24, 0.001),         # plop_15-1.sh: 2 GPUs x 12
    ("voc", "15-1", "mib", 24, 0.001),          # mib_15-1.sh: 2 GPUs x 12
    ("ade", "100-50", "reminder", 10, 0.0008),  # reminder_100-50.sh
    ("ade", "100-10", "reminder", 10, 0.001),
    ("ade", "50-50", "reminder", 10, 0.001),
    ("ade", "100-50", "plop", 24, 0.001),       # plop_ade_100-50.sh: 2 GPUs x 12
])
def test_presets_are_the_launch_scripts(dataset, setting, method, batch, lr_next):
    config = resolve_config(dataset=dataset, root=".", setting=setting, method=method, out=".")
    assert (config.batch_size, config.lr_next) == (batch, lr_next)
    assert config.pseudo_thresholds == "reference"


def test_a_user_override_wins_and_bad_modes_are_refused():
    assert resolve_config(dataset="voc", root=".", setting="15-1", method="plop", out=".",
                          batch_size=8).batch_size == 8
    with pytest.raises(ReminderError, match="pseudo_thresholds must be"):
        resolve_config(dataset="voc", root=".", setting="15-1", method="plop", out=".", pseudo_thresholds="mean")
