"""Training on your own data: `train --data`, `increment`, resume, history, eval, fit()."""

import json
import shutil

import pytest
from click.testing import CliRunner

from reminder.cli import main
from reminder.data.warehouse import write_warehouse
from reminder.errors import ReminderError
from reminder.train.checkpoint import read_meta
from reminder.train.custom import custom_preset, fit
from reminder.train.history import read_history

DAY2 = ("background", "shelf", "pallet", "forklift", "person", "cart")
QUICK = ["--backbone", "tiny", "--max-iterations", "6", "--batch-size", "4", "--crop-size", "48", "--workers", "0",
         "--quiet"]


@pytest.fixture(scope="module")
def days(tmp_path_factory):
    root = tmp_path_factory.mktemp("days")
    day1 = write_warehouse(root / "day1", train=10, val=4, size=48)
    day2 = write_warehouse(root / "day2", names=DAY2, labelled=["cart"], must=["cart"], train=6, val=4, size=48,
                           seed=1)
    return day1, day2


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def run(days, tmp_path_factory):
    out = tmp_path_factory.mktemp("own") / "wh"
    result = _cli("train", "--data", days[0], "--out", out, "--eval-every", "2", *QUICK)
    assert result.exit_code == 0, result.output
    result = _cli("increment", out, "--data", days[1], "--max-iterations", "4", "--export-each-step", "onnx",
                  "--quiet")
    assert result.exit_code == 0, result.output
    return out


def test_export_each_step_carries_the_names(run):
    first = json.loads((run / "bundles" / "step0" / "manifest.json").read_text())
    second = json.loads((run / "bundles" / "step1" / "manifest.json").read_text())
    assert [c["name"] for c in second["classes"]] == list(DAY2) and second["name"] == "wh"
    assert second["parent"]["version"] == first["version"] and len(first["classes"]) == 5


def test_steps_learn_the_yaml_classes_with_their_names(run, days):
    config = json.loads((run / "config.json").read_text())
    assert config["dataset"] == "custom" and config["data"] == [str(days[0].resolve()), str(days[1].resolve())]
    assert config["increments"][0]["method"] == "reminder" and config["increments"][0]["max_iterations"] == 4
    meta = read_meta(run / "step1")
    assert meta["classes"] == list(DAY2) and meta["classes_per_step"] == [5, 1]
    assert meta["colors"][5] not in meta["colors"][:5]
    results = json.loads((run / "results.json").read_text())
    assert list(results["steps"][1]["iou"]) == list(DAY2) and results["steps"][1]["classes"] == ["cart"]


def test_history_has_every_iteration_and_the_validations(run):
    history = read_history(run / "step0")
    trained = [i for i, lr in zip(history["iteration"], history["lr"]) if lr is not None]
    assert trained == [0, 1, 2, 3, 4, 5] and "ce" in history and "loss" in history
    # 10 images in batches of 4: 2 iterations an epoch, validated every 2 epochs and after the last
    validated = [(i, v) for i, v in zip(history["iteration"], history["val_miou"]) if v is not None]
    assert [i for i, _ in validated] == [4, 6] and all(0 <= v <= 1 for _, v in validated)
    step1 = read_history(run / "step1")
    assert {"pod", "csw_kd"} <= set(step1)  # REMINDER's terms at the increment


def test_running_an_increment_again_says_it_exists(run, days):
    result = _cli("increment", run, "--data", days[1], "--quiet")
    assert result.exit_code == 0 and "step 1 of" in result.output and "already exists" in result.output


def test_a_yaml_that_renames_an_old_class_is_refused(run, tmp_path):
    renamed = write_warehouse(tmp_path / "renamed", names=("background", "shelf", "cart", "forklift", "person", "cone"),
                              train=4, val=2, size=48)
    result = _cli("increment", run, "--data", renamed, "--quiet")
    assert result.exit_code == 2 and "renames class 2 from 'pallet' to 'cart'" in result.output
    assert len(json.loads((run / "config.json").read_text())["data"]) == 2  # nothing recorded


def test_the_run_fixes_the_backbone(run, days):
    result = _cli("increment", run, "--data", days[1], "--set", "backbone=resnet50")
    assert result.exit_code == 2 and "backbone is fixed by" in result.output
    result = _cli("train", "--data", days[0], "--out", run, "--backbone", "mobilenet_v3_large", "--quiet")
    assert result.exit_code == 2 and "trained with backbone='tiny', not 'mobilenet_v3_large'" in result.output
    result = _cli("train", "--data", days[0], "--out", run, "--set", "pod_factr=0.1", "--quiet")
    assert result.exit_code == 2 and "unknown training option 'pod_factr'" in result.output


def test_eval_scores_every_step_on_the_named_val_sets(run, days):
    result = _cli("eval", run, "--data", days[0], "--data", days[1], "--json")
    assert result.exit_code == 0, result.output
    steps = json.loads(result.output)
    assert [s["step"] for s in steps] == [0, 1] and list(steps[1]["iou"]) == list(DAY2)
    text = _cli("eval", run, "--step", "1", "--quiet").output
    assert "cart" in text and "forklift" in text


def test_increments_need_a_run_on_own_data(days, step0_run):
    result = _cli("increment", step0_run, "--data", days[1])
    assert result.exit_code == 2 and "is a benchmark run" in result.output


def test_a_failed_start_does_not_block_the_retry(tmp_path, days):
    out = tmp_path / "run"
    result = _cli("train", "--data", days[0], "--out", out, *QUICK[:-3], "--batch-size", "1", "--quiet")
    assert result.exit_code == 2 and "batch norm needs 2" in result.output
    assert not (out / "config.json").exists()
    # a run folder whose config was written but no step completed takes new options
    (out / "config.json").write_text((json.dumps({"dataset": "custom", "root": "x", "setting": "custom",
                                                   "method": "reminder", "out": str(out), "crop_size": 128,
                                                   "data": [str(days[0].resolve())], "backbone": "tiny"})))
    result = _cli("train", "--data", days[0], "--out", out, *QUICK[:-5], "--crop-size", "32", "--workers", "0",
                  "--max-iterations", "2", "--set", "eval_every=0", "--quiet")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["crop_size"] == 32


def test_fit_api_trains_and_adds_a_step(tmp_path, days):
    options = dict(backbone="tiny", max_iterations=3, batch_size=4, crop_size=32, workers=0, progress=False,
                   log=lambda message: None)
    results = fit(days[0], out=tmp_path / "api", **options)
    assert len(results["steps"]) == 1
    options.pop("backbone")
    results = fit(days[1], resume_from=tmp_path / "api", **options)
    assert [s["classes"] for s in results["steps"]] == [["shelf", "pallet", "forklift", "person"], ["cart"]]
    with pytest.raises(ReminderError, match="out= .* or resume_from="):
        fit(days[1])


def test_preset_scales_with_the_data_and_the_backbone():
    small, large = custom_preset(40, "tiny"), custom_preset(4000, "tiny")
    assert small["epochs"] > large["epochs"] and small["workers"] == 0 and large["workers"] == 2
    assert custom_preset(40, "resnet101")["crop_size"] == 512
    assert custom_preset(40, "resnet101", min_side=300)["crop_size"] == 288
    assert custom_preset(40, "resnet101")["weights_backbone"] == "imagenet"
    step = custom_preset(40, "tiny", next_step=True)
    assert step["lr_next"] == pytest.approx(small["lr"] / 10) and "backbone" not in step
    # own data: the head, crops and class weights that keep thin and small classes; an
    # increment inherits them (they are not the step's to change)
    assert {k: small[k] for k in ("head", "output_stride", "crop_mode", "crop_scale", "class_weights")} == {
        "head": "deeplabv3plus", "output_stride": 16, "crop_mode": "native", "crop_scale": (1.0, 1.5),
        "class_weights": "sqrt"}
    assert "head" not in step and "class_weights" not in step


def test_the_recipe_is_recorded_and_the_run_fixes_the_head(run, days):
    meta = read_meta(run / "step1")
    assert (meta["head"], meta["output_stride"]) == ("deeplabv3plus", 16)
    for step in (0, 1):  # the weights each step's CE terms used, from its own labels
        weights = json.loads((run / f"step{step}" / "metrics.json").read_text())["train"]["class_weights"]
        assert len(weights) == (5 if step == 0 else 6) and max(weights) > 1 > min(weights)
    manifest = json.loads((run / "bundles" / "step1" / "manifest.json").read_text())
    assert manifest["model"]["recipe"] == {"crop_mode": "native", "crop_scale": [1.0, 1.5], "class_weights": "sqrt"}
    result = _cli("increment", run, "--data", days[1], "--set", "head=deeplabv3")
    assert result.exit_code == 2 and "head is fixed by" in result.output


def test_tensorboard_gets_the_same_values(tmp_path, days):
    pytest.importorskip("tensorboard", reason="tensorboard is an optional extra")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    result = _cli("train", "--data", days[0], "--out", out, *QUICK[:-1], "--max-iterations", "3", "--tensorboard",
                  "--quiet")
    assert result.exit_code == 0, result.output
    events = EventAccumulator(str(out / "tensorboard" / "step0"))
    events.Reload()
    losses = [e.value for e in events.Scalars("train/loss")]
    assert losses == pytest.approx([v for v in read_history(out / "step0")["loss"] if v is not None], rel=1e-5)


def test_a_val_set_without_a_seen_class_is_named(tmp_path):
    no_people = write_warehouse(tmp_path / "d", drawn=["shelf", "pallet", "forklift"], train=6, val=2, size=48)
    result = _cli("train", "--data", no_people, "--out", tmp_path / "r", *QUICK[:-3], "--max-iterations", "2",
                  "--quiet")
    assert result.exit_code == 0, result.output
    assert "warning: the val images of step 0 hold no pixel of person" in result.output


def test_a_moved_run_works_where_it_is(days, tmp_path, monkeypatch):
    """A run is the folder named on the command line: after `mv exp exp-v1` and a new
    `exp`, an increment of exp-v1 writes into exp-v1, and eval of a copy scores the copy.
    The config's `out` was relative to where training started, and redirected both."""
    monkeypatch.chdir(tmp_path)
    result = _cli("train", "--data", days[0], "--out", "exp", "--quiet", *QUICK)
    assert result.exit_code == 0, result.output
    (tmp_path / "exp").rename(tmp_path / "exp v1.0")
    result = _cli("train", "--data", days[0], "--out", "exp", "--quiet", *QUICK)
    assert result.exit_code == 0, result.output
    result = _cli("increment", "exp v1.0", "--data", days[1], "--max-iterations", "2", "--quiet")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "exp v1.0" / "step1" / "model.safetensors").is_file()
    assert not (tmp_path / "exp" / "step1").exists()
    shutil.copytree(tmp_path / "exp v1.0", tmp_path / "copy")
    (tmp_path / "exp v1.0" / "step1" / "model.safetensors").unlink()  # the original can no longer be scored
    result = _cli("eval", "copy", "--step", "1", "--quiet")
    assert result.exit_code == 0 and "cart" in result.output, result.output
    # a folder name with a space and a dot exports, with a clean default version, or --version
    result = _cli("export", "copy", "--out", "bundle", "--step", "0")
    assert result.exit_code == 0, result.output
    result = _cli("export", "exp", "--out", "b2", "--step", "0", "--version", "2026.11-rc1")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "b2" / "manifest.json").read_text())["version"] == "2026.11-rc1"
    shutil.copytree(tmp_path / "copy", tmp_path / "run v1.0")
    result = _cli("export", "run v1.0", "--out", "b3", "--step", "0")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "b3" / "manifest.json").read_text())["version"] == "run-v1.0-step0"


def test_eval_names_every_class_that_is_not_learnt(run, days):
    from reminder.contracts.quality import weak_classes

    steps = json.loads(_cli("eval", run, "--step", "1", "--json").output)
    text = _cli("eval", run, "--step", "1").output
    assert "per-class IoU:" in text
    weak = [w["name"] for w in weak_classes(steps[0]["iou"])]
    for name in weak:
        assert f"WARNING: class {name!r} is not learnt" in text
    assert text.count("WARNING: class") == len(weak)
    manifest = json.loads((run / "bundles" / "step1" / "manifest.json").read_text())
    assert manifest["quality"]["new_classes"] == ["cart"]
    assert manifest["quality"]["per_class_iou"] == manifest["metrics"]["iou"]


def test_threads_are_the_physical_cores_unless_given(days, tmp_path, monkeypatch):
    import torch

    from reminder.train.threads import busy_warning, physical_cores, set_threads

    assert 1 <= physical_cores() <= (len(__import__("os").sched_getaffinity(0)))
    assert set_threads(1) == 1 and torch.get_num_threads() == 1
    monkeypatch.setattr("os.getloadavg", lambda: (99.0, 99.0, 99.0))
    assert busy_warning() is None  # one thread: nothing to gain
    assert set_threads(None) == physical_cores()
    warning = busy_warning() if physical_cores() > 1 else "busy `threads` 1"
    assert "busy" in warning and "`threads` 1" in warning
    monkeypatch.setattr("os.getloadavg", lambda: (0.1, 0.1, 0.1))
    assert busy_warning() is None
    result = _cli("eval", tmp_path / "missing", "--threads", "0")
    assert result.exit_code == 2 and "--threads" in result.output


def test_a_start_that_failed_on_its_weights_does_not_block_tiny_or_none(tmp_path, days):
    """The default backbone without internet for its weights left config.json asking for
    ImageNet weights; the retry with --backbone tiny was refused ("the tiny backbone has no
    pretrained weights"), and --weights-backbone none was read as a file name."""
    out = tmp_path / "run"
    (out / "config.json").parent.mkdir(parents=True)
    (out / "config.json").write_text(json.dumps({"dataset": "custom", "root": "x", "setting": "custom",
                                                 "method": "reminder", "out": str(out), "crop_size": 48,
                                                 "data": [str(days[0].resolve())], "backbone": "mobilenet_v3_large",
                                                 "weights_backbone": "imagenet"}))
    result = _cli("train", "--data", days[0], "--out", out, *QUICK, "--max-iterations", "1", "--set", "eval_every=0")
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "config.json").read_text())
    assert saved["backbone"] == "tiny" and saved["weights_backbone"] is None
    scratch = tmp_path / "scratch"
    result = _cli("train", "--data", days[0], "--out", scratch, *QUICK, "--weights-backbone", "none",
                  "--max-iterations", "1", "--set", "eval_every=0")
    assert result.exit_code == 0, result.output


def test_the_offline_weights_message_names_the_option_and_the_cache_file(monkeypatch):
    import torchvision

    from reminder.models.backbones import mobilenet_v3_large_backbone

    def offline(*args, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(torchvision.models.mobilenetv3, "mobilenet_v3_large", offline)
    with pytest.raises(ReminderError, match=r"`weights_backbone` PATH.*checkpoints/mobilenet_v3_large-.*\.pth"
                                            r".*`weights_backbone` none"):
        mobilenet_v3_large_backbone(weights="imagenet")


def test_new_options_on_a_complete_step_are_refused_not_ignored(run, days):
    """`increment RUN --lr 0.02` on a complete step said "already exists; nothing to do" and
    exited 0, ignoring --lr."""
    result = _cli("increment", run, "--data", days[1], "--lr", "0.02", "--quiet")
    assert result.exit_code == 2, result.output
    assert "is complete with lr_next=" in result.output and "not trained again with lr_next=0.02" in result.output
    result = _cli("increment", run, "--data", days[1], "--method", "plop", "--quiet")
    assert result.exit_code == 2 and "method='reminder'" in result.output
    result = _cli("increment", run, "--data", days[1], "--max-iterations", "4", "--quiet")  # as trained
    assert result.exit_code == 0 and "already exists" in result.output
    assert "add --redo to train it again" in _cli("increment", run, "--data", days[1], "--lr", "0.02").output


def test_redo_trains_the_last_step_again_and_keeps_the_rest(run, days, tmp_path):
    copy = tmp_path / "wh"
    shutil.copytree(run, copy)
    step0 = {p.name: p.read_bytes() for p in (copy / "step0").iterdir() if p.is_file()}
    old_bundle = json.loads((copy / "bundles" / "step1" / "manifest.json").read_text())
    result = _cli("increment", copy, "--data", days[1], "--redo", "--lr", "0.02", "--max-iterations", "3",
                  "--export-each-step", "onnx", "--quiet")
    assert result.exit_code == 0 and "was trained again" in result.output, result.output
    config = json.loads((copy / "config.json").read_text())
    assert config["increments"][0]["lr_next"] == 0.02 and config["increments"][0]["max_iterations"] == 3
    assert config["out"] == str(copy) and len(config["data"]) == 2
    assert json.loads((copy / "step1" / "metrics.json").read_text())["train"]["iterations"] == 3
    assert {p.name: p.read_bytes() for p in (copy / "step0").iterdir() if p.is_file()} == step0
    assert json.loads((copy / "bundles" / "step1" / "manifest.json").read_text())["created"] >= old_bundle["created"]
    assert json.loads((copy / "results.json").read_text())["steps"][1]["train"]["iterations"] == 3
    assert not list(copy.glob(".redo*")) and not list(copy.glob(".redone*"))
    result = _cli("increment", copy, "--data", days[0], "--redo")
    assert result.exit_code == 2 and "is not it (the last is" in result.output



def test_slow_iterations_name_threads(days, tmp_path, monkeypatch):
    """Iterations far slower than measured for the backbone and sizes get one warning naming
    --threads (here the expectation is made 1000 times too fast, so a real run is 'slow')."""
    from reminder.train import threads
    from reminder.train.config import resolve_config

    config = resolve_config(dataset="custom", root=tmp_path, setting="custom", method="finetune", out=tmp_path,
                            backbone="tiny", head="deeplabv3plus", batch_size=16, crop_size=128)
    expected = threads.expected_iteration_seconds(config, teacher=False, threads=2)
    assert expected == pytest.approx(1.5 * 16 * 128 ** 2 / 1e6)  # the measured 0.39 s
    assert threads.slow_warning(expected * 2, config, teacher=False) is None
    monkeypatch.setattr("torch.get_num_threads", lambda: 2)
    warning = threads.slow_warning(expected * 10, config, teacher=False)
    assert "10x what tiny (deeplabv3plus, batch 16, crop 128)" in warning and "`threads` 1" in warning
    monkeypatch.undo()
    fast = {key: value / 1000 for key, value in threads.EXPECTED_SECONDS_PER_MEGAPIXEL.items()}
    monkeypatch.setattr(threads, "EXPECTED_SECONDS_PER_MEGAPIXEL", fast)
    lines = []
    fit(days[0], out=tmp_path / "run", backbone="tiny", max_iterations=14, batch_size=2, crop_size=32, workers=0,
        progress=False, log=lines.append)
    assert sum("WARNING: training iterations take" in line for line in lines) == 1, lines


def _limited(tmp_path, *args, limit=200_000):
    """``reminder ARGS`` in a process that may write no file over ``limit`` bytes (the kernel's
    RLIMIT_FSIZE: a write past it fails with EFBIG, as a full disk fails with ENOSPC)."""
    import subprocess
    import sys

    script = ("import resource, signal, sys\n"
              "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
              f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n"
              "from reminder.cli import main\n"
              "sys.argv = ['reminder'] + sys.argv[1:]\n"
              "main()\n")
    return subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)


def test_writes_the_machine_refuses_end_in_one_line(run, days, tmp_path):
    """train and export on a disk that takes no more: one line naming the file and
    the free space, exit 1, no traceback, and what was there before is intact."""
    before = {p: p.read_bytes() for p in (run / "step0").iterdir() if p.is_file()}
    results = [
        _limited(tmp_path, "train", "--data", days[0], "--out", tmp_path / "new", *QUICK),
        _limited(tmp_path, "export", run, "--out", tmp_path / "bundle", "--quiet"),
    ]
    for result in results:
        output = result.stdout + result.stderr
        assert result.returncode == 1 and "Traceback" not in output, output
        assert "Error: cannot write " in output and "File too large" in output and "MB free on its disk" in output
        assert output.count("Error:") == 1
    assert not (tmp_path / "bundle").exists()
    assert {p: p.read_bytes() for p in (run / "step0").iterdir() if p.is_file()} == before
