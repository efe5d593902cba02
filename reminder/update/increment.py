"""On-device incremental update: a bundle learns new classes from a few labelled frames.

The steps of :func:`update_bundle`, one function each:

1. check the request and open (verify) the parent bundle;
2. read the frames and masks (:mod:`reminder.update.frames`), hold some out;
3. make the learner: the bundle's model as the frozen teacher, a student with the new
   classes (initialised as the bundle's method does), the bundle's method (REMINDER, or DKD for
   a DKD bundle) and the bundle's stored prototypes;
4. train with the method's terms (REMINDER: cross-entropy on PLOP's entropy pseudo-labels,
   local POD and CSW-KD) (:mod:`reminder.update.training`);
5. compute the new classes' prototypes and append them to the bank;
6. measure the quality: new-class IoU on held-out frames, old-class agreement with the
   parent (:mod:`reminder.update.quality`);
7. export to the parent's formats into a new bundle whose lineage points at the parent
   (:mod:`reminder.update.reexport`). The parent is never modified.

This room imports torch: it runs where PyTorch is installed (JetPack ships it).
"""

from __future__ import annotations

import dataclasses
import random
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from reminder.bundle import check_name, check_output_folder, open_bundle
from reminder.contracts import check_class_name
from reminder.errors import ReminderError
from reminder.update.frames import NewClass, class_colors, parse_class, read_frames, split_holdout
from reminder.update.quality import measure_quality, peak_memory_mb
from reminder.update.reexport import child_manifest, export_child
from reminder.update.training import (bundle_method, load_bundle_model, load_prototype_bank, make_learner,
                                      out_of_memory, plain_loader, train_on_frames)


@dataclass(frozen=True)
class UpdateOptions:
    """What bounds an update on a device."""

    iterations: int = 300
    time_budget: float | None = None     # seconds of training; stops early when reached
    batch_size: int = 4
    crop_size: int | None = None         # default: the bundle's input size, at most 512
    lr: float | None = None              # default: 0.01 with a frozen backbone, else 0.001
    clip_norm: float | None = 5.0        # gradient norm cap: few frames and frozen batch norm diverge easily
    freeze_backbone: bool = False        # train the ASPP and the head only
    freeze_aspp: bool = False            # with freeze_backbone: the ASPP's branches too (its projection trains)
    feature_cache: bool = True           # frozen backbone: its outputs computed once per view (update.cached)
    views: int = 16                      # with the cache: augmented views per frame
    csw_kd: bool = True                  # False: pseudo-labels + local POD only (PLOP's losses)
    holdout: float = 0.25                # share of the frames kept out of training for the IoU
    agreement_confidence: float = 0.9    # parent confidence above which old-class pixels are compared
    device: str = "auto"
    amp: str = "auto"                    # auto: bf16 on CUDA, and on CPUs with native bf16 with the feature cache
    seed: int = 0
    formats: tuple[str, ...] | None = None  # default: the parent's
    version: str | None = None
    workers: int = 0
    force: bool = False                  # replace an `out` that holds something other than this bundle
    int8_min_agreement: float = 0.99     # an INT8 child's gate; below it the child goes out in FP32


@dataclass
class UpdateResult:
    bundle: Path
    report: dict = field(default_factory=dict)


def _check_request(classes: Sequence[NewClass | str], options: UpdateOptions) -> list[NewClass]:
    classes = [c if isinstance(c, NewClass) else parse_class(c) for c in classes]
    if not classes:
        raise ReminderError("no new class given (`class` NAME[:R,G,B])")
    for c in classes:
        check_class_name(c.name, "new class")
    if len({c.name for c in classes}) != len(classes):
        raise ReminderError("a new class name is given twice")
    if options.iterations < 1 or options.batch_size < 1:
        raise ReminderError("iterations and batch size must be at least 1")
    if not 0 < options.int8_min_agreement <= 1:
        raise ReminderError(f"the INT8 gate's agreement must be in (0, 1], not {options.int8_min_agreement}")
    if not 0 <= options.holdout <= 0.9:
        raise ReminderError(f"`holdout` must be within 0..0.9 (a share of the frames), got {options.holdout}")
    if options.lr is not None and not options.lr > 0:
        raise ReminderError(f"`lr` must be positive, got {options.lr}")
    if options.time_budget is not None and not options.time_budget > 0:
        raise ReminderError(f"`time_budget` must be a positive number of seconds, got {options.time_budget}")
    if options.crop_size is not None and options.crop_size < 16:
        raise ReminderError(f"`crop_size` must be at least 16 pixels, got {options.crop_size}")
    if options.freeze_aspp and not options.freeze_backbone:
        raise ReminderError("`freeze_aspp` freezes the ASPP in front of a frozen backbone: add `freeze_backbone`")
    return classes


def _open_parent(bundle: str | Path, out: Path, options: UpdateOptions,
                 workdir: Path) -> tuple[Path, dict, list[Path]]:
    """The verified parent (a ``.tar`` is unpacked into ``workdir``), and the paths ``out``
    must never replace (the parent, as given and unpacked), checked now, before any training."""
    source = Path(bundle)
    folder, manifest = open_bundle(source, workdir)
    protect = [folder, source]
    if out.resolve() in (folder.resolve(), source.resolve()):
        raise ReminderError("`out` must differ from the parent bundle, which an update never modifies")
    check_output_folder(out, manifest.name, protect=protect, force=options.force)
    if options.version is not None:
        check_name(options.version, "`version`")
    return folder, manifest, protect


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _auto_amp(device: torch.device, options: UpdateOptions) -> str:
    """bf16 on CUDA; on a CPU with native bf16 (AVX512-BF16 or AMX) for the cached
    frozen-backbone path, whose ASPP convolutions then run about 1.4x faster; else none."""
    if device.type == "cuda":
        return "bf16"
    native = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)() or \
        getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    return "bf16" if native and options.freeze_backbone and options.feature_cache else "none"


def _training_config(options: UpdateOptions, *, images: Path, out: Path, crop: int, lr: float, amp: str,
                     device: torch.device, recipe: dict):
    """The update's training options; ``recipe``: the crops and class weights the bundle was
    trained with (its manifest's ``model.recipe``; the paper's crops before it was recorded)."""
    from reminder.train.config import TrainConfig, _check_values

    recipe = {k: recipe[k] for k in ("crop_mode", "crop_scale", "class_weights") if k in recipe}
    if isinstance(recipe.get("crop_scale"), list):
        recipe["crop_scale"] = tuple(recipe["crop_scale"])
    if recipe.get("crop_mode", "resized") == "resized":  # the paper's crops: the update's own, measured scale
        recipe.pop("crop_scale", None)
    try:
        _check_values(recipe)
    except ReminderError as error:
        raise ReminderError(f"the bundle's manifest records a training recipe this update cannot use: "
                            f"{error}") from None
    return TrainConfig(dataset="device", root=str(images), setting="update", method="reminder", out=str(out),
                       batch_size=options.batch_size, crop_size=crop, lr_next=lr, amp=amp, freeze_bn=True,
                       seed=options.seed, device=str(device), workers=options.workers, **recipe)


def update_bundle(bundle: str | Path, *, images: str | Path, masks: str | Path, classes: Sequence[NewClass | str],
                  out: str | Path, options: UpdateOptions = UpdateOptions(), progress: bool = True,
                  log: Callable[[str], None] = print) -> UpdateResult:
    """Teach ``bundle`` the ``classes`` from the frames in ``images`` / ``masks``; write ``out``.
    A ``.tar`` parent is unpacked into a temporary folder that is removed afterwards,
    whether the update succeeds or not."""
    with tempfile.TemporaryDirectory(prefix="reminder-parent-") as workdir:
        return _update_bundle(bundle, images=images, masks=masks, classes=classes, out=out, options=options,
                              progress=progress, log=log, workdir=Path(workdir))


def _update_bundle(bundle, *, images, masks, classes, out, options: UpdateOptions, progress: bool, log,
                   workdir: Path) -> UpdateResult:
    from reminder.train.prototypes import compute_prototypes, merge_prototypes
    from reminder.train.run import resolve_device
    from reminder.train.threads import busy_warning

    started = time.perf_counter()
    classes = _check_request(classes, options)                                  # 1. the request
    out = Path(out)
    folder, parent, protect = _open_parent(bundle, out, options, workdir)
    device = resolve_device(options.device)
    if device.type == "cpu" and (warning := busy_warning()):
        log(warning)
    amp = options.amp if options.amp != "auto" else _auto_amp(device, options)
    _seed(options.seed)

    num_old = len(parent.classes)                                               # 2. frames
    table = class_colors(parent, classes)
    names = [name for name, _ in table]
    new_ids = list(range(num_old, len(table)))
    frames = read_frames(images, masks, [color for _, color in table], new_ids, log)
    train_frames, holdout = split_holdout(frames, options.holdout, options.seed)
    if not train_frames:
        raise ReminderError(f"`holdout` {options.holdout} keeps all {len(frames)} frames out of training")
    crop = options.crop_size or min(512, parent.input.height)
    lr = options.lr if options.lr is not None else (0.01 if options.freeze_backbone else 0.001)
    log(f"update {parent.name} {parent.version}: +{', '.join(c.name for c in classes)} from "
        f"{len(train_frames)} frames ({len(holdout)} held out), crop {crop}, {options.iterations} iterations "
        f"on {device}{' with a frozen backbone' if options.freeze_backbone else ''}")

    bank = load_prototype_bank(folder, parent, num_old, required=options.csw_kd)  # 3. the learner
    config = _training_config(options, images=Path(images), out=out, crop=crop, lr=lr, amp=amp, device=device,
                              recipe=parent.model.get("recipe") or {})
    method = bundle_method(parent.model, csw_kd=options.csw_kd)
    config = dataclasses.replace(config, method=method)
    learner = make_learner(load_bundle_model(folder, parent, device), len(classes), csw_kd=options.csw_kd,
                           method=method,
                           old_prototypes=bank["prototypes"] if options.csw_kd else None,
                           freeze_backbone=options.freeze_backbone, freeze_aspp=options.freeze_aspp,
                           step=(parent.step or 0) + 1,
                           config=config, device=device)
    try:                                                                         # 4. training, 5. prototypes
        if options.freeze_backbone and options.feature_cache:
            from reminder.update.cached import train_on_cache

            outcome = train_on_cache(learner, train_frames, iterations=options.iterations,
                                     batch_size=options.batch_size, crop=crop, lr=lr, clip_norm=options.clip_norm,
                                     time_budget=options.time_budget, seed=options.seed, views=options.views,
                                     amp=amp,
                                     device=device, progress=progress, log=log)
        else:
            outcome = train_on_frames(learner, train_frames, iterations=options.iterations,
                                      batch_size=options.batch_size, crop=crop, lr=lr, clip_norm=options.clip_norm,
                                      time_budget=options.time_budget, amp=amp, seed=options.seed,
                                      workers=options.workers, device=device, progress=progress)
        prototypes, counts = compute_prototypes(learner.student, plain_loader(train_frames), new_ids, device=device)
    except (MemoryError, RuntimeError) as error:  # torch.OutOfMemoryError is a RuntimeError
        advice = out_of_memory(error, batch_size=options.batch_size, crop=crop,
                               freeze_backbone=options.freeze_backbone)
        if advice is None:
            raise
        raise advice from None

    memory = peak_memory_mb(device)                                             # 6. quality
    quality = measure_quality(learner.student, learner.teacher, frames, len(table), new_ids, holdout, names,
                              options.agreement_confidence, device)
    report = {**quality, "iterations": outcome.iterations, "stopped_by": outcome.stopped_by,
              "train_seconds": round(outcome.seconds, 1), "seconds": round(time.perf_counter() - started, 1),
              "peak_memory": memory, "losses": outcome.mean_terms, "frames": len(frames),
              "train_frames": len(train_frames), "device": str(device), "amp": amp, "lr": lr,
              "options": {k: v for k, v in asdict(options).items() if k not in ("formats", "version")},
              "method": method}

    new_bank = merge_prototypes(bank, new_ids, prototypes, counts, len(table))  # 7. the new bundle
    manifest = child_manifest(parent, folder, table, classes, report, options.version)
    path = export_child(learner.student, new_bank, manifest, parent, out=out, frames=frames,
                        parent_folder=folder, parent_model=learner.teacher,
                        formats=options.formats, protect=protect, force=options.force,
                        train_frames=train_frames, holdout=holdout, int8_min_agreement=options.int8_min_agreement,
                        log=log)
    return UpdateResult(path, report)
