"""`--method dkd` and `dkd+csw` through the whole product on tiny data: train from scratch
and from a softmax step 0, resume, export with parity, run torch-free, update on a device."""

import json

import numpy as np
import pytest
import torch

from conftest import SILENT, quick_config
from reminder.bundle import read_manifest
from reminder.export.exporter import export_bundle
from reminder.runtime.predictor import Predictor
from reminder.train.checkpoint import load_model, read_meta
from reminder.train.run import train_scenario
from reminder.update import UpdateOptions, update_bundle


@pytest.fixture(scope="module")
def dkd_run(synthvoc_root, tmp_path_factory):
    """DKD 15-5 from scratch: step 0 with mBCE and the auxiliary classifier, step 1 with every term."""
    out = tmp_path_factory.mktemp("dkd_run")
    train_scenario(quick_config(synthvoc_root, out, setting="15-5", method="dkd", max_iterations=8), **SILENT)
    return out


def test_dkd_trains_from_scratch_and_resumes(dkd_run, synthvoc_root):
    assert read_meta(dkd_run / "step0")["outputs"] == "sigmoid"
    history = (dkd_run / "step0" / "history.csv").read_text().splitlines()[0]
    assert "mbce" in history and "ac" in history and ",ce," not in history
    terms = (dkd_run / "step1" / "history.csv").read_text().splitlines()[0].split(",")
    assert {"mbce", "kd", "dkd_pos", "dkd_neg", "ac"} <= set(terms)
    before = (dkd_run / "step1" / "model.safetensors").read_bytes()
    lines = []
    train_scenario(quick_config(synthvoc_root, dkd_run, setting="15-5", method="dkd", max_iterations=8),
                   progress=False, log=lines.append)
    assert any("step 1: complete" in line and "skipped" in line for line in lines)
    assert (dkd_run / "step1" / "model.safetensors").read_bytes() == before


def test_dkd_csw_increments_a_softmax_step0(step0_run, synthvoc_root, tmp_path):
    """One shared step-0 model (trained with cross-entropy) is converted, its predictions unchanged."""
    config = quick_config(synthvoc_root, tmp_path / "run", setting="15-5", method="dkd+csw",
                          from_step0=str(step0_run / "step0"))
    results = train_scenario(config, **SILENT)
    shared = json.loads((step0_run / "results.json").read_text())["steps"][0]
    assert results["steps"][0]["all"] == pytest.approx(shared["all"])
    assert read_meta(tmp_path / "run" / "step1")["outputs"] == "sigmoid"
    assert "csw_kd" in (tmp_path / "run" / "step1" / "history.csv").read_text().splitlines()[0]


def test_dkd_bundle_runs_with_the_rule_in_its_graph(dkd_run, frames, tmp_path):
    """The exported graph decides as the sigmoid model does: the runtime (ONNX Runtime) labels
    frames as PyTorch does, with no special case for DKD."""
    import cv2

    from reminder.export.graph import ExportModule

    bundle = export_bundle(dkd_run, out=tmp_path / "b", formats="onnx", step=1, log=lambda message: None)
    manifest = read_manifest(bundle)
    assert manifest.model["outputs"] == "sigmoid" and manifest.model["method"] == "dkd"
    assert manifest.parity["onnx"]["pixel_agreement"] >= 0.999
    module = ExportModule(load_model(dkd_run / "step1")[0]).eval()
    predictor = Predictor(bundle)
    height, width = manifest.input.size
    agree = total = 0
    for frame in frames[:6]:
        frame = cv2.resize(frame, (width, height))
        labels = predictor.predict(frame)[0].labels
        image = manifest.input.to_inputs([np.ascontiguousarray(frame[:, :, ::-1])])[0]
        with torch.no_grad():
            expected = module(torch.from_numpy(image))[0][0].numpy()
        agree, total = agree + int((labels == expected).sum()), total + labels.size
    assert agree / total >= 0.999


def test_a_dkd_bundle_updates_on_the_device_with_its_own_method(dkd_run, sheep_frames, tmp_path):
    bundle = export_bundle(dkd_run, out=tmp_path / "step0", formats="onnx", step=0, log=lambda message: None)
    result = update_bundle(bundle, images=sheep_frames / "images", masks=sheep_frames / "masks", classes=["sheep"],
                           out=tmp_path / "with-sheep",
                           options=UpdateOptions(iterations=20, freeze_backbone=True, seed=0), **SILENT)
    assert result.report["method"] == "dkd+csw"
    assert {"mbce", "kd", "dkd_pos", "dkd_neg", "ac", "csw_kd"} <= set(result.report["losses"])
    manifest = read_manifest(result.bundle)
    assert manifest.model["outputs"] == "sigmoid" and manifest.model["method"] == "dkd+csw, on device"
    assert manifest.parity["onnx"]["pixel_agreement"] >= 0.999
    labels = Predictor(result.bundle).predict(np.zeros((64, 64, 3), np.uint8))[0].labels
    assert labels.shape == (64, 64)
