"""Every CUDA and TensorRT path, on a real GPU. Skipped (with the reason) where there is
none: this workplace lends a GPU only to some sessions, and TensorRT cannot be installed
here. Run them with ``pytest -m 'gpu or tensorrt'`` on a GPU machine with
``pip install onnxruntime-gpu tensorrt``."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from conftest import SILENT, quick_config

QUIET = {"log": lambda message: None}
pytestmark = pytest.mark.gpu


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a == b).mean())


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_training_steps_on_cuda(synthvoc_root, tmp_path, amp):
    """AMP (fp16 with GradScaler, bf16 without) and channels-last through two steps."""
    from reminder.train.run import train_scenario

    config = quick_config(synthvoc_root, tmp_path, setting="15-5", device="cuda", amp=amp, channels_last=True)
    results = train_scenario(config, **SILENT)
    assert len(results["steps"]) == 2 and all(np.isfinite(s["all"]) for s in results["steps"])


def test_torch_compile_training_on_cuda(synthvoc_root, tmp_path):
    from reminder.train.run import train_scenario

    config = quick_config(synthvoc_root, tmp_path, setting="15-5", device="cuda", compile=True, amp="bf16")
    assert len(train_scenario(config, **SILENT)["steps"]) == 2


@pytest.mark.timeout(900)
def test_nccl_ddp_with_sync_batch_norm(synthvoc_root, tmp_path):
    """torchrun on every GPU here (one is enough to run NCCL and SyncBatchNorm)."""
    import torch

    gpus = torch.cuda.device_count()
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={gpus}", "-m", "reminder.cli",
               "train", "--dataset", "synthvoc", "--root", str(synthvoc_root), "--setting", "15-5",
               "--out", str(tmp_path / "ddp"), "--device", "cuda", "--sync-bn", "--amp", "bf16",
               "--max-iterations", "3", "--batch-size", str(4 * gpus), "--crop-size", "48", "--workers", "0",
               "--quiet"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=850)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "ddp" / "step1" / "model.safetensors").is_file()


def test_aoti_on_cuda_then_onnx_from_the_same_module(reminder_run, tmp_path):
    """AOTInductor compiled for CUDA runs on CUDA; the ONNX exported after it still gets a
    CPU module (export_aoti works on a copy)."""
    from reminder.bundle import verify_bundle
    from reminder.export.exporter import export_bundle
    from reminder.runtime.backends import open_artifact

    bundle = export_bundle(reminder_run, out=tmp_path / "b", formats="onnx,aoti", device="cuda", **QUIET)
    manifest = verify_bundle(bundle).to_json()
    assert manifest["artifacts"]["aoti"]["device"] == "cuda"
    assert manifest["parity"]["aoti"]["pixel_agreement"] >= 0.999
    assert open_artifact(bundle, verify_bundle(bundle), "aoti").device.type == "cuda"


def test_ort_cuda_provider_matches_cpu(bundles, frames):
    pytest.importorskip("onnxruntime")
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime-gpu is not installed")
    from reminder.runtime.predictor import Predictor

    cpu = Predictor(bundles[1], backend="ort", providers=["CPUExecutionProvider"])
    cuda = Predictor(bundles[1], backend="ort", providers=["CUDAExecutionProvider"])
    assert "CUDAExecutionProvider" in cuda.backend.providers
    for frame in frames[:6]:
        assert _agreement(cpu.predict(frame)[0].labels, cuda.predict(frame)[0].labels) >= 0.999


@pytest.mark.tensorrt
def test_ort_tensorrt_provider_matches_cpu_with_the_bundles_profile(bundles, frames, tmp_path):
    import onnxruntime

    if "TensorrtExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has no TensorRT execution provider")
    from reminder.runtime.predictor import Predictor

    cpu = Predictor(bundles[1], backend="ort", providers=["CPUExecutionProvider"])
    trt = Predictor(bundles[1], backend="ort", engine_cache=tmp_path / "cache")
    assert trt.backend.providers[0] == "TensorrtExecutionProvider"
    for frame in frames[:6]:
        assert _agreement(cpu.predict(frame)[0].labels, trt.predict(frame)[0].labels) >= 0.99


@pytest.mark.tensorrt
@pytest.mark.parametrize("fp16", [False, True])
def test_engine_build_and_parity_inside_and_at_the_edges_of_its_profile(reminder_run, tmp_path, fp16):
    from reminder.bundle import verify_bundle
    from reminder.export.exporter import export_bundle
    from reminder.runtime.backends import open_artifact

    bundle = export_bundle(reminder_run, out=tmp_path / "b", formats="onnx,aoti,tensorrt", device="cuda",
                           trt_fp16=fp16, **QUIET)
    manifest = verify_bundle(bundle).to_json()
    assert "tensorrt" in manifest["artifacts"], manifest.get("skipped")
    assert manifest["parity"]["tensorrt"]["pixel_agreement"] >= (0.99 if fp16 else 0.999)
    assert sorted(p.name for p in bundle.iterdir() if p.suffix == ".onnx") == ["model.onnx"]
    checked = verify_bundle(bundle)
    engine, ort = open_artifact(bundle, checked, "tensorrt"), open_artifact(bundle, checked, "onnx")
    (b0, h0, w0), (b1, h1, w1) = engine.profile.min_shape, engine.profile.max_shape
    rng = np.random.default_rng(0)
    for shape in [(b0, 3, h0, w0), (1, 3, (h0 + h1) // 2, (w0 + w1) // 2), (min(b1, 2), 3, h1, w1)]:
        images = rng.uniform(0, 255, shape).astype(np.float32)
        assert _agreement(engine(images)["labels"], ort(images)["labels"]) >= 0.98


@pytest.mark.tensorrt
def test_tensorrt_backend_with_a_shape_change_between_calls(reminder_run, tmp_path, frames):
    from reminder.bundle import verify_bundle
    from reminder.export.exporter import export_bundle
    from reminder.runtime.backends import open_artifact

    bundle = export_bundle(reminder_run, out=tmp_path / "b", formats="onnx,tensorrt", **QUIET)
    checked = verify_bundle(bundle)
    engine, ort = open_artifact(bundle, checked, "tensorrt"), open_artifact(bundle, checked, "onnx")
    rng = np.random.default_rng(1)
    for shape in [(1, 3, 64, 64), (2, 3, 96, 128), (1, 3, 64, 64)]:
        images = rng.uniform(0, 255, shape).astype(np.float32)
        labels = engine(images)["labels"]
        assert labels.shape == (shape[0], shape[2], shape[3])
        assert _agreement(labels, ort(images)["labels"]) >= 0.999


def test_on_device_update_on_cuda(bundles, sheep_frames, tmp_path):
    from reminder.update import UpdateOptions, update_bundle

    result = update_bundle(bundles[0], images=sheep_frames / "images", masks=sheep_frames / "masks",
                           classes=["sheep"], out=tmp_path / "new",
                           options=UpdateOptions(iterations=20, device="cuda", freeze_backbone=True), **QUIET)
    assert result.report["device"].startswith("cuda") and result.report["amp"] == "bf16"
    assert "cuda_allocated_mb" in result.report["peak_memory"]


@pytest.mark.tensorrt
def test_int8_engine_is_gated_and_a_device_rebuilds_it_from_the_bundle_alone(runtime_run, frames, tmp_path):
    """An INT8 engine (TensorRT 10: entropy calibration on the step's training images; 11:
    the QDQ ONNX) passes the same gate as the INT8 ONNX; with TensorRT 10 the calibration
    cache in the bundle lets a device build its own INT8 engine without any image."""
    from reminder.export.exporter import export_bundle
    from reminder.export.tensorrt import build_engine
    from reminder.runtime.backends import open_artifact
    from reminder.runtime.engines import import_tensorrt, read_engine, tensorrt_major
    from reminder.runtime.predictor import Predictor

    bundle = export_bundle(runtime_run, out=tmp_path / "b", formats="onnx-int8,tensorrt", trt_int8=True, step=0,
                           calibration_count=16, **QUIET)
    from reminder.bundle import read_manifest, verify_bundle

    manifest = verify_bundle(bundle).to_json()
    engine = manifest["artifacts"]["tensorrt"]
    assert engine["precision"] == "int8" and manifest["parity"]["tensorrt"]["passed"]
    predictor = Predictor(bundle, backend="trt", precision="int8")
    ort = Predictor(bundle, backend="ort", precision="fp32")
    labels = [p.labels for p in predictor.predict(frames[:4])]
    reference = [p.labels for p in ort.predict(frames[:4])]
    assert np.mean([_agreement(a, b) for a, b in zip(labels, reference)]) >= 0.97
    if tensorrt_major(import_tensorrt()) < 11:
        assert "calibration.cache" in manifest["files"]
        header = build_engine(bundle / "model.onnx", tmp_path / "device.engine", int8=True,
                              calibration_cache=bundle / "calibration.cache",
                              profile=open_artifact(bundle, read_manifest(bundle), "tensorrt").profile)
        assert header["precision"] == "int8" and read_engine(tmp_path / "device.engine")[1]


def test_openvino_and_int8_on_a_gpu_machine_still_run_on_its_cpu(int8_bundle, frames):
    """On a machine with CUDA, auto keeps ONNX Runtime on the GPU (FP32): INT8 is a CPU choice."""
    from reminder.runtime.predictor import Predictor

    predictor = Predictor(int8_bundle)
    assert predictor.backend.name == "ort" and predictor.precision == "fp32"
    assert "CUDAExecutionProvider" in predictor.backend.providers
    assert Predictor(int8_bundle, backend="ort", precision="int8").predict(frames[:2])
