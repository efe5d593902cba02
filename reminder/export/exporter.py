"""Export one trained step of a run into a verified bundle (docs/bundle.md)."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

from reminder.contracts import ClassTable
from reminder.data.classes import voc_palette
from reminder.data.samples import read_image
from reminder.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from reminder.errors import ReminderError
from reminder.io import folder_lock, read_json
from reminder.bundle import (check_name, check_output_folder, file_entry, manifest_sha256, read_manifest,
                             remove_stale_staging, write_manifest)
from reminder.contracts.manifest import InputSpec, Manifest, OutputSpec, Parent
from reminder.export import sizes
from reminder.export.formats import parse_formats
from reminder.export.graph import ExportModule
from reminder.export.parity import check_parity, images_from_folder
from reminder.export.int8_fallback import gate_int8
from reminder.export.writers import export_formats
from reminder.export.quantize import DEFAULT_CALIBRATION_IMAGES, Int8Options
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


def _run_data(run: Path, config):
    from reminder.train.run import load_run_data

    return load_run_data(config, cache_dir=config.cache_dir or run / "cache")


def _spread(items: list, count: int) -> list:
    """``count`` items spread evenly over ``items`` (all of them when there are fewer)."""
    if len(items) <= count:
        return list(items)
    return [items[round(i * (len(items) - 1) / max(count - 1, 1))] for i in range(count)]


def _int8_options(load_data: Callable, run_name: str, step: int, *, images, calibration_images,
                  calibration_count: int, gate_images: int, min_agreement: float, max_miou_drop: float) -> Int8Options:
    """Calibration: ``calibration_images`` or the step's training images; the gate's held-out
    images: ``images`` (no labels) or the step's test images with their labels.
    ``load_data()``: the run's data (loaded once, shared with the parity images)."""
    if calibration_images:
        calibration = images_from_folder(calibration_images, calibration_count)
        source = {"source": str(calibration_images), "images": len(calibration)}
    else:
        chosen = _spread(load_data().train_dataset(step).samples, calibration_count)
        calibration = [read_image(s.image) for s in chosen]
        source = {"source": f"training images of step {step} of run {run_name}",
                  "images": len(calibration), "ids": [s.id for s in chosen]}
    if images:
        gate = [(image, None) for image in images_from_folder(images, gate_images)]
    else:
        dataset = load_data().test_dataset(step)
        picks = _spread(list(range(len(dataset))), gate_images)
        gate = [(dataset[i][0].permute(1, 2, 0).numpy(), dataset[i][1].numpy()) for i in picks]
    return Int8Options(calibration, source, gate, min_agreement=min_agreement, max_miou_drop=max_miou_drop)


def each_step_exporter(formats: str, *, log: Callable[[str], None] = print) -> Callable[[Path, int], Path]:
    """The ``on_step`` hook of :func:`reminder.train.run.train_scenario` that exports each
    step into ``RUN/bundles/step<t>`` (kept if already there), its parent the step before."""

    def export_step(run: Path, step: int) -> Path:
        target = Path(run) / "bundles" / f"step{step}"
        if (target / "manifest.json").is_file():
            return target
        return export_bundle(run, out=target, formats=formats, step=step, log=log)

    return export_step


def _holding_the_run_lock(export):
    """A training or an increment of the same run waits for the export, or it for them."""
    @functools.wraps(export)
    def locked(run, **options):
        with folder_lock(run, what="run", log=options.get("log", print)):
            return export(run, **options)
    return locked


@_holding_the_run_lock
def export_bundle(run: str | Path, *, out: str | Path, formats: str | list[str] = "onnx", step: int | None = None,
                  output: str = "labels", images: str | Path | None = None, parity_images: int = 8,
                  parity_threshold: float = 0.999, parent: str | Path | None = None, name: str | None = None,
                  version: str | None = None, device: str = "cpu", trt_fp16: bool = False,
                  trt_profile: EngineProfile | None = None, trt_sizes: Sequence[tuple[int, int]] = (),
                  trt_max_batch: int = 8, trt_int8: bool = False, calibration_images: str | Path | None = None,
                  calibration_count: int = DEFAULT_CALIBRATION_IMAGES, gate_images: int = 32,
                  int8_min_agreement: float = 0.99, int8_max_miou_drop: float = 1.0, force: bool = False,
                  deploy_size: tuple[int, int] | None = None, log: Callable[[str], None] = print) -> Path:
    """Export step ``step`` (default: the last complete one) of ``run`` into bundle ``out``.

    Every artifact is checked against eager PyTorch; the bundle is written only if each
    one agrees on at least ``parity_threshold`` of the pixels. TensorRT asked for where it
    is missing is skipped with a one-line message (recorded in the manifest).

    ``trt_profile``: the input shapes a TensorRT engine accepts (default: every parity
    image's size, the manifest's input size and ``trt_sizes``, from half the smallest to
    twice the largest, batch 1 to ``trt_max_batch``); it is recorded as the manifest's
    ``input.profile``. ``deploy_size``: (height, width) the bundle runs at (default: the
    frame size of a run on your own data, see :mod:`reminder.export.sizes`).
    ``trt_fp16``: an FP16 engine (TensorRT 10: the FP16 builder flag on the FP32 ONNX;
    TensorRT 11: built from an FP16 ONNX, which is not kept in the bundle).

    INT8 (format ``onnx-int8``, and ``trt_int8`` for the engine) is calibrated on
    ``calibration_count`` of the step's training images (or ``calibration_images``) and must
    pass its quality gate against the FP32 ONNX on ``gate_images`` held-out images (the
    step's test images with labels, or ``images``): at least ``int8_min_agreement`` of the
    pixels with the same label and, with labels, at most ``int8_max_miou_drop`` points of
    mIoU lost. Below it, nothing is written and the error gives both numbers.
    """
    from reminder.train.checkpoint import completed_steps, load_model
    from reminder.train.config import load_config

    run, out = Path(run), Path(out)
    chosen = parse_formats(formats)
    asked = {"trt_fp16": trt_fp16, "trt_int8": trt_int8, "trt_sizes": bool(trt_sizes),
             "trt_profile": trt_profile is not None}
    unused = [name for name, given in asked.items() if given]
    if unused and "tensorrt" not in [f.name for f in chosen]:
        raise ReminderError(f"{unused[0]} is an option of the tensorrt format, which is not among the formats "
                            f"asked for ({', '.join(f.name for f in chosen)})")
    if trt_int8:  # the engine's quality gate compares it with the FP32 ONNX
        chosen = parse_formats([f.name for f in chosen] + ["onnx"])
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
    load_data = functools.cache(lambda: _run_data(run, config))
    if images:
        parity_set = images_from_folder(images, parity_images)
    else:
        parity_set = [read_image(s.image) for s in load_data().step_test_samples(step)[:parity_images]]
    int8 = None
    if "onnx-int8" in [f.name for f in chosen] or trt_int8:
        int8 = _int8_options(load_data, run.resolve().name, step, images=images,
                             calibration_images=calibration_images,
                             calibration_count=calibration_count, gate_images=gate_images,
                             min_agreement=int8_min_agreement, max_miou_drop=int8_max_miou_drop)

    size, size_source = sizes.deploy_size(config, step, load_data, deploy_size)
    manifest = _manifest(run, config, meta, step, module, name, version, parent, size)
    manifest.with_input(sizes={"deploy": list(size), "from": size_source, "train_crop": config.crop_size})
    protect = [run] + ([parent] if parent is not None and parent.exists() else [])
    files = {target: step_dir / source for source, target in (("model.safetensors", "checkpoint.safetensors"),
                                                              ("prototypes.safetensors", "prototypes.safetensors"))}
    return write_bundle(module, manifest, out=out, formats=chosen, parity_set=parity_set, files=files,
                        parity_threshold=parity_threshold, device=device, trt_fp16=trt_fp16,
                        trt_profile=trt_profile, trt_sizes=trt_sizes, trt_max_batch=trt_max_batch,
                        int8=int8, trt_int8=trt_int8, protect=protect, force=force, log=log)


def write_bundle(module: ExportModule, manifest: Manifest, *, out: str | Path, formats, parity_set: list,
                 files: dict[str, Path], parity_threshold: float = 0.999, device: str = "cpu",
                 trt_fp16: bool = False, trt_profile: EngineProfile | None = None,
                 trt_sizes: Sequence[tuple[int, int]] = (), trt_max_batch: int = 8, int8: Int8Options | None = None,
                 trt_int8: bool = False, protect: Sequence[Path] = (), force: bool = False,
                 onnx_base: tuple[Path, ExportModule] | None = None, log: Callable[[str], None] = print) -> Path:
    """Export ``module`` in ``formats`` (parsed), copy ``files`` (bundle name -> source,
    skipped when the source is missing), check parity on ``parity_set`` and write the
    bundle ``out`` with ``manifest`` completed. Built in a staging folder beside ``out``
    and moved into place only when complete: an interruption leaves no bundle.

    ``out`` is checked first (:func:`reminder.bundle.check_output_folder`): it never is
    or contains a path of ``protect``, and replaces only a bundle of the same name unless
    ``force``. A bundle with no artifact (TensorRT asked for alone, where it is missing)
    is not written. ``int8``: calibration and quality gate of the INT8 formats (required
    by ``onnx-int8`` and ``trt_int8``). ``onnx_base``: the parent bundle's ``model.onnx``
    and export module, whose graph takes ``module``'s weights instead of a new trace
    (an update; :mod:`reminder.export.patch`)."""
    if int8 is None and ("onnx-int8" in [f.name for f in formats] or trt_int8):
        raise ReminderError("an INT8 export needs calibration images: none were given")
    out = check_output_folder(out, manifest.name, protect=protect, force=force)
    if trt_profile is None:
        trt_profile = EngineProfile.covering([image.shape[:2] for image in parity_set] + list(trt_sizes),
                                             opt=manifest.input.size, max_batch=trt_max_batch, margin=0.5)
    manifest.with_input(profile=trt_profile.to_json())
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(out)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-{os.getpid()}-", dir=out.parent))
    try:
        metadata = {"reminder_manifest_version": manifest.version,
                    "classes": json.dumps(manifest.classes.to_manifest()), "step": str(manifest.step),
                    "input": json.dumps(manifest.input.to_json()), "output": module.output}
        export_formats(module, formats, staging, manifest, metadata, device=device, trt_fp16=trt_fp16,
                       trt_profile=trt_profile, int8=int8, trt_int8=trt_int8, onnx_base=onnx_base, log=log)
        if not manifest.formats:
            skipped = "; ".join(f"{k}: {v}" for k, v in manifest.skipped.items())
            raise ReminderError(f"no model was exported ({skipped}); no bundle written")
        for target, source in files.items():
            if Path(source).is_file():
                shutil.copyfile(source, staging / target)
                manifest.add_file(target, file_entry(staging / target))
        if parity_set:  # a frame for devices' smoke tests after an install
            from PIL import Image

            Image.fromarray(parity_set[0]).save(staging / "sample.png")
            manifest.add_file("sample.png", file_entry(staging / "sample.png"))
        for fmt in manifest.formats:
            if fmt == "onnx-int8":  # gated as it was quantised
                continue
            if manifest.artifact(fmt).precision == "int8":
                gate_int8(staging, manifest, fmt, int8, log)
                continue
            backend = open_artifact(staging, manifest, fmt)
            result = check_parity(module, backend, parity_set, threshold=parity_threshold, spec=manifest.input)
            manifest.record_parity(fmt, result)
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


def _quality(metrics: dict, meta: dict, step: int) -> dict:
    """Per-class IoU of the step's evaluation, the classes this step added, and the weak ones
    (contracts.quality's rule), for `fleet publish` and for users reading the manifest."""
    from reminder.contracts.quality import weak_classes

    iou = metrics.get("iou") or {}
    added = meta["classes_per_step"][-1] if meta.get("classes_per_step") else 0
    new = list(meta["classes"][1:] if step == 0 else meta["classes"][-added:] if added else [])
    return {"per_class_iou": iou, "pixel_share": metrics.get("pixel_share"), "new_classes": new,
            "weak": weak_classes(iou), "measured_on": "the step's evaluation images"}


def _plain_name(text: str, fallback: str) -> str:
    """``text`` made a bundle name or version: characters other than letters, digits and
    ``._+-`` become ``-``, and it starts with a letter or digit (a run folder may be named
    ``exp v1.0`` or ``.hidden``)."""
    return re.sub(r"[^A-Za-z0-9._+-]", "-", text).lstrip("._+-")[:100] or fallback


def _manifest(run, config, meta, step, module, name, version, parent, size: tuple[int, int]) -> Manifest:
    colors = meta.get("colors")  # the run's class colours (a user's own); older runs: VOC's by class id
    if colors is None:
        palette, dataset_ids = voc_palette(), [0] + list(meta["order"])
        colors = [palette[dataset_ids[i]] for i in range(len(meta["classes"]))]
    classes = ClassTable(tuple(meta["classes"]), tuple(tuple(c) for c in colors[:len(meta["classes"])]),
                         where=f"run {run}")
    default_name = f"{config.dataset}-{config.setting}-{config.method}"
    if config.dataset == "custom":  # your own data: the run folder's name, made a plain name
        default_name = _plain_name(run.resolve().name, "model")
    name = check_name(name or default_name, "bundle name")
    version = check_name(version or f"{_plain_name(run.resolve().name, 'run')}-step{step}", "bundle version")
    lineage = None
    if parent is not None and (parent / "manifest.json").is_file():
        lineage = Parent(read_manifest(parent).version, manifest_sha256(parent))
    metrics = read_json(run / f"step{step}" / "metrics.json")
    recipe = config.for_step(step)
    return Manifest.new(
        name=name, version=version, step=step, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        classes=classes, parent=lineage, input=InputSpec(size[0], size[1], IMAGENET_MEAN, IMAGENET_STD),
        outputs=OutputSpec(module.output, tuple(module.output_names), str(module.label_dtype).replace("torch.", "")),
        model={"backbone": meta["backbone"], "classes_per_step": meta["classes_per_step"],
               "head": meta.get("head", "deeplabv3"), "output_stride": meta.get("output_stride", 16),
               "outputs": meta.get("outputs", "softmax"),
               "recipe": {"crop_mode": recipe.crop_mode, "class_weights": recipe.class_weights,
                          "crop_scale": list(recipe.crop_scale)},
               "dataset": meta["dataset"], "setting": meta["setting"], "method": meta["method"],
               "order": meta["order"]},
        metrics={k: metrics.get(k) for k in ("old", "new", "all", "iou")},
        quality=_quality(metrics, meta, step), tools=_tool_versions())


def _replace_folder(staging: Path, out: Path) -> None:
    """Move the finished bundle into place; an existing bundle is replaced only then."""
    previous = None
    if out.exists():
        previous = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, previous)
    os.replace(staging, out)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)
