"""Similarity-driven forgetting: which old classes count as similar, and their IoU drop."""

import numpy as np
import pytest

from reminder.train.forgetting import prototype_neighbours, similarity_forgetting

NAMES = ["background", "cat", "dog", "car", "chair", "cow"]


def test_prototype_neighbours_are_the_nearest_by_cosine():
    bank = np.array([[1, 1, 1], [1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0, 0, 1], [1, 0.05, 0]], dtype=np.float32)
    assert prototype_neighbours(bank, [1, 2, 3, 4], [5], 2) == [1, 2]


def test_drops_of_similar_and_other_old_classes():
    steps = [{"step": 0, "num_seen": 5, "iou": {"background": 0.9, "cat": 0.8, "dog": 0.7, "car": 0.6, "chair": 0.5}},
             {"step": 1, "num_seen": 6, "iou": {"background": 0.9, "cat": 0.4, "dog": 0.5, "car": 0.6, "chair": 0.4,
                                                "cow": 0.3}}]
    bank = np.array([[1, 1, 1], [1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0, 0, 1], [1, 0.05, 0]], dtype=np.float32)
    groups = {"cat": "animal", "dog": "animal", "cow": "animal", "car": "vehicle", "chair": "indoor"}
    [record] = similarity_forgetting(steps, NAMES, prototypes=bank, groups=groups, k=2)
    assert record["new"] == ["cow"]
    assert record["prototypes"]["similar"] == ["cat", "dog"] and record["group"]["similar"] == ["cat", "dog"]
    assert record["prototypes"]["similar_drop"] == pytest.approx((0.4 + 0.2) / 2)
    assert record["prototypes"]["other_drop"] == pytest.approx((0.0 + 0.1) / 2)


def test_results_and_report_carry_the_measure(reminder_run, tmp_path):
    import json

    from reminder.train.report import write_report

    results = json.loads((reminder_run / "results.json").read_text())
    [record] = results["similarity_forgetting"]
    assert record["step"] == 1 and len(record["prototypes"]["similar"]) == 3
    assert {"similar", "similar_drop", "other_drop"} <= set(record["group"])
    report = write_report([reminder_run], tmp_path / "report").read_text()
    assert "## Similarity-driven forgetting" in report and "similarity_forgetting.png" in report
    assert (tmp_path / "report" / "similarity_forgetting.png").stat().st_size > 1000
