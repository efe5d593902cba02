"""A frozen-backbone update from cached backbone features.

With ``--freeze-backbone`` (and batch norm frozen, as every on-device update runs), the
backbone computes the same output for the same input at every iteration, and so does the
teacher: the student's backbone *is* the teacher's, and the teacher does not train. So each
frame is augmented ``views`` times once (random scale-crop and flip, as in training), the
backbone runs once per view, and the outputs (with the stride-4 stage a DeepLabV3+ decoder
fuses) are kept in memory with the teacher's head features and logits. The iterations then
run only the student's ASPP, decoder and classifier.

The losses are the same as :func:`reminder.update.training.train_on_frames`' (a test checks
it term by term on the same batch): the local POD terms on the backbone stages are zero
there (student and teacher stages are the same tensors), so the stages are replaced by
small zero stand-ins that keep the number of POD layers, and with it the loss's scale.
What changes is the augmentation: a fixed set of ``views`` per frame instead of a new
draw at every iteration.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from reminder.models.segmenter import SegmenterOutput
from reminder.update.frames import Frame, FrameDataset


@dataclass
class FeatureCache:
    """Per view: the backbone output, the teacher's head features and low-res logits, the
    labels and PLOP's pseudo-labels (uint8, 255 ignored) with their per-image weight;
    ``stages`` is how many backbone stages POD reads; ``low`` the decoder's stride-4 stage
    (DeepLabV3+ only)."""

    backbone: torch.Tensor
    teacher_features: torch.Tensor
    teacher_lowres: torch.Tensor
    labels: torch.Tensor
    stages: int
    pseudo: torch.Tensor | None = None
    pseudo_weights: torch.Tensor | None = None
    low: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def concatenate(cls, parts: Sequence["FeatureCache"]) -> "FeatureCache":
        def cat(name):
            values = [getattr(p, name) for p in parts]
            return None if values[0] is None else torch.cat(values)

        return cls(cat("backbone"), cat("teacher_features"), cat("teacher_lowres"), cat("labels"), parts[0].stages,
                   cat("pseudo"), cat("pseudo_weights"), cat("low"))

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.backbone, self.teacher_features, self.teacher_lowres,
                                                          self.labels, self.pseudo, self.pseudo_weights, self.low)
                   if t is not None)


def build_cache(learner, frames: Sequence[Frame], *, views: int, crop: int, seed: int, device: torch.device,
                chunk: int = 8, amp: str = "none") -> FeatureCache:
    """``views`` random scale-crop-flip views of every frame through the frozen backbone and
    the teacher's ASPP and head, once."""
    from reminder.data.transforms import train_transform

    config = learner.config
    dataset = FrameDataset(frames, train_transform(crop, scale=config.crop_scale, mode=config.crop_mode))
    order = [i for _ in range(views) for i in range(len(dataset))]
    parts = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in range(0, len(order), chunk):  # augmented views are encoded as they are drawn
            images, labels = zip(*[dataset[i] for i in order[start:start + chunk]])
            parts.append(encode(learner, torch.stack(images), torch.stack(labels), device=device, chunk=chunk,
                                amp=amp))
    return FeatureCache.concatenate(parts)


def encode(learner, images: torch.Tensor, labels: torch.Tensor, *, device: torch.device,
           chunk: int = 8, amp: str = "none") -> FeatureCache:
    """Normalised ``images`` ``(N, 3, H, W)`` through the frozen backbone and the teacher's
    ASPP and head, ``chunk`` at a time; ``labels`` ``(N, H, W)`` kept beside them, and,
    when the method uses them, the pseudo-labels from the teacher's logits and the step's
    thresholds (both fixed for the whole update)."""
    from reminder.train.losses import entropy_pseudo_labels

    teacher, backbone, state = learner.teacher, learner.student.backbone, learner.state
    pseudo = learner.method.pseudo_labels and state.thresholds is not None
    parts: dict[str, list] = {"backbone": [], "features": [], "lowres": [], "pseudo": [], "weights": [], "low": []}
    stages = 0
    from reminder.train.step import autocast

    with torch.inference_mode(), autocast(device, amp):
        for start in range(0, len(images), chunk):
            stage_outputs, out = backbone(images[start:start + chunk].to(device))
            stages = len(stage_outputs)
            low = teacher.low_level(stage_outputs)
            if learner.frozen_aspp:  # the frozen branches' output is what the cache keeps: the projection trains
                out = teacher.aspp_branches(out)
                features = teacher.head_from_branches(out, low)
            else:
                features = teacher.head_features(out, low)
            lowres = teacher.classifier(features).float()
            out, features = out.float(), features.float()
            if low is not None:
                parts["low"].append(low.float())
            parts["backbone"].append(out)
            parts["features"].append(features)
            parts["lowres"].append(lowres)
            if pseudo:
                part = labels[start:start + chunk].to(device)
                teacher_logits = F.interpolate(lowres, size=part.shape[-2:], mode="bilinear", align_corners=False)
                new, weights = entropy_pseudo_labels(part, teacher_logits.float(), state.thresholds,
                                                     num_all=learner.student.num_classes,
                                                     mode=learner.config.pseudo_thresholds)
                parts["pseudo"].append(new.clamp(max=255).to(torch.uint8))
                parts["weights"].append(weights)
    return FeatureCache(torch.cat(parts["backbone"]), torch.cat(parts["features"]), torch.cat(parts["lowres"]),
                        labels.clamp(max=255).to(torch.uint8).to(device), stages,
                        torch.cat(parts["pseudo"]) if pseudo else None, torch.cat(parts["weights"]) if pseudo else None,
                        torch.cat(parts["low"]) if parts["low"] else None)


def cached_terms(learner, cache: FeatureCache, index: torch.Tensor) -> dict[str, torch.Tensor]:
    """The loss terms of the views ``index``: the student's ASPP and head on the cached
    backbone output (or ASPP branches), the teacher's outputs from the cache."""
    from reminder.train.methods import StepInputs
    from reminder.train.step import compute_terms

    student, state = learner.student, learner.state
    labels = cache.labels[index].long()
    size = labels.shape[-2:]
    low = None if cache.low is None else cache.low[index]
    head = student.head_from_branches if learner.frozen_aspp else student.head_features  # what the cache holds
    features = head(cache.backbone[index], low)
    lowres = student.classify(features)
    teacher_lowres = cache.teacher_lowres[index]
    stand_ins = [labels.new_zeros((len(index), 1, 4, 4), dtype=torch.float32) for _ in range(cache.stages)]
    student_out = SegmenterOutput(F.interpolate(lowres, size=size, mode="bilinear", align_corners=False), lowres,
                                  features, stand_ins, student.classifier_weight())
    # the methods read the teacher's low-res logits (upsampled once, in StepInputs), never its full-size ones
    teacher_out = SegmenterOutput(teacher_lowres, teacher_lowres, cache.teacher_features[index], stand_ins,
                                  learner.teacher.classifier_weight())
    inputs = StepInputs(None, labels, student_out, teacher_out, num_old=state.num_old,
                        num_seen=student.num_classes, thresholds=state.thresholds,
                        old_prototypes=state.old_prototypes, pseudo_mode=learner.config.pseudo_thresholds,
                        class_weights=state.class_weights)
    if cache.pseudo is not None:
        inputs.cache["pseudo"] = (cache.pseudo[index].long(), cache.pseudo_weights[index])
    return compute_terms(learner.method, inputs)


def train_on_cache(learner, frames: Sequence[Frame], *, iterations: int, batch_size: int, crop: int, lr: float,
                   clip_norm: float | None, time_budget: float | None, seed: int, views: int,
                   device: torch.device, progress: bool, amp: str = "none", log=None):
    """:func:`reminder.update.training.train_on_frames` for a frozen backbone: thresholds,
    the cache, then ``iterations`` SGD steps on the ASPP and head with a poly LR."""
    from reminder.train.step import autocast, set_train_mode
    from reminder.update.training import run_engine, set_class_weights, set_thresholds

    student = learner.student
    started = time.perf_counter()
    set_thresholds(learner, frames, device)
    set_class_weights(learner, frames, device)
    views = max(1, min(views, math.ceil(iterations * batch_size / max(len(frames), 1))))
    cache = build_cache(learner, frames, views=views, crop=crop, seed=seed, device=device, amp=amp)
    if log is not None:
        log(f"cached {len(cache)} views ({views} per frame, {cache.nbytes / 2 ** 20:.0f} MiB) in "
            f"{time.perf_counter() - started:.1f} s")
    generator = torch.Generator().manual_seed(seed)
    batch = min(batch_size, len(cache))
    set_train_mode(student, freeze_bn=True)

    def views_of_cache():
        order = torch.empty(0, dtype=torch.long)
        while True:  # the engine stops at its iterations or its time budget
            if len(order) < batch:
                order = torch.cat([order, torch.randperm(len(cache), generator=generator)])
            index, order = order[:batch].to(cache.labels.device), order[batch:]
            yield index

    def terms_of(index):
        with autocast(device, amp):
            return cached_terms(learner, cache, index)

    return run_engine(learner, views_of_cache(), terms_of, iterations=iterations, lr=lr, clip_norm=clip_norm,
                      time_budget=time_budget, progress=progress, started=started)
