import numpy as np
import pytest

from reminder.data.scenario import make_scenario, parse_setting
from reminder.errors import ReminderError

# The hand-checkable index: image -> classes present (background and 255 included).
INDEX = {"a": (0, 1, 2), "b": (0, 3), "c": (0, 1, 4), "d": (0, 4, 255), "e": (0,)}


@pytest.mark.parametrize("setting, total, expected", [
    ("15-1", 20, [15, 1, 1, 1, 1, 1]),
    ("15-5s", 20, [15, 1, 1, 1, 1, 1]),
    ("15-5", 20, [15, 5]),
    ("19-1", 20, [19, 1]),
    ("10-1", 20, [10] + [1] * 10),
    ("100-50", 150, [100, 50]),
    ("50-50", 150, [50, 50, 50]),
    ("100-10", 150, [100] + [10] * 5),
    ("100-5", 150, [100] + [5] * 10),
    ("offline", 20, [20]),
])
def test_settings(setting, total, expected):
    assert parse_setting(setting, total) == expected


@pytest.mark.parametrize("setting, message", [
    ("15-6", "need 21 classes, but the dataset has 20"),
    ("15-4", "cannot split evenly"),
    ("15-4s", r"15 \+ 4 single-class steps is 19 classes"),
    ("20-1", "between 1 and 19"),
    ("15_1", "not of the form"),
    ("15-0", "at least one class"),
])
def test_impossible_settings_say_why(setting, message):
    with pytest.raises(ReminderError, match=message):
        parse_setting(setting, 20)


def test_overlap_and_disjoint_membership():
    overlap = make_scenario("2-1", num_classes=5)
    assert overlap.steps == ((1, 2), (3,), (4,))
    assert [overlap.train_ids(t, INDEX) for t in range(3)] == [["a", "c"], ["b"], ["c", "d"]]
    disjoint = make_scenario("2-1", num_classes=5, mode="disjoint")
    # c holds future class 4 at step 0 and is left out there; d's 255 does not matter
    assert [disjoint.train_ids(t, INDEX) for t in range(3)] == [["a"], ["b"], ["c", "d"]]
    assert [overlap.test_ids(t, INDEX) for t in range(3)] == [["a", "c"], ["a", "b", "c"], ["a", "b", "c", "d"]]


def test_label_tables():
    scenario = make_scenario("2-1", num_classes=5)
    labels = np.array([0, 1, 2, 3, 4, 255], np.uint8)
    assert scenario.train_lut(0)[labels].tolist() == [0, 1, 2, 0, 0, 255]
    assert scenario.train_lut(1)[labels].tolist() == [0, 0, 0, 3, 0, 255]
    assert scenario.test_lut(1)[labels].tolist() == [0, 1, 2, 3, 0, 255]
    assert scenario.test_lut(1, "mib")[labels].tolist() == [0, 1, 2, 3, 255, 255]
    assert scenario.test_lut(2)[labels].tolist() == [0, 1, 2, 3, 4, 255]
    assert scenario.classes_per_step() == [3, 1, 1]
    assert [scenario.num_seen(t) for t in range(3)] == [3, 4, 5]


def test_custom_order_maps_to_model_channels():
    scenario = make_scenario("2-1", num_classes=5, order=[3, 1, 4, 2])
    assert scenario.steps == ((3, 1), (4,), (2,))
    labels = np.array([0, 1, 2, 3, 4, 255], np.uint8)
    assert scenario.model_index().tolist() == [0, 2, 4, 1, 3]
    assert scenario.train_lut(0)[labels].tolist() == [0, 2, 0, 1, 0, 255]
    assert scenario.test_lut(1)[labels].tolist() == [0, 2, 0, 1, 3, 255]
    assert scenario.train_ids(0, INDEX) == ["a", "b", "c"]


@pytest.mark.parametrize("order, message", [
    ([1, 1, 2, 3], "repeats class 1"),
    ([1, 2, 3], "missing class 4"),
    ([1, 2, 3, 9], "outside 1..4"),
])
def test_bad_orders(order, message):
    with pytest.raises(ReminderError, match=message):
        make_scenario("2-1", num_classes=5, order=order)


def test_bad_step_and_protocol():
    scenario = make_scenario("2-1", num_classes=5)
    with pytest.raises(ReminderError, match="step 3 is outside 0..2"):
        scenario.train_lut(3)
    with pytest.raises(ReminderError, match="unknown test protocol"):
        scenario.test_lut(0, "plop")


def test_a_validation_split_is_carved_from_the_training_images_only(synthvoc_root):
    from reminder.data.splits import load_scenario

    full = load_scenario("synthvoc", synthvoc_root, "15-5")
    carved = load_scenario("synthvoc", synthvoc_root, "15-5", validation=0.2)
    train_ids = {s.id for s in full.train_samples}
    held = {s.id for s in carved.test_samples}
    assert held and held <= train_ids and not held & {s.id for s in carved.train_samples}
    assert {s.id for s in carved.train_samples} | held == train_ids
    assert 0.1 < len(held) / len(train_ids) < 0.3
    assert held == {s.id for s in load_scenario("synthvoc", synthvoc_root, "15-5", validation=0.2).test_samples}
    assert set(carved.test_ids(1)) <= held
