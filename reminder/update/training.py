"""The training half of an on-device update: the bundle's model as the frozen teacher, a
student with the new classes, and REMINDER's losses on the frames alone (no old data)."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from reminder.errors import ReminderError
from reminder.update.frames import Frame, FrameDataset


def load_bundle_model(folder: Path, manifest, device: torch.device):
    """The segmenter of a bundle, from its safetensors checkpoint."""
    from reminder.models import segmenter_from_config
    from reminder.train.checkpoint import load_tensors

    if not manifest.has_file("checkpoint.safetensors"):
        raise ReminderError(f"bundle {folder} has no checkpoint.safetensors: it was exported for inference only, "
                            f"and an update needs the weights (export the run again; bundles include them)")
    model = segmenter_from_config(manifest.model)
    try:
        model.load_state_dict(load_tensors(folder / "checkpoint.safetensors"))
    except RuntimeError as error:
        raise ReminderError(f"checkpoint of bundle {folder} does not match its manifest: "
                            f"{str(error).splitlines()[0]}") from None
    return model.to(device)


def load_prototype_bank(folder: Path, manifest, num_old: int, *, required: bool) -> dict | None:
    """The bundle's prototype bank; ``None`` when it has none and CSW-KD does not need it."""
    from reminder.train.prototypes import load_prototypes

    if not manifest.has_file("prototypes.safetensors"):
        if not required:
            return None
        raise ReminderError(f"bundle {folder} has no prototypes.safetensors, which CSW-KD needs "
                            f"(or update with csw_kd off)")
    bank = load_prototypes(folder / "prototypes.safetensors")
    if bank["prototypes"].shape[0] < num_old:
        raise ReminderError(f"bundle {folder}: prototypes.safetensors has {bank['prototypes'].shape[0]} classes, "
                            f"the model has {num_old}")
    return bank


@dataclass
class Learner:
    """Teacher, student, method and the per-step state that the losses read."""

    teacher: torch.nn.Module
    student: torch.nn.Module
    method: object
    state: object
    config: object
    frozen_aspp: bool = False  # the ASPP's branches are frozen: only its projection trains


def bundle_method(model: dict, *, csw_kd: bool) -> str:
    """The method an update of a bundle learns with: the one its manifest's ``model`` records
    (``method``, or sigmoid ``outputs``): DKD for a DKD bundle, else REMINDER; without CSW-KD,
    DKD alone or PLOP."""
    from reminder.train.config import DKD_METHODS

    recorded = str(model.get("method", "")).split(",")[0].strip()
    if recorded in DKD_METHODS or model.get("outputs") == "sigmoid":
        return "dkd+csw" if csw_kd else "dkd"
    return "reminder" if csw_kd else "plop"


def make_learner(teacher: torch.nn.Module, num_new: int, *, csw_kd: bool, old_prototypes: torch.Tensor | None,
                 freeze_backbone: bool, step: int, config, device: torch.device,
                 freeze_aspp: bool = False, method: str | None = None) -> Learner:
    """A student copied from the (frozen) teacher with ``num_new`` classes, initialised as
    ``method`` starts new classes (``reminder``/``plop`` when None, by ``csw_kd``); a teacher
    with the other outputs is converted first, its predictions unchanged."""
    from reminder.train.methods import build_method
    from reminder.train.step import StepState, freeze

    method = build_method(method or ("reminder" if csw_kd else "plop"), config)
    teacher = freeze(teacher.convert_outputs(method.outputs))
    student = copy.deepcopy(teacher)
    student.requires_grad_(True)
    student.add_classes(num_new, init=method.head_init)
    student.to(device)
    if freeze_backbone:
        student.backbone.requires_grad_(False)
    if freeze_aspp:
        student.aspp.convs.requires_grad_(False)
    num_old = student.num_classes - num_new
    state = StepState(step=step, num_old=num_old, teacher=teacher)
    if csw_kd:
        state.old_prototypes = old_prototypes[:num_old].to(device)
    return Learner(teacher, student, method, state, config, frozen_aspp=freeze_aspp)


@dataclass
class TrainingOutcome:
    iterations: int
    stopped_by: str                  # "iterations" or "time budget"
    seconds: float
    mean_terms: dict = field(default_factory=dict)


def train_on_frames(learner: Learner, frames: Sequence[Frame], *, iterations: int, batch_size: int, crop: int,
                    lr: float, clip_norm: float | None, time_budget: float | None, amp: str, seed: int,
                    workers: int, device: torch.device, progress: bool) -> TrainingOutcome:
    """Pseudo-label thresholds from the frames, then ``iterations`` SGD steps with a poly
    LR (stopping early at ``time_budget`` seconds), through the training engine. Batch norm
    keeps the parent's statistics: a few frames cannot estimate new ones."""
    from reminder.data.transforms import train_transform
    from reminder.train.step import forward_terms

    from reminder.train.step import set_train_mode

    config, student, state = learner.config, learner.student, learner.state
    set_class_weights(learner, frames, device)
    dataset = FrameDataset(frames, train_transform(crop, scale=config.crop_scale, mode=config.crop_mode))
    generator = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=min(batch_size, len(dataset)), shuffle=True,
                                         drop_last=False, num_workers=workers, generator=generator)
    set_thresholds(learner, frames, device)
    started = time.perf_counter()
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" and device.type == "cuda" else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def batches():
        while True:  # the engine stops at its iterations or its time budget
            for batch in loader:
                set_train_mode(student, freeze_bn=True)
                yield batch

    def terms_of(batch):
        images, labels = batch
        return forward_terms(student, learner.method, images, labels, state, config=config, device=device)

    return run_engine(learner, batches(), terms_of, iterations=iterations, lr=lr, clip_norm=clip_norm,
                      time_budget=time_budget, scaler=scaler, progress=progress, started=started)


def run_engine(learner: Learner, batches, terms_of, *, iterations: int, lr: float, clip_norm: float | None,
               time_budget: float | None, progress: bool, started: float, scaler=None) -> TrainingOutcome:
    """The training engine over ``batches`` (the time budget counts from ``started``, the
    update's own start), then the student in eval mode and the terms' means."""
    from reminder.progress import progress as progress_bar
    from reminder.train.engine import Engine
    from reminder.train.step import make_optimizer

    student = learner.student
    bar = progress_bar(None, progress, total=iterations, desc="update", unit="it", dynamic_ncols=True)
    budget = None if time_budget is None else max(0.0, time_budget - (time.perf_counter() - started))
    engine = Engine(student, make_optimizer(student, lr, learner.config), lr=lr, total=iterations,
                    lr_power=learner.config.lr_power, step=learner.state.step, scaler=scaler,
                    clip_norm=clip_norm, time_budget=budget, bar=bar)
    try:
        outcome = engine.run(batches, terms_of)
    finally:
        if bar is not None:
            bar.close()
    student.eval()
    return TrainingOutcome(outcome.iterations, outcome.stopped_by, time.perf_counter() - started,
                           outcome.means(digits=4))


def set_class_weights(learner: Learner, frames: Sequence[Frame], device: torch.device) -> None:
    """The CE terms' class weights from the frames' labels, when the bundle was trained with them."""
    import numpy as np

    from reminder.train.balance import class_weights

    counts = sum(np.bincount(f.labels.ravel(), minlength=256)[:learner.student.num_classes] for f in frames)
    weights = class_weights(counts, learner.config.class_weights)
    learner.state.class_weights = None if weights is None else weights.to(device)


def set_thresholds(learner: Learner, frames: Sequence[Frame], device: torch.device) -> None:
    """PLOP's entropy thresholds from the teacher on the frames, for the step's state."""
    from reminder.train.step import compute_thresholds

    config = learner.config
    learner.state.thresholds = compute_thresholds(learner.teacher, plain_loader(frames), device=device,
                                                  bins=config.pseudo_bins, floor=config.pseudo_floor,
                                                  num_all=learner.student.num_classes, mode=config.pseudo_thresholds)


def plain_loader(frames: Sequence[Frame]):
    """The frames at their own size, one at a time (thresholds, prototypes)."""
    from reminder.data.transforms import eval_transform

    return torch.utils.data.DataLoader(FrameDataset(frames, eval_transform(None)), batch_size=1)


def out_of_memory(error: BaseException, *, batch_size: int, crop: int,
                  freeze_backbone: bool) -> ReminderError | None:
    """Advice for an out-of-memory ``error`` (``None`` when it is something else)."""
    text = str(error)
    if not isinstance(error, (torch.OutOfMemoryError, MemoryError)) and \
            "can't allocate memory" not in text and "out of memory" not in text:
        return None
    advice = "`freeze_backbone`, " if not freeze_backbone else ""
    return ReminderError(f"not enough memory for batch size {batch_size} at crop {crop} px "
                         f"({text.splitlines()[0][:120] if text else type(error).__name__}); try {advice}a smaller "
                         f"`crop_size` or `batch_size`")
