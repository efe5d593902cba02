"""TensorRT engine handling that a CPU can check: shape profiles, the ONNX Runtime /
TensorRT version match, and the TensorRT backend's control flow.

The backend tests use ``FakeTensorRT`` below, a STAND-IN for the few calls of TensorRT's
Python API that the backend makes (``Runtime.deserialize_cuda_engine``,
``create_execution_context``, ``set_input_shape``, ``execute_async_v3``...). It exists
only to drive the backend's error handling here, where TensorRT cannot be installed; it
never replaces the GPU tests (``tests/gpu``), which build and run real engines.
"""

from __future__ import annotations

import json
import sys
import types
from enum import Enum

import numpy as np
import pytest

from reminder.contracts.manifest import Manifest
from reminder.bundle import file_entry, write_manifest
from reminder.errors import ReminderError
from reminder.runtime import engines
from reminder.runtime.backends import TensorRTBackend, select_backend
from reminder.runtime.engines import EngineProfile, ort_tensorrt_mismatch, with_header
from reminder.runtime.predictor import Predictor, check_profile


def test_profile_covers_parity_sizes_and_the_input_with_margin():
    profile = EngineProfile.covering([(64, 64), (720, 1280)], opt=(512, 512), max_batch=4, margin=0.5)
    assert profile.min_shape == (1, 32, 32) and profile.opt_shape == (1, 512, 512)
    assert profile.max_shape == (4, 1440, 2560)
    assert profile.holds(64, 64) and profile.holds(720, 1280, 4) and not profile.holds(720, 1280, 5)
    assert not profile.holds(16, 64)
    assert EngineProfile.from_json(json.loads(json.dumps(profile.to_json()))) == profile
    assert profile.ort_options() == {"trt_profile_min_shapes": "images:1x3x32x32",
                                     "trt_profile_opt_shapes": "images:1x3x512x512",
                                     "trt_profile_max_shapes": "images:4x3x1440x2560"}
    with pytest.raises(ReminderError, match="not ordered"):
        EngineProfile((1, 600, 600), (1, 512, 512), (8, 1024, 1024))


def test_ort_provider_gets_the_profile():
    name, options = engines.ort_tensorrt_provider("/tmp/cache", profile=EngineProfile())
    assert name == "TensorrtExecutionProvider"
    assert options["trt_profile_max_shapes"] == "images:8x3x1024x1024" and options["trt_engine_cache_enable"]


def test_ort_that_cannot_drive_tensorrt_11_is_named():
    assert "onnxruntime 1.24.1 cannot drive TensorRT 11.1.0" in ort_tensorrt_mismatch("1.24.1", "11.1.0")
    assert ort_tensorrt_mismatch("1.27.0", "11.1.0") is None
    assert ort_tensorrt_mismatch("1.20.0", "10.3.0") is None
    assert ort_tensorrt_mismatch("1.20.0", None) is None


def test_ort_tensorrt_provider_only_where_tensorrt_can_load():
    """onnxruntime-gpu lists TensorRT's provider on a GPU server without TensorRT; choosing
    it there printed a provider error and a retry on every session start (the GPU check)."""
    listed = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    choose = engines.default_ort_providers
    assert choose(listed, ort_version="1.31.1", tensorrt_version=None, tensorrt_present=False) == (
        ["CUDAExecutionProvider", "CPUExecutionProvider"], None)
    assert choose(listed, ort_version="1.31.1", tensorrt_version=None, tensorrt_present=True)[0][0] == listed[0]
    providers, why = choose(listed, ort_version="1.24.1", tensorrt_version="11.1.0", tensorrt_present=True)
    assert providers == listed[1:] and "cannot drive TensorRT 11.1.0" in why
    assert choose(["CPUExecutionProvider"], ort_version="1.31.1", tensorrt_version="10.3", tensorrt_present=True) == (
        ["CPUExecutionProvider"], None)


def test_predictor_refuses_what_an_engine_cannot_take():
    profile = EngineProfile((1, 256, 256), (1, 512, 512), (4, 1024, 1024))
    assert check_profile(profile, (512, 512), "letterbox", "m.engine") == 4
    assert check_profile(None, (9999, 9999), "none", "m.engine") is None
    with pytest.raises(ReminderError, match="720x1400 is outside engine m.engine's profile"):
        check_profile(profile, (720, 1400), "letterbox", "m.engine")
    with pytest.raises(ReminderError, match="resize=fit feeds frames at shapes of their own"):
        check_profile(profile, (512, 512), "fit", "m.engine")


def test_predictor_splits_batches_larger_than_the_backend_takes(bundles, frames):
    predictor = Predictor(bundles[0])
    calls = []
    run = predictor.backend

    def counting(batch):
        calls.append(len(batch))
        return run(batch)

    expected = predictor.predict(frames[:5])
    predictor.backend, predictor.max_batch = counting, 2
    got = predictor.predict(frames[:5])
    assert calls == [2, 2, 1]
    assert all(np.array_equal(a.labels, b.labels) for a, b in zip(expected, got))


# -- the TensorRT backend's control flow, on a stand-in of TensorRT's API ----------------

class FakeTensorRT(types.ModuleType):
    """STAND-IN for TensorRT's Python API (control flow only; see the module docstring)."""

    __version__ = "10.3.0"

    class DataType(Enum):
        FLOAT = 0
        UINT8 = 5

    class TensorIOMode(Enum):
        INPUT = 1
        OUTPUT = 2

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    def __init__(self, *, engine_ok=True, shape_ok=True, run_ok=True):
        super().__init__("tensorrt")
        self.engine_ok, self.shape_ok, self.run_ok = engine_ok, shape_ok, run_ok
        self.calls = []
        fake = self

        class Context:
            def set_input_shape(self, name, shape):
                fake.calls.append(("set_input_shape", shape))
                self.shape = shape
                return fake.shape_ok

            def set_tensor_address(self, name, address):
                fake.calls.append(("address", name))

            def get_tensor_shape(self, name):
                return (self.shape[0], self.shape[2], self.shape[3])

            def execute_async_v3(self, stream):
                fake.calls.append(("execute", stream))
                return fake.run_ok

        class Engine:
            num_io_tensors = 2

            def get_tensor_name(self, i):
                return ["images", "labels"][i]

            def get_tensor_mode(self, name):
                return fake.TensorIOMode.INPUT if name == "images" else fake.TensorIOMode.OUTPUT

            def get_tensor_dtype(self, name):
                return fake.DataType.FLOAT if name == "images" else fake.DataType.UINT8

            def create_execution_context(self):
                return Context()

        class Runtime:
            def __init__(self, logger):
                pass

            def deserialize_cuda_engine(self, data):
                return Engine() if fake.engine_ok else None

        self.Runtime = Runtime


class HostBuffers:
    """STAND-IN for CudaBuffers: host arrays, a stream handle that is not the default (0)."""

    handle = 7

    def upload(self, array):
        return array

    def empty(self, shape, dtype):
        return np.full(shape, 3, dtype=dtype)

    def address(self, array):
        return array.ctypes.data

    def synchronize(self):
        pass

    def download(self, array):
        return array


PROFILE = EngineProfile((1, 32, 32), (1, 64, 64), (2, 128, 128))


@pytest.fixture
def engine_file(tmp_path, monkeypatch):
    monkeypatch.setattr(engines, "gpu_compute_capability", lambda device=0: "sm87")
    path = tmp_path / "model.sm87.engine"
    path.write_bytes(with_header({"tensorrt": "10.3.0", "compute_capability": "sm87", "precision": "fp32",
                                  "profile": PROFILE.to_json()}, b"\0" * 32))
    return path


def _install(monkeypatch, **behaviour) -> FakeTensorRT:
    fake = FakeTensorRT(**behaviour)
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    return fake


def test_engine_runs_on_its_own_stream(engine_file, monkeypatch):
    fake = _install(monkeypatch)
    backend = TensorRTBackend(engine_file, buffers=HostBuffers())
    out = backend(np.zeros((2, 3, 40, 50), np.float32))
    assert out["labels"].shape == (2, 40, 50) and out["labels"].dtype == np.uint8
    assert ("execute", 7) in fake.calls


def test_engine_that_does_not_deserialise_is_refused_and_auto_falls_back(engine_file, monkeypatch, bundles, tmp_path):
    _install(monkeypatch, engine_ok=False)
    with pytest.raises(ReminderError, match="could not deserialise engine model.sm87.engine"):
        TensorRTBackend(engine_file, buffers=HostBuffers())
    bundle = tmp_path / "bundle"
    import shutil

    shutil.copytree(bundles[0], bundle)
    shutil.copy(engine_file, bundle / engine_file.name)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["artifacts"]["tensorrt"] = {"path": engine_file.name, **file_entry(bundle / engine_file.name)}
    write_manifest(bundle, manifest)
    messages = []
    backend = select_backend(bundle, Manifest(manifest), "auto", log=messages.append)
    assert backend.name in ("ort", "openvino") and "could not deserialise" in messages[0]  # the ONNX artifact


def test_refused_input_shape_is_an_error_not_stale_outputs(engine_file, monkeypatch):
    _install(monkeypatch, shape_ok=False)
    backend = TensorRTBackend(engine_file, buffers=HostBuffers())
    with pytest.raises(ReminderError, match=r"refused input shape \(1, 3, 64, 64\)"):
        backend(np.zeros((1, 3, 64, 64), np.float32))


def test_failed_execution_is_an_error(engine_file, monkeypatch):
    _install(monkeypatch, run_ok=False)
    backend = TensorRTBackend(engine_file, buffers=HostBuffers())
    with pytest.raises(ReminderError, match=r"failed to run engine model.sm87.engine on input shape \(1, 3, 64, 64\)"):
        backend(np.zeros((1, 3, 64, 64), np.float32))


def test_shape_outside_the_profile_is_refused_before_tensorrt_sees_it(engine_file, monkeypatch):
    fake = _install(monkeypatch)
    backend = TensorRTBackend(engine_file, buffers=HostBuffers())
    with pytest.raises(ReminderError, match="accepts batch 1-2, height 32-128, width 32-128"):
        backend(np.zeros((1, 3, 720, 1280), np.float32))
    assert not [c for c in fake.calls if c[0] == "set_input_shape"]
