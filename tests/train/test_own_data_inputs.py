"""Own data of other shapes: non-square frames (the deploy size) and file names that are not UTF-8."""

import json

from test_own_data import QUICK, _cli

from reminder.data.warehouse import write_warehouse


def test_a_bundle_runs_at_the_data_frame_size(tmp_path):
    """Non-square inspection frames: the bundle's input is their size (not the square crop),
    unless --deploy-size says otherwise; the manifest records both sizes."""
    result = _cli("data", "inspection", "--out", tmp_path / "data", "--train", 6, "--val", 3, "--size", "64x96",
                  "--quiet")
    assert result.exit_code == 0 and "6 train + 3 val frames of 96x64 px" in result.output, result.output
    result = _cli("train", "--data", tmp_path / "data" / "data.yaml", "--out", tmp_path / "run", "--backbone", "tiny",
                  "--max-iterations", "2", "--batch-size", "2", "--crop-size", "48", "--workers", "0", "--quiet")
    assert result.exit_code == 0, result.output
    result = _cli("export", tmp_path / "run", "--out", tmp_path / "b", "--quiet")
    assert result.exit_code == 0, result.output
    spec = json.loads((tmp_path / "b" / "manifest.json").read_text())["input"]
    assert (spec["height"], spec["width"]) == (64, 96)
    assert spec["sizes"] == {"deploy": [64, 96], "from": "data", "train_crop": 48}
    result = _cli("export", tmp_path / "run", "--out", tmp_path / "b2", "--deploy-size", "48x80", "--quiet")
    assert result.exit_code == 0, result.output
    spec = json.loads((tmp_path / "b2" / "manifest.json").read_text())["input"]
    assert (spec["height"], spec["width"], spec["sizes"]["from"]) == (48, 80, "given")
    result = _cli("export", tmp_path / "run", "--out", tmp_path / "b3", "--deploy-size", "8x8000")
    assert result.exit_code == 2 and "deploy size 8x8000 is outside" in result.output


def test_a_file_name_that_is_not_utf8_is_checked_and_trained(tmp_path):
    import os

    root = write_warehouse(tmp_path / "d", train=6, val=3, size=48).parent
    images, masks = os.fsencode(root / "images" / "train"), os.fsencode(root / "masks" / "train")
    first = sorted(os.listdir(images))[0].rsplit(b".", 1)[0]
    os.rename(os.path.join(images, first + b".jpg"), os.path.join(images, first + b"\xff.jpg"))
    os.rename(os.path.join(masks, first + b".png"), os.path.join(masks, first + b"\xff.png"))
    result = _cli("data", "check", root / "data.yaml", "--quiet")
    assert result.exit_code == 0 and "0 error(s)" in result.output, result.output
    result = _cli("train", "--data", root / "data.yaml", "--out", tmp_path / "run", *QUICK)
    assert result.exit_code == 0, result.output
