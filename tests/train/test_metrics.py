import math

import pytest
import torch

from reminder.train.metrics import ConfusionMatrix, average_over_steps, continual_miou


def test_confusion_matrix_and_iou_by_hand():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 3]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 3, 0]])
    cm = ConfusionMatrix(4).update(pred, target)
    assert cm.matrix.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [1, 0, 0, 0]]
    # class 0: tp 1, union 1 + 2 + 3 - 1 = ... row sum 2, col sum 3 -> 2 + 3 - 1 = 4
    assert cm.iou().tolist() == pytest.approx([1 / 4, 2 / 3, 1 / 2, 0.0])
    assert cm.pixel_accuracy() == pytest.approx(4 / 7)


def test_absent_class_is_nan_and_skipped():
    cm = ConfusionMatrix(3).update(torch.tensor([0, 1]), torch.tensor([0, 1]))
    iou = cm.iou()
    assert iou[:2].tolist() == [1.0, 1.0] and math.isnan(iou[2])
    assert continual_miou(iou, num_old=2, num_seen=3)["all"] == 1.0


def test_old_new_all_avg_by_hand():
    iou = [0.9, 0.6, 0.3, 0.5, 0.1]  # background, 2 old classes, 2 new classes
    summary = continual_miou(iou, num_old=3, num_seen=5)
    assert summary["old"] == pytest.approx(0.6)
    assert summary["new"] == pytest.approx(0.3)
    assert summary["all"] == pytest.approx(0.48)
    assert math.isnan(continual_miou(iou, num_old=3, num_seen=3)["new"])
    assert average_over_steps([0.7, 0.48]) == pytest.approx(0.59)


def test_update_accumulates_and_checks_inputs():
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([0, 1]), torch.tensor([0, 1])).update(torch.tensor([1]), torch.tensor([0]))
    assert cm.matrix.tolist() == [[1, 1], [0, 1]]
    with pytest.raises(ValueError, match="target has class 5"):
        cm.update(torch.tensor([0]), torch.tensor([5]))
    with pytest.raises(ValueError, match="differs from target"):
        cm.update(torch.tensor([0, 1]), torch.tensor([0]))
