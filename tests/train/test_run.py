import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import SILENT, quick_config
from reminder.errors import ReminderError
from reminder.train.checkpoint import load_model
from reminder.train.prototypes import load_prototypes
from reminder.train.run import train_scenario
from reminder.train.step import TrainingDiverged


EXPECTED_TERMS = {
    "finetune": {"ce"}, "ewc": {"ce", "ewc"}, "lwf-mc": {"ce", "lwf_mc"}, "ilt": {"ce", "kd", "encoder_mse"},
    "mib": {"unce", "unkd"}, "plop": {"ce", "pod"}, "reminder": {"ce", "pod", "csw_kd"},
    "reminder-kd": {"ce", "pod", "kd"}, "reminder-unkd": {"ce", "pod", "unkd"},
}


def test_reminder_trains_synthvoc_15_1_end_to_end(synthvoc_root, tmp_path):
    results = train_scenario(quick_config(synthvoc_root, tmp_path), **SILENT)
    assert [s["step"] for s in results["steps"]] == list(range(6))
    assert [s["num_seen"] for s in results["steps"]] == [16, 17, 18, 19, 20, 21]
    for metrics in results["steps"]:
        assert 0.0 <= metrics["all"] <= 1.0 and 0.0 <= metrics["old"] <= 1.0
        assert metrics["train"]["iterations"] == 3
    assert set(results["steps"][3]["train"]) == {"loss", "ce", "pod", "csw_kd", "iterations"}
    alls = [s["all"] for s in results["steps"]]
    assert results["steps"][-1]["avg"] == pytest.approx(sum(alls) / 6)
    model, meta = load_model(tmp_path / "step5")
    assert model.classes_per_step == [16, 1, 1, 1, 1, 1] and meta["classes"][-1] == "tvmonitor"
    bank = load_prototypes(tmp_path / "step5" / "prototypes.safetensors")
    assert bank["prototypes"].shape == (21, 256) and (bank["counts"] > 0).all()
    csv = (tmp_path / "results.csv").read_text().splitlines()
    assert csv[0].startswith("step,old,new,all,avg,background,aeroplane") and len(csv) == 7


@pytest.mark.parametrize("method", sorted(EXPECTED_TERMS))
def test_every_method_trains_a_step(method, synthvoc_root, step0_run, tmp_path):
    config = quick_config(synthvoc_root, tmp_path, setting="15-5", method=method,
                          from_step0=str(step0_run / "step0"))
    results = train_scenario(config, **SILENT)
    step1 = results["steps"][1]["train"]
    assert set(step1) - {"loss", "iterations"} == EXPECTED_TERMS[method]
    assert all(torch.isfinite(torch.tensor(v)) for v in step1.values())
    assert (tmp_path / "step1" / "fisher.safetensors").is_file() == (method == "ewc")
    # the imported step 0 is the same model
    assert torch.equal(load_model(tmp_path / "step0")[0].state_dict()["classifier.heads.0.weight"],
                       load_model(step0_run / "step0")[0].state_dict()["classifier.heads.0.weight"])


def test_joint_learns_every_class_in_one_step(synthvoc_root, tmp_path):
    results = train_scenario(quick_config(synthvoc_root, tmp_path, method="joint"), **SILENT)
    assert len(results["steps"]) == 1 and results["steps"][0]["num_seen"] == 21


def _train_command(root, out):
    return [sys.executable, "-m", "reminder.cli", "train", "--dataset", "synthvoc", "--root", str(root),
            "--setting", "15-1", "--method", "reminder", "--out", str(out), "--max-iterations", "3",
            "--batch-size", "4", "--crop-size", "48", "--workers", "0", "--epochs", "5", "--epochs-next", "5",
            "--set", "eval_batch_size=8", "--quiet"]


def test_killed_run_resumes_to_the_same_results(synthvoc_root, tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    subprocess.run(_train_command(synthvoc_root, tmp_path / "full"), check=True, env=env, timeout=600,
                   capture_output=True)
    killed = tmp_path / "killed"
    process = subprocess.Popen(_train_command(synthvoc_root, killed), env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (killed / "step2" / "metrics.json").is_file() and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "step5" / "metrics.json").is_file(), "the run ended before it could be killed"
    rerun = subprocess.run(_train_command(synthvoc_root, killed), env=env, timeout=600, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert "step 0: complete" in rerun.stdout and "step 2: complete" in rerun.stdout
    full = json.loads((tmp_path / "full" / "results.json").read_text())["steps"]
    resumed = json.loads((killed / "results.json").read_text())["steps"]
    for a, b in zip(full, resumed):
        assert (a["old"], a["all"], a["iou"]) == (b["old"], b["all"], b["iou"])
        assert a["train"] == b["train"]


def test_half_written_step_is_redone_not_loaded(synthvoc_root, tmp_path):
    config = quick_config(synthvoc_root, tmp_path, setting="15-5")
    first = train_scenario(config, **SILENT)
    (tmp_path / "step1" / "metrics.json").unlink()
    (tmp_path / "step1" / "model.safetensors").write_bytes(b"truncated")
    again = train_scenario(config, **SILENT)
    assert again["steps"][1]["iou"] == first["steps"][1]["iou"]


def test_resume_with_other_options_names_the_field(synthvoc_root, tmp_path):
    train_scenario(quick_config(synthvoc_root, tmp_path, setting="15-5"), **SILENT)
    with pytest.raises(ReminderError, match="trained with lr_next=0.005, not 0.1"):
        train_scenario(quick_config(synthvoc_root, tmp_path, setting="15-5", lr_next=0.1), **SILENT)


def test_step0_of_another_backbone_is_refused(synthvoc_root, step0_run, tmp_path):
    config = quick_config(synthvoc_root, tmp_path, setting="15-5", backbone="mobilenet_v3_large",
                          from_step0=str(step0_run / "step0"))
    with pytest.raises(ReminderError, match="has backbone='tiny', but this run needs 'mobilenet_v3_large'"):
        train_scenario(config, **SILENT)


def test_nan_stops_the_step_naming_iteration_and_term(synthvoc_root, tmp_path):
    with pytest.raises(TrainingDiverged, match=r"step 0, iteration \d+: loss term 'ce' is (nan|inf)"):
        train_scenario(quick_config(synthvoc_root, tmp_path, lr=1e30), **SILENT)
    assert not (tmp_path / "step0" / "model.safetensors").exists()


def test_newer_run_folder_is_refused(synthvoc_root, tmp_path):
    train_scenario(quick_config(synthvoc_root, tmp_path, setting="15-5"), **SILENT)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "format": 99}))
    with pytest.raises(ReminderError, match="format 99, newer than"):
        train_scenario(quick_config(synthvoc_root, tmp_path, setting="15-5"), **SILENT)


def test_dataset_missing_classes_of_the_setting(hand_voc, tmp_path):
    from reminder.train.config import resolve_config

    config = resolve_config(dataset="voc", root=hand_voc, setting="15-1", method="reminder", out=tmp_path,
                            backbone="tiny", batch_size=2, workers=0)
    with pytest.raises(ReminderError, match=r"step 1 \(16 pottedplant\) has no training image"):
        train_scenario(config, **SILENT)


def test_tensors_are_read_on_the_cpu_then_moved(tmp_path):
    """safetensors' own device="cuda" means cuda:0 on every DDP rank: load_tensors reads on
    the CPU and moves the tensors (the meta device stands in for a GPU here)."""
    from reminder.train.checkpoint import load_tensors, save_tensors

    save_tensors(tmp_path / "fisher.safetensors", {"w": torch.ones(3)})
    moved = load_tensors(tmp_path / "fisher.safetensors", torch.device("meta"))
    assert moved["w"].device.type == "meta" and moved["w"].shape == (3,)
    assert torch.equal(load_tensors(tmp_path / "fisher.safetensors")["w"], torch.ones(3))


def test_a_bit_flip_in_a_checkpoint_is_caught_on_resume(synthvoc_root, tmp_path):
    config = quick_config(synthvoc_root, tmp_path, setting="15-5", max_iterations=2)
    train_scenario(config, **SILENT)
    shutil.rmtree(tmp_path / "step1")  # resuming trains step 1 from step 0's files
    for name in ("model.safetensors", "prototypes.safetensors"):
        path = tmp_path / "step0" / name
        original = path.read_bytes()
        data = bytearray(original)
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
        with pytest.raises(ReminderError, match=f"step0/{name} does not match the sha256 recorded"):
            train_scenario(config, **SILENT)
        path.write_bytes(original)
    assert len(train_scenario(config, **SILENT)["steps"]) == 2


@pytest.mark.parametrize("name", ["config.json", "step0/metrics.json"])
def test_a_corrupt_run_file_is_one_line(synthvoc_root, tmp_path, name):
    from click.testing import CliRunner

    from reminder.cli import main

    train_scenario(quick_config(synthvoc_root, tmp_path, setting="15-5", max_iterations=2), **SILENT)
    (tmp_path / name).write_text("{ not json")
    result = CliRunner().invoke(main, ["eval", str(tmp_path)])
    assert result.exit_code == 2 and f"{name} is not valid JSON" in result.output
