"""DKD's loss terms (Baek et al., NeurIPS 2022) for per-class sigmoid outputs, and CSW-KD for them.

Channel 0 of a sigmoid model is the auxiliary classifier; channels ``1..K-1`` are the
classes, each a binary "this class or not" (docs/training.md, "DKD"). Every term is a
binary cross-entropy with logits, averaged over pixels and summed over the classes it
covers, as the paper writes them:

- :func:`multilabel_bce`: the step's classes against the step's labels (mBCE);
- :func:`sigmoid_kd`: the old classes' logits against the teacher's probabilities (KD);
- :func:`decomposed_kd`: the same for the two halves of each old logit, the evidence for
  the class (features times the positive weights) and against it (times the negative
  weights), at feature resolution (DKD);
- :func:`auxiliary_negative`: the auxiliary classifier says "no" everywhere (AC); the next
  step's classes start from it;
- :func:`csw_sigmoid_kd`: REMINDER's similarity weights on the KD of the new classes' pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from reminder.train.losses import IGNORE_INDEX, similarity_weights


def _bce_sum_of_class_means(logits: torch.Tensor, targets: torch.Tensor, *, pos_weight: float = 1.0,
                            valid: torch.Tensor | None = None) -> torch.Tensor:
    """``sum_c mean_pixels BCE(logits[:, c], targets[:, c])``; ``valid: (B, H, W)`` the pixels counted."""
    weight = torch.tensor(pos_weight, dtype=logits.dtype, device=logits.device)
    per_pixel = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=weight, reduction="none")
    if valid is None:
        return per_pixel.mean(dim=(0, 2, 3)).sum()
    mask = valid[:, None].to(per_pixel.dtype)
    return ((per_pixel * mask).sum(dim=(0, 2, 3)) / mask.sum().clamp(min=1)).sum()


def multilabel_bce(logits: torch.Tensor, labels: torch.Tensor, *, first: int, pos_weight: float = 1.0) -> torch.Tensor:
    """mBCE of classes ``first..K-1``: ``logits: (B, K, H, W)``, ``labels: (B, H, W)``.

    A class's target is 1 on its pixels and 0 elsewhere (background and the old classes,
    which the step's labels mark as background); ``pos_weight`` weighs the positives.
    Ignored pixels (255) count for no class.
    """
    classes = torch.arange(first, logits.shape[1], device=labels.device)
    targets = (labels[:, None] == classes[None, :, None, None]).to(logits.dtype)
    return _bce_sum_of_class_means(logits[:, first:], targets, pos_weight=pos_weight,
                                   valid=labels != IGNORE_INDEX)


def sigmoid_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, num_old: int) -> torch.Tensor:
    """KD of the old classes ``1..num_old-1``: the student's logits against the teacher's sigmoid."""
    return _bce_sum_of_class_means(student_logits[:, 1:num_old], teacher_logits[:, 1:num_old].sigmoid())


def regulators(features: torch.Tensor, weight: torch.Tensor, *, num_old: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits of classes ``1..num_old-1`` split into their positive and negative halves:
    ``features (B, C, h, w)`` times the positive, and the negative, parts of ``weight (K, C)``
    (no bias). Their sum plus the bias is the logit."""
    old = weight[1:num_old].to(features.dtype)
    positive = torch.einsum("bchw,kc->bkhw", features, old.clamp(min=0))
    negative = torch.einsum("bchw,kc->bkhw", features, old.clamp(max=0))
    return positive, negative


def decomposed_kd(student_features: torch.Tensor, student_weight: torch.Tensor, teacher_features: torch.Tensor,
                  teacher_weight: torch.Tensor, *, num_old: int) -> tuple[torch.Tensor, torch.Tensor]:
    """DKD's two terms, ``(positive, negative)``: each half of the student's old logits against
    the sigmoid of the teacher's same half."""
    student = regulators(student_features.float(), student_weight.float(), num_old=num_old)
    with torch.no_grad():
        teacher = regulators(teacher_features.float(), teacher_weight.float(), num_old=num_old)
    return tuple(_bce_sum_of_class_means(s, t.sigmoid()) for s, t in zip(student, teacher))


def auxiliary_negative(aux_logits: torch.Tensor) -> torch.Tensor:
    """AC: ``aux_logits: (B, 1, H, W)`` against 0 everywhere."""
    return _bce_sum_of_class_means(aux_logits, torch.zeros_like(aux_logits))


def csw_sigmoid_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                   features: torch.Tensor, old_prototypes: torch.Tensor, *, temperature: float = 3.0,
                   delta: float = 0.0, reduce=None) -> torch.Tensor:
    """CSW-KD for sigmoid outputs, on the pixels of the new classes.

    For a pixel of new class u, old class v (``1..K_old-1``) gets REMINDER's weight
    ``s_uv`` (the softmax over the old classes of the cosine between u's batch prototype
    and v's stored prototype; the weights of a pixel sum to 1, as REMINDER's re-weighted
    target does). The term is ``T^2 * mean_new_pixels sum_v s_uv BCE(z_v / T, sigmoid(t_v / T))``:
    each old class's binary distillation, weighted by how much it looks like the new class.
    """
    num_old, num_all = teacher_logits.shape[1], student_logits.shape[1]
    weighted = similarity_weights(features, labels, old_prototypes, num_old=num_old, num_all=num_all,
                                  delta=delta, reduce=reduce, first_old=1)
    if weighted is None or num_old < 2:
        return student_logits.sum() * 0.0
    new_pixels, pixel_weights, scale = weighted
    with torch.no_grad():
        target = (teacher_logits.permute(0, 2, 3, 1)[new_pixels][:, 1:num_old].float() / temperature).sigmoid()
    student = student_logits.permute(0, 2, 3, 1)[new_pixels][:, 1:num_old].float() / temperature
    per_class = F.binary_cross_entropy_with_logits(student, target, reduction="none")
    return temperature ** 2 * (per_class * pixel_weights).sum() * scale
