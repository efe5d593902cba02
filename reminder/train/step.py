"""One increment: SGD with poly LR over the step's data, a method's loss terms, checks.

The teacher (the previous step's model) is frozen, in eval mode, and runs under
``torch.inference_mode``. Mixed precision (bf16 / fp16), channels-last and
``torch.compile`` are options. A loss that is not finite stops the step with the
iteration and the term named; the previous step's checkpoint is untouched.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass

import torch
from torch import nn

from reminder.errors import ReminderError
from reminder.progress import progress as progress_bar
from reminder.train import losses as L
from reminder.train.config import TrainConfig
from reminder.train.distributed import DistContext
from reminder.train.engine import Engine, TrainingDiverged, poly_lr  # noqa: F401 (re-exported)
from reminder.train.methods import Method, StepInputs


@dataclass
class StepState:
    """What a step needs besides the model: the frozen teacher and the stored statistics."""

    step: int
    num_old: int
    teacher: nn.Module | None = None
    thresholds: torch.Tensor | None = None
    old_prototypes: torch.Tensor | None = None
    fisher: dict | None = None
    class_weights: torch.Tensor | None = None  # (K,) of the CE terms (train/balance.py)


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode, no gradients: the frozen teacher."""
    model.eval()
    model.requires_grad_(False)
    return model


def set_train_mode(model: nn.Module, *, freeze_bn: bool) -> None:
    model.train()
    if freeze_bn:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def autocast(device: torch.device, amp: str):
    if amp == "none":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def compute_thresholds(teacher: nn.Module, loader, *, device: torch.device, bins: int, floor: float, num_all: int,
                       mode: str = "reference", reduce=None, progress: bool = False) -> torch.Tensor:
    """PLOP's per-class entropy thresholds from the step's training data (before the step);
    ``num_all``: the classes after the step; ``mode``: ``reference`` or ``median``
    (:func:`reminder.train.losses.pseudo_thresholds`)."""
    histogram = None
    for images, labels in progress_bar(loader, progress, desc="pseudo-label thresholds", leave=False, unit="batch"):
        images, labels = images.to(device), labels.to(device)
        logits = teacher(images)
        counts = L.entropy_histogram(logits, labels, bins=bins, num_all=num_all, mode=mode)
        histogram = counts if histogram is None else histogram + counts
    if reduce is not None:
        histogram = reduce(histogram)
    return L.pseudo_thresholds(histogram, floor=floor, mode=mode).to(device)


def estimate_fisher(model: nn.Module, loader, *, device: torch.device, max_batches: int = 50,
                    reduce=None) -> dict[str, torch.Tensor]:
    """Diagonal empirical Fisher (mean squared gradient of the step's CE), scaled to max 1
    as MiB's EWC normalises it."""
    model.eval()
    fisher = {n: torch.zeros_like(p) for n, p in model.named_parameters() if p.requires_grad}
    batches = 0
    for images, labels in loader:
        if batches >= max_batches:
            break
        model.zero_grad(set_to_none=True)
        loss = L.cross_entropy(model(images.to(device)), labels.to(device))
        loss.backward()
        for name, parameter in model.named_parameters():
            if parameter.grad is not None:
                fisher[name] += parameter.grad.detach() ** 2
        batches += 1
    model.zero_grad(set_to_none=True)
    if reduce is not None:
        for value in fisher.values():
            reduce(value)
    peak = max((v.max().item() for v in fisher.values()), default=0.0)
    return {n: v / peak if peak > 0 else v for n, v in fisher.items()}


def compute_terms(method: Method, inputs: StepInputs) -> dict[str, torch.Tensor]:
    """``{"loss": weighted sum, term name: unweighted value, ...}``."""
    terms: dict[str, torch.Tensor] = {}
    total = None
    for term in method.terms:
        value = term.compute(inputs)
        terms[term.name] = value
        total = term.weight * value if total is None else total + term.weight * value
    return {"loss": total, **terms}


def train_increment(model: nn.Module, method: Method, loader, state: StepState, *, config: TrainConfig,
                    device: torch.device, dist: DistContext, epochs: int, lr: float,
                    progress: bool = True, history=None, validate=None, log=None) -> dict[str, float]:
    """Train ``model`` (the student, possibly DDP-wrapped) for one step; mean of each term.

    ``history`` (a :class:`reminder.train.history.History`) gets every iteration's terms and
    learning rate; ``validate(model) -> mIoU`` runs every ``config.eval_every`` epochs and
    after the last one, its result going to ``history``. ``log`` gets a warning when CPU
    iterations are far slower than measured (:func:`reminder.train.threads.slow_warning`)."""
    optimizer = make_optimizer(model, lr, config)
    scaler = torch.amp.GradScaler(device.type) if config.amp == "fp16" and device.type == "cuda" else None
    per_epoch = len(loader)
    total = per_epoch * epochs
    if config.max_iterations is not None:
        total = min(total, config.max_iterations)
    forward = None
    if config.compile:
        forward = torch.compile(model if dist.enabled else unwrap(model).forward_features)
    ewc = None
    if method.fisher and state.fisher is not None and state.teacher is not None:
        ewc = {"anchors": dict(state.teacher.named_parameters()), "fisher": state.fisher}
    bar = None
    if progress and dist.is_main:
        bar = progress_bar(None, True, total=total, desc=f"step {state.step}", unit="it", dynamic_ncols=True)
    speed = SpeedCheck(config, state, device, log)
    engine = Engine(unwrap(model), optimizer, lr=lr, total=total, lr_power=config.lr_power, step=state.step,
                    scaler=scaler, bar=bar, history=history, on_iteration=speed)
    num_epochs = math.ceil(total / max(per_epoch, 1))

    def epochs_of_batches():
        for epoch in range(num_epochs):
            engine.epoch = epoch
            if hasattr(loader.sampler, "set_epoch"):
                loader.sampler.set_epoch(epoch)
            set_train_mode(model, freeze_bn=config.freeze_bn or (method.freeze_bn and state.step > 0))
            for batch in loader:
                if engine.iteration >= total:  # ends mid-epoch: that epoch is still validated
                    break
                yield batch
            last = epoch == num_epochs - 1
            if validate is not None and (last or (config.eval_every and (epoch + 1) % config.eval_every == 0)):
                miou = validate(unwrap(model))
                if history is not None:
                    history.validation(epoch, engine.iteration, miou)

    def terms_of(batch):
        images, labels = batch
        return forward_terms(model, method, images, labels, state, config=config, device=device, dist=dist,
                             forward=forward, ewc=ewc)

    try:
        outcome = engine.run(epochs_of_batches(), terms_of)
    except torch.OutOfMemoryError:
        raise ReminderError(
            f"out of GPU memory at step {state.step} with batch size {config.batch_size} and crop "
            f"{config.crop_size}: try `amp` bf16, `channels_last`, a smaller `batch_size` or `crop_size`") from None
    finally:
        if bar is not None:
            bar.close()
    return outcome.means() | {"iterations": outcome.iterations}


SPEED_WINDOW = (3, 13)  # iterations timed for the speed check (after the first ones' warm-up)


class SpeedCheck:
    """Times iterations ``SPEED_WINDOW`` on the CPU and logs :func:`slow_warning` once."""

    def __init__(self, config: TrainConfig, state: StepState, device: torch.device, log):
        self.config, self.state, self.log = config, state, log
        self.active, self.started = log is not None and device.type == "cpu", None

    def __call__(self, iteration: int) -> None:
        if not self.active:
            return
        if iteration == SPEED_WINDOW[0]:
            self.started = time.perf_counter()
        elif iteration == SPEED_WINDOW[1] and self.started is not None:
            from reminder.train.threads import slow_warning

            self.active = False
            seconds = (time.perf_counter() - self.started) / (SPEED_WINDOW[1] - SPEED_WINDOW[0])
            if (warning := slow_warning(seconds, self.config, teacher=self.state.teacher is not None)) is not None:
                self.log(warning)


def unwrap(model: nn.Module) -> nn.Module:
    """The segmenter inside DDP and :class:`ForwardFeatures` wrappers."""
    model = getattr(model, "module", model)
    return model.model if isinstance(model, ForwardFeatures) else model


def forward_terms(model: nn.Module, method: Method, images: torch.Tensor, labels: torch.Tensor,
                  state: StepState, *, config: TrainConfig, device: torch.device, dist: DistContext | None = None,
                  forward=None, ewc: dict | None = None) -> dict[str, torch.Tensor]:
    """The loss terms of ``method`` on one batch: the frozen teacher's outputs, the
    student's (possibly DDP-wrapped or compiled), and the terms (:func:`compute_terms`).
    ``dist``: the process group, None for one process (an on-device update)."""
    dist = dist or DistContext()
    core = unwrap(model)
    images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
    if config.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    teacher_out = None
    if state.teacher is not None and method.needs_teacher_outputs:
        with torch.inference_mode(), autocast(device, config.amp):
            teacher_out = state.teacher.forward_features(images)
    with autocast(device, config.amp):
        student_out = _student_forward(model, core, forward, images, dist)
    inputs = StepInputs(images, labels, student_out, teacher_out, num_old=state.num_old,
                        num_seen=core.num_classes, thresholds=state.thresholds,
                        old_prototypes=state.old_prototypes, reduce=dist.reduce,
                        pseudo_mode=config.pseudo_thresholds, class_weights=state.class_weights)
    if ewc is not None:
        inputs.ewc = {**ewc, "parameters": dict(core.named_parameters())}
    return compute_terms(method, inputs)


def make_optimizer(model: nn.Module, lr: float, config: TrainConfig) -> torch.optim.SGD:
    """SGD with Nesterov momentum and weight decay, as the reference code; with
    ``config.head_lr_factor`` the parameters after the backbone learn at ``lr`` times it."""
    factor = getattr(config, "head_lr_factor", 1.0)
    if factor == 1.0:
        groups = [{"params": [p for p in model.parameters() if p.requires_grad]}]
    else:
        core = unwrap(model)
        backbone = {id(p) for p in core.backbone.parameters()}
        trainable = [p for p in core.parameters() if p.requires_grad]
        groups = [{"params": [p for p in trainable if id(p) in backbone]},
                  {"params": [p for p in trainable if id(p) not in backbone], "lr": lr * factor, "lr_factor": factor}]
        groups = [g for g in groups if g["params"]]
    return torch.optim.SGD(groups, lr=lr, momentum=config.momentum, nesterov=True, weight_decay=config.weight_decay)


def _student_forward(model, core, compiled, images, dist: DistContext):
    if compiled is not None:
        return compiled(images)
    if dist.enabled:
        return model(images)  # the DDP wrapper calls forward_features (see ForwardFeatures)
    return core.forward_features(images)


class ForwardFeatures(nn.Module):
    """Wraps a segmenter so that ``forward`` returns :class:`SegmenterOutput` (for DDP,
    which synchronises gradients only through the wrapped module's ``forward``)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor):
        return self.model.forward_features(images)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.model, name)
