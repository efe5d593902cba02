"""One writer per format of the artifact table (:mod:`reminder.contracts.artifacts`): the
exporter dispatches through ``WRITERS``, whose keys are the table's, so a format added to
the table without a writer fails the tests instead of falling through an ``elif``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from reminder.bundle import file_entry
from reminder.contracts.manifest import Manifest
from reminder.errors import ReminderError
from reminder.export.quantize import Int8Options
from reminder.runtime.engines import EngineProfile


@dataclass
class Job:
    """What every writer may read: the export module, its example input, the staging
    folder, the manifest so far, the ONNX metadata, and the options of each format."""

    module: object
    example: object
    staging: Path
    manifest: Manifest
    metadata: dict
    formats: Sequence[str]
    device: str = "cpu"
    trt_fp16: bool = False
    trt_profile: EngineProfile | None = None
    int8: Int8Options | None = None
    trt_int8: bool = False
    onnx_base: tuple[Path, object] | None = None  # (the parent's model.onnx, its export module): an update
    log: Callable[[str], None] = print


def _onnx(job: Job, target: Path) -> tuple[Path, dict]:
    """Traced, or, for an update, the parent's graph with the new weights written into it
    (:mod:`reminder.export.patch`), which is about 13 s faster on a 2-core CPU."""
    from reminder.export.onnx import export_onnx

    if job.onnx_base is not None and job.onnx_base[0].is_file():
        from reminder.export.patch import patched_onnx

        if patched_onnx(job.onnx_base[0], job.onnx_base[1], job.module, target, metadata=job.metadata,
                        example=job.example) is not None:
            return target, {"opset": 18, "written_from": "the parent's graph, new weights"}
        job.log("the parent's ONNX graph could not take the new weights exactly: tracing the model again")
    return export_onnx(job.module, target, job.example, metadata=job.metadata), {"opset": 18}


def _onnx_int8(job: Job, target: Path) -> tuple[Path, dict]:
    from reminder.export.int8_fallback import quantize_gated

    return target, quantize_gated(job.staging, job.manifest, target, job.int8, job.formats, job.log)


def _torchscript(job: Job, target: Path) -> tuple[Path, dict]:
    from reminder.export.torchscript import export_torchscript

    return export_torchscript(job.module, target, job.example, metadata=job.metadata), {}


def _aoti(job: Job, target: Path) -> tuple[Path, dict]:
    from reminder.export.aoti import export_aoti

    return export_aoti(job.module, target, job.example, metadata=job.metadata, device=job.device), \
        {"device": job.device}


def _tensorrt(job: Job, target: Path) -> tuple[Path, dict]:
    """The engine, built from the bundle's ONNX (or a temporary one: FP16 for TensorRT 11's
    strongly typed FP16, FP32 when the bundle has no ONNX); temporary sources are removed.
    With INT8: TensorRT 10 calibrates on the calibration images and the calibration cache
    joins the bundle's files; TensorRT 11 builds from the bundle's QDQ ONNX."""
    from reminder.export.onnx import export_onnx
    from reminder.export.tensorrt import build_engine
    from reminder.runtime.engines import cache_root, gpu_compute_capability, import_tensorrt, tensorrt_major

    trt = import_tensorrt()
    newer = tensorrt_major(trt) >= 11
    staging, int8 = job.staging, job.int8 if job.trt_int8 else None
    source, temporary, calibration = staging / "model.onnx", None, {}
    if int8 is not None:
        from reminder.export.quantize import calibration_inputs

        calibration = {"int8": True}
        if newer:  # no calibrator on TensorRT 11: the QDQ graph carries the scales
            source = staging / "model.int8.onnx"
            if not source.is_file():
                raise ReminderError(f"TensorRT {trt.__version__} builds INT8 from the QDQ ONNX: add onnx-int8 to "
                                    f"the formats")
        else:
            calibration.update(calibration=calibration_inputs(job.manifest.input, int8.calibration),
                               calibration_cache=staging / "calibration.cache")
    elif job.trt_fp16 and newer:
        temporary = source = export_onnx(job.module, staging / ".engine-source.fp16.onnx", job.example,
                                         metadata=job.metadata, fp16=True)
    if not source.is_file():
        temporary = source = export_onnx(job.module, staging / ".engine-source.onnx", job.example,
                                         metadata=job.metadata)
    try:
        sm = gpu_compute_capability()
        path = target.with_name(target.name.format(sm=sm))
        timing_cache = cache_root() / "tensorrt" / f"timing-{trt.__version__}-{sm}.cache"
        timing_cache.parent.mkdir(parents=True, exist_ok=True)
        header = build_engine(source, path, profile=job.trt_profile, fp16=job.trt_fp16, timing_cache=timing_cache,
                              **calibration)
        if (staging / "calibration.cache").is_file():  # a Jetson rebuilds its INT8 engine from it
            job.manifest.add_file("calibration.cache", {**file_entry(staging / "calibration.cache"),
                                                        "calibration": int8.source})
    finally:
        if temporary is not None:
            temporary.unlink(missing_ok=True)
    # the engine's GPU buffers come from torch (runtime.engines.CudaBuffers)
    return path, {**header, "runtime_requires": ["tensorrt", "torch"]}


# format -> its writer; the keys are the artifact table's (tests/export/test_export.py checks)
WRITERS: dict[str, Callable[[Job, Path], tuple[Path, dict]]] = {
    "onnx": _onnx, "onnx-int8": _onnx_int8, "torchscript": _torchscript, "aoti": _aoti, "tensorrt": _tensorrt}
# formats whose absence on this machine skips them (recorded) instead of failing the export
OPTIONAL = ("tensorrt",)


def export_formats(module, formats, staging: Path, manifest: Manifest, metadata: dict, **options) -> None:
    """Write every format of ``formats`` (artifact kinds, in the table's order) into
    ``staging`` and record each in ``manifest``; an optional one that cannot be built here
    is recorded as skipped with why."""
    from reminder.export.graph import example_input

    job = Job(module, example_input(), staging, manifest, metadata, [f.name for f in formats], **options)
    for fmt in formats:
        try:
            path, extra = WRITERS[fmt.name](job, staging / fmt.filename)
        except ReminderError as error:
            if fmt.name not in OPTIONAL:
                raise
            manifest.skip(fmt.name, str(error))
            job.log(f"{fmt.name} skipped: {error}")
            continue
        manifest.add_artifact(fmt.name, {"path": path.name, **file_entry(path), **extra})
        job.log(f"exported {fmt.name}: {path.name} ({path.stat().st_size / 1e6:.1f} MB)")
