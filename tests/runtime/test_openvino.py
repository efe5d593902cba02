"""The OpenVINO backend on the bundles' real ONNX files (FP32 and INT8), against ONNX Runtime."""

import platform
import subprocess
import sys

import numpy as np
import pytest

from reminder.contracts.manifest import Manifest
from reminder.bundle import open_bundle
from reminder.errors import ReminderError
from reminder.runtime.backends import open_artifact, select_backend
from reminder.runtime.predictor import Predictor

pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'reminder[openvino]')")
X86 = platform.machine().lower() in ("x86_64", "amd64")


def _batch(count=3, height=64, width=64, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (count, 3, height, width)).astype(np.float32)


@pytest.mark.parametrize("fmt, needed", [("onnx", 0.999), ("onnx-int8", 0.99)])
def test_openvino_matches_onnx_runtime(int8_bundle, fmt, needed):
    folder, manifest = open_bundle(int8_bundle)
    ort = open_artifact(folder, manifest, fmt)
    openvino = open_artifact(folder, manifest, fmt, backend="openvino")
    for batch in (_batch(), _batch(2, 48, 80, seed=1)):  # dynamic batch, height and width
        expected, actual = ort(batch), openvino(batch)
        assert actual["labels"].shape == expected["labels"].shape and actual["labels"].dtype == np.uint8
        assert (actual["labels"] == expected["labels"]).mean() >= needed
        assert np.abs(actual["confidence"] - expected["confidence"]).max() < (0.05 if fmt == "onnx" else 0.3)


def test_throughput_hint_splits_batches_and_agrees_with_latency(int8_bundle):
    folder, manifest = open_bundle(int8_bundle)
    latency = open_artifact(folder, manifest, "onnx", backend="openvino", hint="LATENCY")
    throughput = open_artifact(folder, manifest, "onnx", backend="openvino", hint="THROUGHPUT")
    batch = _batch(5)
    assert np.array_equal(latency(batch)["labels"], throughput(batch)["labels"])
    assert "throughput" in throughput.providers[0] and "latency" in latency.providers[0]
    with pytest.raises(ReminderError, match="unknown OpenVINO performance hint"):
        open_artifact(folder, manifest, "onnx", backend="openvino", hint="FAST")


@pytest.mark.skipif(not X86, reason="auto considers OpenVINO on x86 only")
def test_auto_picks_openvino_on_x86_after_parity(int8_bundle, bundles):
    messages = []
    folder, manifest = open_bundle(int8_bundle)
    chosen = select_backend(folder, manifest, "auto", log=messages.append)
    assert chosen.name == "openvino" and chosen.precision == "int8"
    assert Predictor(bundles[0]).backend.name == "openvino"
    # a bundle without sample.png cannot be checked: auto falls back to ONNX Runtime, saying why
    data = manifest.to_json()
    no_sample = Manifest({**data, "files": {k: v for k, v in data["files"].items() if k != "sample.png"}})
    assert select_backend(folder, no_sample, "auto", log=messages.append).name == "ort"
    assert any("openvino backend not usable here" in m and "sample.png" in m for m in messages)


@pytest.mark.skipif(not X86, reason="auto considers OpenVINO on x86 only")
def test_auto_falls_back_when_openvino_raises_its_own_error_in_the_check(bundles, monkeypatch):
    """OpenVINO reports failures as its own RuntimeError; one raised while auto checks it
    against ONNX Runtime propagated instead of falling back, as a disagreement does."""
    from reminder.runtime.openvino import OpenVinoBackend

    def fail(self, images):
        raise RuntimeError("Exception from src/inference/src/cpp/infer_request.cpp: cannot infer")

    monkeypatch.setattr(OpenVinoBackend, "__call__", fail)
    messages = []
    folder, manifest = open_bundle(bundles[0])
    assert select_backend(folder, manifest, "auto", log=messages.append).name == "ort"
    assert any("openvino backend not usable here (OpenVINO failed on the sample frame: RuntimeError" in m
               for m in messages), messages


def test_run_and_bench_with_openvino(int8_bundle, frames, tmp_path):
    from click.testing import CliRunner

    from conftest import write_video
    from reminder.cli import main

    video = write_video(tmp_path / "clip.mp4", frames[:8])
    result = CliRunner().invoke(main, ["run", str(int8_bundle), "--source", str(video), "--backend", "openvino",
                                       "--precision", "int8", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "8 frames from 1 source(s)" in result.output
    bench = CliRunner().invoke(main, ["bench", str(int8_bundle), "--backend", "all", "--batch", "1,2",
                                      "--iterations", "2", "--warmup", "1"])
    assert bench.exit_code == 0, bench.output
    import json

    report = json.loads(bench.output[bench.output.index("{"):])
    assert {r["backend"] for r in report["results"]} >= {"ort", "openvino"}


def test_missing_openvino_names_the_install_command(int8_bundle):
    script = ("import sys; sys.modules['openvino'] = None\n"
              "from reminder.runtime.predictor import Predictor\n"
              "from reminder.errors import ReminderError\n"
              f"try:\n    Predictor({str(int8_bundle)!r}, backend='openvino')\n"
              "except ReminderError as error:\n    print(error)\n"
              f"print(Predictor({str(int8_bundle)!r}).backend.name)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "pip install 'reminder[openvino]'" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "ort"  # auto goes on without it


def test_fp32_means_f32_and_bf16_is_openvino_only(int8_bundle):
    """OpenVINO computes an FP32 model in bf16 by default where the CPU has native bf16:
    --precision fp32 asks for f32, bf16 for bf16, and the predictor says which it got."""
    f32 = Predictor(int8_bundle, backend="openvino", precision="fp32")
    assert f32.precision == "fp32" and f32.backend.execution_precision == "fp32"
    assert f32.backend.artifact == "onnx"
    bf16 = Predictor(int8_bundle, backend="openvino", precision="bf16")
    assert bf16.backend.artifact == "onnx" and bf16.precision in ("bf16", "fp32")  # fp32 where the CPU has no bf16
    with pytest.raises(ReminderError, match="bf16 runs on the openvino backend only"):
        Predictor(int8_bundle, backend="ort", precision="bf16")


def _native_threads() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("Threads:"))


def test_models_dropped_on_reload_free_their_threads(bundles):
    """Each reload makes a new predictor; with the THROUGHPUT queue's callback holding the
    backend, every dropped one kept its compiled model and 3 threads (6 sources, 15 reloads:
    32 -> 74 threads, 198 -> 452 MB)."""
    import gc

    frames = [frame.transpose(1, 2, 0).astype(np.uint8) for frame in _batch(count=4)]
    counts = []
    for _ in range(8):
        predictor = Predictor(bundles[0], backend="openvino", hint="THROUGHPUT")
        predictor.predict(frames)
        del predictor
        gc.collect()
        counts.append(_native_threads())
    assert counts[-1] <= counts[1] + 1, counts
