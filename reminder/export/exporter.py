"""Export one trained step of a run into a verified bundle (DESIGN.md section 6)."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

from reminder.data.classes import voc_palette
from reminder.data.samples import read_image
from reminder.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from reminder.errors import ReminderError
from reminder.io import read_json
from reminder.bundle import BUNDLE_FORMAT, check_name, check_output_folder, file_entry, manifest_sha256, read_manifest, write_manifest
from reminder.export.formats import parse_formats
from reminder.export.graph import ExportModule, example_input
from reminder.export.parity import check_parity, images_from_folder
from reminder.runtime.backends import open_artifact
from reminder.runtime.engines import EngineProfile


def _tool_versions() -> dict:
    versions = {}
    for package in ("reminder", "torch", "onnx", "onnxruntime", "tensorrt"):
        try:
            from importlib.metadata import version

            versions[package] = version(package)
        except Exception:
            pass
    return versions


def _scenario_images(run: Path, config, step: int, limit: int):
    from reminder.train.run import load_run_data

    data = load_run_data(config, cache_dir=config.cache_dir or run / "cache")
    return [read_image(sample.image) for sample in data.step_test_samples(step)[:limit]]


def each_step_exporter(formats: str, *, log: Callable[[str], None] = print) -> Callable[[Path, int], Path]:
    """The ``on_step`` hook of :func:`reminder.train.run.train_scenario` that exports each
    step into ``RUN/bundles/step<t>`` (kept if already there), its parent the step before."""

    def export_step(run: Path, step: int) -> Path:
        target = Path(run) / "bundles" / f"step{step}"
        if (target / "manifest.json").is_file():
            return target
        return export_bundle(run, out=target, formats=formats, step=step, log=log)

    return export_step


def export_bundle(run: str | Path, *, out: str | Path, formats: str | list[str] = "onnx", step: int | None = None,
                  output: str = "labels", images: str | Path | None = None, parity_images: int = 8,
                  parity_threshold: float = 0.999, parent: str | Path | None = None, name: str | None = None,
                  version: str | None = None, device: str = "cpu", trt_fp16: bool = False,
                  trt_profile: EngineProfile | None = None, trt_sizes: Sequence[tuple[int, int]] = (),
                  trt_max_batch: int = 8, force: bool = False, log: Callable[[str], None] = print) -> Path:
    """Export step ``step`` (default: the last complete one) of ``run`` into bundle ``out``.

    Every artifact is checked against eager PyTorch; the bundle is written only if each
    one agrees on at least ``parity_threshold`` of the pixels. TensorRT asked for where it
    is missing is skipped with a one-line message (recorded in the manifest).

    ``trt_profile``: the input shapes a TensorRT engine accepts (default: every parity
    image's size, the manifest's input size and ``trt_sizes``, from half the smallest to
    twice the largest, batch 1 to ``trt_max_batch``); it is recorded as the manifest's
    ``input.profile``.
    ``trt_fp16``: an FP16 engine (TensorRT 10: the FP16 builder flag on the FP32 ONNX;
    TensorRT 11: built from an FP16 ONNX, which is not kept in the bundle).
    """
    from reminder.train.checkpoint import completed_steps, load_model
    from reminder.train.config import load_config

    run, out = Path(run), Path(out)
    chosen = parse_formats(formats)
    config = load_config(run)
    done = completed_steps(run)
    if not done:
        raise ReminderError(f"run {run} has no completed step to export")
    step = done[-1] if step is None else step
    if step not in done:
        raise ReminderError(f"step {step} of {run} was never trained (completed steps: {done[0]}..{done[-1]})")
    step_dir = run / f"step{step}"
    model, meta = load_model(step_dir)
    module = ExportModule(model, output=output)
    parent = Path(parent) if parent else (run / "bundles" / f"step{step - 1}" if step > 0 else None)
    if images:
        parity_set = images_from_folder(images, parity_images)
    else:
        parity_set = _scenario_images(run, config, step, parity_images)

    manifest = _manifest(run, config, meta, step, module, name, version, parent)
    protect = [run] + ([parent] if parent is not None and parent.exists() else [])
    files = {target: step_dir / source for source, target in (("model.safetensors", "checkpoint.safetensors"),
                                                              ("prototypes.safetensors", "prototypes.safetensors"))}
    return write_bundle(module, manifest, out=out, formats=chosen, parity_set=parity_set, files=files,
                        parity_threshold=parity_threshold, device=device, trt_fp16=trt_fp16,
                        trt_profile=trt_profile, trt_sizes=trt_sizes, trt_max_batch=trt_max_batch,
                        protect=protect, force=force, log=log)


def write_bundle(module: ExportModule, manifest: dict, *, out: str | Path, formats, parity_set: list,
                 files: dict[str, Path], parity_threshold: float = 0.999, device: str = "cpu",
                 trt_fp16: bool = False, trt_profile: EngineProfile | None = None,
                 trt_sizes: Sequence[tuple[int, int]] = (), trt_max_batch: int = 8, protect: Sequence[Path] = (),
                 force: bool = False, log: Callable[[str], None] = print) -> Path:
    """Export ``module`` in ``formats`` (parsed), copy ``files`` (bundle name -> source,
    skipped when the source is missing), check parity on ``parity_set`` and write the
    bundle ``out`` with ``manifest`` completed. Built in a staging folder beside ``out``
    and moved into place only when complete: an interruption leaves no bundle.

    ``out`` is checked first (:func:`reminder.bundle.check_output_folder`): it never is
    or contains a path of ``protect``, and replaces only a bundle of the same name unless
    ``force``. A bundle with no artifact (TensorRT asked for alone, where it is missing)
    is not written."""
    out = check_output_folder(out, check_name(manifest["name"], "bundle name"), protect=protect, force=force)
    check_name(manifest["version"], "bundle version")
    if trt_profile is None:
        spec = manifest["input"]
        trt_profile = EngineProfile.covering([image.shape[:2] for image in parity_set] + list(trt_sizes),
                                             opt=(spec["height"], spec["width"]), max_batch=trt_max_batch,
                                             margin=0.5)
    manifest["input"]["profile"] = trt_profile.to_json()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        metadata = {"reminder_manifest_version": manifest["version"], "classes": json.dumps(manifest["classes"]),
                    "step": str(manifest["step"]), "input": json.dumps(manifest["input"]), "output": module.output}
        _export_formats(module, formats, staging, manifest, metadata, device, trt_fp16, trt_profile, log)
        if not manifest["artifacts"]:
            skipped = "; ".join(f"{k}: {v}" for k, v in manifest["skipped"].items())
            raise ReminderError(f"no model was exported ({skipped}); no bundle written")
        for target, source in files.items():
            if Path(source).is_file():
                shutil.copyfile(source, staging / target)
                manifest["files"][target] = file_entry(staging / target)
        if parity_set:  # a frame for devices' smoke tests after an install
            from PIL import Image

            Image.fromarray(parity_set[0]).save(staging / "sample.png")
            manifest["files"]["sample.png"] = file_entry(staging / "sample.png")
        for fmt in manifest["artifacts"]:
            backend = open_artifact(staging, manifest, fmt)
            result = check_parity(module, backend, parity_set, threshold=parity_threshold)
            manifest["parity"][fmt] = result
            log(f"parity {fmt}: {100 * result['pixel_agreement']:.3f}% of pixels agree, max abs diff "
                f"{result['max_abs_diff']:.2e} on {result['images']} images")
            if not result["passed"]:
                raise ReminderError(f"parity failed for {fmt}: {100 * result['pixel_agreement']:.3f}% of pixels "
                                    f"agree with eager PyTorch, below {100 * parity_threshold:.2f}%; no bundle written")
        write_manifest(staging, manifest)
        staging.chmod(0o755)
        _replace_folder(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _manifest(run, config, meta, step, module, name, version, parent) -> dict:
    colors = meta.get("colors")  # the run's class colours (a user's own); older runs: VOC's by class id
    if colors is None:
        palette, dataset_ids = voc_palette(), [0] + list(meta["order"])
        colors = [palette[dataset_ids[i]] for i in range(len(meta["classes"]))]
    classes = [{"id": i, "name": n, "color": list(colors[i])} for i, n in enumerate(meta["classes"])]
    default_name = f"{config.dataset}-{config.setting}-{config.method}"
    if config.dataset == "custom":  # your own data: the run folder's name, made a plain name
        default_name = re.sub(r"[^A-Za-z0-9._+-]", "-", run.resolve().name).lstrip("._+-") or "model"

    size = config.eval_size or config.crop_size
    metrics = read_json(run / f"step{step}" / "metrics.json")
    manifest = {
        "format": BUNDLE_FORMAT, "name": name or default_name,
        "version": version or f"{run.name}-step{step}", "step": step,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "parent": None, "classes": classes,
        "input": {"height": size, "width": size, "layout": "NCHW", "dtype": "float32", "range": [0, 255],
                  "color": "RGB", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "normalization": "in-graph"},
        "outputs": {"kind": module.output, "names": module.output_names,
                    "label_dtype": str(module.label_dtype).replace("torch.", "")},
        "artifacts": {}, "skipped": {}, "files": {}, "parity": {},
        "model": {"backbone": meta["backbone"], "classes_per_step": meta["classes_per_step"],
                  "dataset": meta["dataset"], "setting": meta["setting"], "method": meta["method"],
                  "order": meta["order"]},
        "metrics": {k: metrics.get(k) for k in ("old", "new", "all", "iou")},
        "tools": _tool_versions(),
    }
    if parent is not None and (parent / "manifest.json").is_file():
        parent_manifest = read_manifest(parent)
        manifest["parent"] = {"version": parent_manifest["version"], "manifest_sha256": manifest_sha256(parent)}
    return manifest


def _export_formats(module, formats, staging, manifest, metadata, device, trt_fp16, trt_profile, log) -> None:
    from reminder.export.aoti import export_aoti
    from reminder.export.onnx import export_onnx
    from reminder.export.torchscript import export_torchscript

    example = example_input()
    for fmt in formats:
        try:
            if fmt.name == "onnx":
                path = export_onnx(module, staging / fmt.filename, example, metadata=metadata)
                extra = {"opset": 18}
            elif fmt.name == "torchscript":
                path, extra = export_torchscript(module, staging / fmt.filename, example, metadata=metadata), {}
            elif fmt.name == "aoti":
                path = export_aoti(module, staging / fmt.filename, example, metadata=metadata, device=device)
                extra = {"device": device}
            else:
                path, extra = _export_engine(module, staging, fmt, example, metadata, trt_fp16, trt_profile)
        except ReminderError as error:
            if fmt.name != "tensorrt":
                raise
            manifest["skipped"][fmt.name] = str(error)
            log(f"tensorrt skipped: {error}")
            continue
        manifest["artifacts"][fmt.name] = {"path": path.name, **file_entry(path), **extra}
        log(f"exported {fmt.name}: {path.name} ({path.stat().st_size / 1e6:.1f} MB)")


def _export_engine(module, staging: Path, fmt, example, metadata, fp16: bool, profile: EngineProfile):
    """The engine, built from the bundle's ONNX (or a temporary one: FP16 for TensorRT 11's
    strongly typed FP16, FP32 when the bundle has no ONNX); temporary sources are removed."""
    from reminder.export.onnx import export_onnx
    from reminder.export.tensorrt import build_engine
    from reminder.runtime.engines import cache_root, gpu_compute_capability, import_tensorrt, tensorrt_major

    trt = import_tensorrt()
    source = staging / "model.onnx"
    temporary = None
    if fp16 and tensorrt_major(trt) >= 11:
        temporary = source = export_onnx(module, staging / ".engine-source.fp16.onnx", example, metadata=metadata,
                                         fp16=True)
    elif not source.is_file():
        temporary = source = export_onnx(module, staging / ".engine-source.onnx", example, metadata=metadata)
    try:
        sm = gpu_compute_capability()
        path = staging / fmt.filename.format(sm=sm)
        timing_cache = cache_root() / "tensorrt" / f"timing-{trt.__version__}-{sm}.cache"
        timing_cache.parent.mkdir(parents=True, exist_ok=True)
        header = build_engine(source, path, profile=profile, fp16=fp16, timing_cache=timing_cache)
    finally:
        if temporary is not None:
            temporary.unlink(missing_ok=True)
    # the engine's GPU buffers come from torch (runtime.engines.CudaBuffers)
    return path, {**header, "runtime_requires": ["tensorrt", "torch"]}


def _replace_folder(staging: Path, out: Path) -> None:
    """Move the finished bundle into place; an existing bundle is replaced only then."""
    previous = None
    if out.exists():
        previous = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, previous)
    os.replace(staging, out)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)
