import pytest

from conftest import write_ade
from reminder.data.ade import ade_samples
from reminder.data.splits import load_scenario
from reminder.errors import ReminderError

TRAIN = {"ADE_train_00000001": [1, 2], "ADE_train_00000002": [120], "ADE_train_00000003": [150, 3]}
VAL = {"ADE_val_00000001": [2], "ADE_val_00000002": [101]}


def test_ade_layout_and_split(tmp_path, cache_dir):
    root = write_ade(tmp_path, TRAIN, VAL)
    assert [s.id for s in ade_samples(root, "train")] == list(TRAIN)
    assert [s.id for s in ade_samples(root / "ADEChallengeData2016", "val")] == list(VAL)
    data = load_scenario("ade", root, "100-50", cache_dir=cache_dir)
    split = data.as_json()
    assert [s["train"] for s in split["steps"]] == [
        ["ADE_train_00000001", "ADE_train_00000003"], ["ADE_train_00000002", "ADE_train_00000003"]]
    assert split["steps"][1]["test"] == ["ADE_val_00000001", "ADE_val_00000002"]


@pytest.mark.parametrize("other_as_background, other_label", [(True, 0), (False, 255)])
def test_other_class_protocol(tmp_path, cache_dir, other_as_background, other_label):
    root = write_ade(tmp_path, TRAIN, VAL)
    data = load_scenario("ade", root, "100-50", cache_dir=cache_dir, other_as_background=other_as_background)
    _, labels = data.train_dataset(0)[0]
    assert labels[0, 0].item() == other_label  # row 0 is "other" in the written masks
    assert {1, 2} <= set(labels.unique().tolist())


def test_missing_annotation_is_named(tmp_path):
    root = write_ade(tmp_path, TRAIN, VAL)
    missing = root / "ADEChallengeData2016" / "annotations" / "training" / "ADE_train_00000002.png"
    missing.unlink()
    with pytest.raises(ReminderError, match=f"annotation {missing} is missing"):
        ade_samples(root, "train")


def test_not_an_ade_root(tmp_path):
    with pytest.raises(ReminderError, match="folder images is missing"):
        ade_samples(tmp_path, "train")
