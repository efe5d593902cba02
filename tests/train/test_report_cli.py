import json

from click.testing import CliRunner
from PIL import Image

from reminder.cli import main

QUICK = ["--max-iterations", "2", "--batch-size", "4", "--crop-size", "48", "--workers", "0",
         "--epochs", "3", "--epochs-next", "3", "--set", "eval_batch_size=8", "--quiet"]


def _train(root, out, method, *extra):
    result = CliRunner().invoke(main, ["train", "--dataset", "synthvoc", "--root", str(root), "--setting", "15-5",
                                       "--method", method, "--out", str(out), *QUICK, *extra])
    assert result.exit_code == 0, result.output
    return result


def test_train_eval_report_from_the_cli(synthvoc_root, tmp_path):
    result = _train(synthvoc_root, tmp_path / "reminder", "reminder")
    assert "reminder 15-5: final all-mIoU" in result.output
    _train(synthvoc_root, tmp_path / "plop", "plop", "--from-step0", str(tmp_path / "reminder" / "step0"))
    config = json.loads((tmp_path / "reminder" / "config.json").read_text())
    assert config["backbone"] == "tiny" and config["crop_size"] == 48 and config["eval_batch_size"] == 8

    evaluated = CliRunner().invoke(main, ["eval", str(tmp_path / "reminder"), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    stored = json.loads((tmp_path / "reminder" / "results.json").read_text())["steps"]
    assert [round(m["all"], 6) for m in json.loads(evaluated.output)] == [round(s["all"], 6) for s in stored]

    report_dir = tmp_path / "report"
    reported = CliRunner().invoke(main, ["report", str(tmp_path / "reminder"), str(tmp_path / "plop"),
                                         "--out", str(report_dir)])
    assert reported.exit_code == 0, reported.output
    text = (report_dir / "report.md").read_text()
    for method in ("reminder", "plop"):
        last = json.loads((tmp_path / method / "results.json").read_text())["steps"][-1]
        row = next(line for line in text.splitlines() if line.startswith(f"| {method} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1:5] == [f"{100 * last[k]:.2f}" for k in ("old", "new", "all", "avg")]
    for png in ("miou_per_step.png", "forgetting_reminder.png", "confusion_plop.png"):
        with Image.open(report_dir / png) as image:
            assert image.size[0] > 300 and image.format == "PNG"


def test_mixed_precision_and_channels_last_on_cpu(synthvoc_root, tmp_path):
    result = _train(synthvoc_root, tmp_path, "reminder", "--amp", "bf16", "--channels-last")
    steps = json.loads((tmp_path / "results.json").read_text())["steps"]
    assert all(0 <= s["all"] <= 1 for s in steps) and "csw_kd" in steps[1]["train"]
    assert "final all-mIoU" in result.output


def test_bad_training_input_is_one_line(synthvoc_root, tmp_path):
    cases = [
        (["--setting", "15-6"], "need 21 classes"),
        (["--setting", "15-5", "--set", "no_such_option=1"], "unknown training option 'no_such_option'"),
        (["--setting", "15-5", "--eval-size", "big"], "--eval-size must be"),
        (["--setting", "15-5", "--batch-size", "1"], "batch norm needs 2"),
    ]
    for extra, message in cases:
        result = CliRunner().invoke(main, ["train", "--dataset", "synthvoc", "--root", str(synthvoc_root),
                                           "--out", str(tmp_path / "x"), "--quiet", *extra])
        assert result.exit_code == 2, result.output
        assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_joint_row_is_split_by_each_setting():
    from reminder.train.report import table1

    incremental = {"dataset": "synthvoc", "setting": "2-1", "method": "plop",
                   "steps": [{"classes": ["a", "b"]}, {"old": 0.5, "new": 0.25, "all": 0.4, "avg": 0.45}]}
    joint = {"dataset": "synthvoc", "setting": "offline", "method": "joint",
             "steps": [{"iou": {"background": 1.0, "a": 0.5, "b": 0.0, "c": 0.5}}]}
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")[1:]]
            for line in table1([incremental, joint]).splitlines()[2:]}
    assert rows["plop"] == ["50.00", "25.00", "40.00", "45.00"]
    assert rows["joint"] == ["50.00", "50.00", "50.00", "50.00"]  # old = mean(1, .5, 0), new = c
