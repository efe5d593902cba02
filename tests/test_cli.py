import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from reminder.cli import main


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_every_command_has_help():
    for command in ([], ["demo"], ["data"], ["data", "synth"], ["data", "split"]):
        result = run(*command, "--help")
        assert result.exit_code == 0 and "Usage:" in result.output


def test_synth_then_split_json(tmp_path):
    result = run("data", "synth", "--out", tmp_path / "sv", "--images", 40, "--size", 48, "--seed", 1)
    assert result.exit_code == 0, result.output
    result = run("data", "split", "--dataset", "voc", "--root", tmp_path / "sv", "--setting", "15-1",
                 "--json", "--cache-dir", tmp_path / "cache")
    assert result.exit_code == 0, result.output
    split = json.loads(result.output)
    assert set(split) == {"setting", "mode", "steps"}
    assert split["setting"] == "15-1" and split["mode"] == "overlap"
    assert [s["step"] for s in split["steps"]] == list(range(6))
    assert split["steps"][0]["classes"] == list(range(1, 16))
    assert [s["classes"] for s in split["steps"][1:]] == [[16], [17], [18], [19], [20]]
    assert all(i.startswith("synth_") for s in split["steps"] for i in s["train"] + s["test"])


def test_split_table(tmp_path, synthvoc_root):
    result = run("data", "split", "--dataset", "synthvoc", "--root", synthvoc_root, "--setting", "15-5",
                 "--mode", "disjoint", "--cache-dir", tmp_path)
    assert result.exit_code == 0, result.output
    assert "synthvoc 15-5 (disjoint): 2 steps" in result.output
    assert "16 pottedplant, 17 sheep, 18 sofa, 19 train, 20 tvmonitor" in result.output


def test_bad_input_is_one_line_and_exit_2(tmp_path, synthvoc_root):
    cases = [
        (["--root", tmp_path / "nowhere", "--setting", "15-1"], "nowhere"),
        (["--root", synthvoc_root, "--setting", "15-6"], "need 21 classes, but the dataset has 20"),
        (["--root", synthvoc_root, "--setting", "15-1", "--order", "1,1,2"], "repeats class 1"),
    ]
    for extra, message in cases:
        result = run("data", "split", "--dataset", "voc", "--cache-dir", tmp_path / "c", *extra)
        assert result.exit_code == 2
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0]


def test_console_script_demo_help():
    """The module entry point answers; the demo itself runs in tests/test_demo.py."""
    result = subprocess.run([sys.executable, "-m", "reminder.cli", "demo", "--help"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert "--quick" in result.stdout and "--methods" in result.stdout



@pytest.mark.parametrize("option, value, message", [
    ("--crop-size", "0", "--crop-size must be a whole number of at least 16, got 0"),
    ("--lr", "-1", "--lr must be positive, got -1.0"),
    ("--batch-size", "0", "--batch-size must be a whole number of at least 1, got 0"),
])
def test_train_refuses_values_that_cannot_train_and_writes_nothing(synthvoc_root, tmp_path, option, value, message):
    result = CliRunner().invoke(main, ["train", "--dataset", "synthvoc", "--root", str(synthvoc_root), "--setting",
                                       "15-5", "--out", str(tmp_path / "run"), option, value])
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "run").exists()


def test_library_messages_name_arguments_and_the_cli_names_its_options(bundles, tmp_path):
    """A Python user reads the argument (`max_frames`); the CLI shows the option that set it."""
    from reminder.errors import ReminderError
    from reminder.runtime.predictor import Predictor
    from reminder.runtime.stream import Stream

    with pytest.raises(ReminderError) as caught:
        Predictor(bundles[0], precision="int8")
    assert "`precision` int8" in str(caught.value) and "--" not in str(caught.value)
    result = run("run", bundles[0], "--source", tmp_path, "--precision", "int8")
    assert result.exit_code == 2 and "--precision int8" in result.output and "`" not in result.output
    with pytest.raises(ReminderError, match="`max_frames` must be at least 1"):
        Stream(bundles[0], sources=[str(tmp_path)], max_frames=0)
    result = run("run", bundles[0], "--source", tmp_path, "--max-frames", 0)
    assert result.exit_code == 2 and "Error: --max-frames must be at least 1, got 0" in result.output
