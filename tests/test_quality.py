"""The rule that names a class that is not learnt (contracts.quality), on hand-made numbers."""

from reminder.contracts.quality import describe_weak, iou_table, weak_classes


def test_a_class_under_the_floor_is_weak_and_the_median_rule_is_opt_in():
    iou = {"background": 0.95, "road": 0.88, "lane_marking": 0.12, "crack": 0.0, "pothole": None, "manhole": 0.5}
    assert {w["name"] for w in weak_classes(iou)} == {"crack"}  # a thin class at 12 IoU is found, not missed
    weak = {w["name"]: w for w in weak_classes(iou, ratio=1 / 3)}
    # others' median (background left out): lane_marking sees {0.88, 0.0, 0.5} -> 0.5, a third is 0.167
    assert set(weak) == {"lane_marking", "crack"}
    assert "under 10" in weak["crack"]["why"] and "under 0.33 of the other classes' median (50.0)" in weak[
        "lane_marking"]["why"]
    assert "pothole" not in weak  # not in the evaluation data: not judged
    assert weak_classes(iou, among=["road", "manhole"]) == []
    assert [w["name"] for w in weak_classes({"debris": 0.02}, background="")] == ["debris"]


def test_the_warning_names_the_class_its_share_and_the_knobs():
    weak = weak_classes({"background": 0.9, "crack": 0.0})
    [line] = describe_weak(weak, where="validation", pixel_share={"crack": 0.0031})
    assert line.startswith("WARNING: class 'crack' is not learnt") and "0.31% of the labelled pixels" in line
    assert "`head` deeplabv3plus" in line and "`class_weights` sqrt" in line and "docs/own-data.md" in line
    table = iou_table({"background": 0.9, "crack": 0.0}, weak)
    assert table[1].endswith("<- not learnt") and "90.0" in table[0]
