"""The runtime in a virtual environment that has no torch: numpy, onnxruntime,
opencv-python-headless and click only (the versions installed here, so pip reuses its
cache), and reminder installed without dependencies."""

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np

from conftest import label_ids, read_video, write_video
from reminder.runtime.predictor import Predictor

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_PACKAGES = ["numpy", "onnxruntime", "opencv-python-headless", "click"]


def _run(command, **options):
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=600, **options)
    assert result.returncode == 0, f"{' '.join(map(str, command))}\n{result.stdout}\n{result.stderr}"
    return result


def test_runtime_runs_a_bundle_without_torch(bundles, frames, tmp_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv])
    python = venv / "bin" / "python"
    pins = [f"{name}=={version(name)}" for name in RUNTIME_PACKAGES]
    _run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", *pins])
    _run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps", ROOT])
    installed = _run([python, "-m", "pip", "list", "--format=freeze"]).stdout.lower()
    assert "torch" not in installed and "onnx==" not in installed

    video = write_video(tmp_path / "clip.mp4", frames[:12])
    out = tmp_path / "out"
    result = _run([venv / "bin" / "reminder", "run", bundles[1], "--source", video, "--out", out,
                   "--save", "labels,stats,video", "--quiet"], cwd=tmp_path)
    assert "12 frames from 1 source(s)" in result.stdout
    expected = Predictor(bundles[1], backend="ort").predict(read_video(video))  # the venv has no OpenVINO
    written = sorted((out / "clip" / "labels").glob("*.png"))
    assert len(written) == 12
    for path, prediction in zip(written, expected):
        assert np.array_equal(label_ids(path), prediction.labels)

    script = ("import sys, numpy as np\n"
              "from reminder.runtime.predictor import Predictor\n"
              f"predictor = Predictor({str(bundles[1])!r})\n"
              "[p] = predictor.predict(np.zeros((40, 60, 3), np.uint8))\n"
              "assert p.labels.shape == (40, 60)\n"
              "assert not any(m == 'torch' or m.startswith('torch.') for m in sys.modules), 'torch was imported'\n"
              "print(predictor.backend_name)\n")
    assert "ort" in _run([python, "-c", script], cwd=tmp_path).stdout
    bench = _run([venv / "bin" / "reminder", "bench", bundles[1], "--iterations", "3", "--warmup", "1"], cwd=tmp_path)
    assert '"p99"' in bench.stdout
    missing = subprocess.run([str(python), "-c", "import torch"], capture_output=True, text=True)
    assert missing.returncode != 0
