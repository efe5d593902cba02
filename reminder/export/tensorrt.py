"""TensorRT engines built from the bundle's ONNX.

Written against TensorRT's documented Python API (10.x on JetPack, 11.x on servers);
``tensorrt`` is imported only inside these functions. TensorRT cannot be installed in the
workplace that develops this project, so this module's tests are marked ``tensorrt`` and
skipped there.

Precision: TensorRT 10 builds FP16 from the FP32 ONNX with ``BuilderFlag.FP16`` (a weakly
typed network); TensorRT 11 removed the precision flags (networks are always strongly
typed), so FP16 there means building from an FP16 ONNX (``export_onnx(..., fp16=True)``).
An FP16 ONNX is strongly typed on either version.

INT8: TensorRT 10 calibrates the FP32 ONNX with an entropy calibrator
(:class:`EntropyCalibrator`) on the same images as the INT8 ONNX; its calibration cache is
stored in the bundle (``calibration.cache``), so a Jetson builds its own INT8 engine from
the bundle alone (``build_engine(..., int8=True, calibration_cache=...)`` without images).
TensorRT 11 removed implicit INT8 calibration: there the engine is built from the bundle's
QDQ ONNX (``model.int8.onnx``), whose scales are already in the graph.

An engine file starts with a small header (TensorRT version, GPU compute capability,
precision) so a device can refuse an engine of another GPU or TensorRT version before
deserialising it; the torch-free runtime reads it (:mod:`reminder.runtime.engines`).
"""

from __future__ import annotations

from pathlib import Path

from reminder.errors import ReminderError
from reminder.io import atomic_write_bytes
from reminder.runtime.engines import (EngineProfile, gpu_compute_capability, import_tensorrt, tensorrt_major,
                                      with_header)


class EntropyCalibrator:
    """TensorRT 10's entropy calibrator over ``(1, 3, h, w)`` float32 inputs, with its
    cache in ``cache_path``: read when present (then no image is needed), written after a
    calibration. Built on first use, as a subclass of ``trt.IInt8EntropyCalibrator2``."""

    def __new__(cls, inputs, cache_path: str | Path):
        trt = import_tensorrt()
        cache, writable = calibration_cache_bytes(cache_path)

        class _Calibrator(trt.IInt8EntropyCalibrator2):
            def __init__(self):
                trt.IInt8EntropyCalibrator2.__init__(self)
                self.inputs, self.cache_path, self.index, self.current = list(inputs), Path(cache_path), 0, None

            def get_batch_size(self):
                return 1

            def get_batch(self, names):
                if self.index >= len(self.inputs):
                    return None
                import torch

                self.current = torch.from_numpy(self.inputs[self.index]).cuda()  # kept alive until the next batch
                self.index += 1
                return [int(self.current.data_ptr())]

            def read_calibration_cache(self):
                return cache

            def write_calibration_cache(self, data):
                if writable:  # never into a verified or installed bundle
                    atomic_write_bytes(self.cache_path, bytes(data))

        return _Calibrator()


def calibration_cache_bytes(path: str | Path) -> tuple[bytes | None, bool]:
    """The calibration cache at ``path`` and whether a calibrator may write it. In a bundle
    (a folder with a manifest) it is verified against the manifest's sha256 first, and never
    written: a device builds its INT8 engine from the bundle's own cache, not a planted one."""
    from reminder.bundle import MANIFEST, read_manifest
    from reminder.errors import IntegrityError
    from reminder.io import sha256_file

    path = Path(path)
    if not (path.parent / MANIFEST).is_file():
        return (path.read_bytes() if path.is_file() else None), True
    manifest = read_manifest(path.parent)
    entry = manifest.listed_files().get(path.name) if manifest.has_file(path.name) else None
    if entry is None or not path.is_file():
        raise IntegrityError(f"{path} is not a file its bundle lists; an INT8 engine is built from the bundle's "
                             f"own calibration.cache")
    if sha256_file(path) != entry.get("sha256"):
        raise IntegrityError(f"{path} does not match its sha256 in {path.parent / MANIFEST}")
    return path.read_bytes(), False


def build_engine(onnx_path: str | Path, engine_path: str | Path, *, profile: EngineProfile = EngineProfile(),
                 fp16: bool = False, timing_cache: str | Path | None = None, workspace_gb: float = 4.0,
                 int8: bool = False, calibration: list | None = None,
                 calibration_cache: str | Path | None = None) -> dict:
    """Build a serialised engine for this GPU; returns its header (also in the file).
    ``timing_cache``: a file that speeds up later builds on the same GPU and TensorRT
    version (read when present, written after the build).
    ``int8`` (TensorRT 10, FP32 ONNX): calibrated on ``calibration`` (``(1, 3, h, w)``
    float32 inputs) or from ``calibration_cache`` alone; the cache is written there. On
    TensorRT 11, or for a QDQ ONNX, the scales come from the graph."""
    trt = import_tensorrt()
    major = tensorrt_major(trt)
    half_onnx = _is_fp16_onnx(onnx_path)
    qdq = _is_qdq_onnx(onnx_path)
    if int8 and not qdq:
        if major >= 11:
            raise ReminderError(f"TensorRT {trt.__version__} has no INT8 calibration: build from the bundle's QDQ "
                                f"model.int8.onnx (export with `format` onnx-int8)")
        if not calibration and not (calibration_cache and Path(calibration_cache).is_file()):
            raise ReminderError("an INT8 engine needs calibration images or the bundle's calibration.cache")
    if fp16 and major >= 11 and not half_onnx:
        raise ReminderError(f"TensorRT {trt.__version__} builds FP16 only from an FP16 ONNX; {onnx_path} is FP32")
    strongly_typed = major >= 11 or half_onnx
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ReminderError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if fp16 and not strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
    optimisation = builder.create_optimization_profile()
    optimisation.set_shape("images", *profile.shapes())
    config.add_optimization_profile(optimisation)
    if int8 and not strongly_typed:
        config.set_flag(trt.BuilderFlag.INT8)
        if not qdq:
            shape = tuple(calibration[0].shape) if calibration else profile.shapes()[1][:1] + profile.shapes()[1][1:]
            calibration_profile = builder.create_optimization_profile()
            calibration_profile.set_shape("images", shape, shape, shape)
            config.set_calibration_profile(calibration_profile)
            config.int8_calibrator = EntropyCalibrator(calibration or [], calibration_cache)
    cache = None
    if timing_cache is not None:
        cache_bytes = Path(timing_cache).read_bytes() if Path(timing_cache).is_file() else b""
        cache = config.create_timing_cache(cache_bytes)
        config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ReminderError(f"TensorRT failed to build an engine from {onnx_path}")
    header = {"tensorrt": trt.__version__, "compute_capability": gpu_compute_capability(),
              "precision": "int8" if int8 or qdq else "fp16" if fp16 or half_onnx else "fp32",
              "profile": profile.to_json()}
    atomic_write_bytes(engine_path, with_header(header, bytes(serialized)))
    if cache is not None:
        atomic_write_bytes(timing_cache, bytes(cache.serialize()))
    return header


def _is_qdq_onnx(onnx_path: str | Path) -> bool:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return any(node.op_type == "QuantizeLinear" for node in model.graph.node)


def _is_fp16_onnx(onnx_path: str | Path) -> bool:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
