"""Loss functions of REMINDER and its baselines, as pure functions.

Shapes: B batch, K classes (model channels, background 0), H x W label size, h x w the
model's output-stride-16 size. Logits are float tensors; labels are int64 with 255 for
pixels to ignore. The teacher (the frozen model of the previous step) has K_old channels,
the student K_all = K_old + new classes. Facts from the reference code are in
docs/training.md; where this code departs from that code's letter, the docstring says so.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from reminder.data.classes import IGNORE_INDEX


def _mean_over_pixels(per_pixel: torch.Tensor, image_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over all B*H*W pixels (ignored pixels count as 0, as in the reference code)."""
    if image_weights is not None:
        per_pixel = per_pixel * image_weights.to(per_pixel.dtype)[:, None, None]
    return per_pixel.mean()


def _class_weights(weights: torch.Tensor | None, num_classes: int, dtype) -> torch.Tensor | None:
    """The first ``num_classes`` of per-class weights (None: unweighted)."""
    return None if weights is None else weights[:num_classes].to(dtype)


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, *, image_weights: torch.Tensor | None = None,
                  class_weights: torch.Tensor | None = None, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Pixel cross-entropy; ``logits: (B, K, H, W)``, ``labels: (B, H, W)``.

    ``image_weights: (B,)`` multiplies each image's loss (PLOP's lambda); ``class_weights:
    (K,)`` each pixel's by its label's weight (still averaged over all pixels).
    """
    weight = _class_weights(class_weights, logits.shape[1], logits.dtype)
    per_pixel = F.cross_entropy(logits, labels, weight=weight, ignore_index=ignore_index, reduction="none")
    return _mean_over_pixels(per_pixel, image_weights)


PSEUDO_THRESHOLDS = ("reference", "median")


def normalized_entropy(probabilities: torch.Tensor) -> torch.Tensor:
    """``(B, K, H, W)`` probabilities -> ``(B, H, W)`` entropy / log K, in [0, 1]."""
    entropy = -(probabilities * torch.log(probabilities.clamp_min(1e-12))).sum(dim=1)
    return entropy / math.log(probabilities.shape[1])


def reference_entropy(probabilities: torch.Tensor, num_all: int) -> torch.Tensor:
    """The quantity the reference code bins and compares for pseudo-labels:
    ``-mean_c(p log(p + 1e-8)) / ln(K_old + 1e-8) / ln(K_all)``, i.e. the entropy divided
    by ``K_old ln K_old ln K_all``. It never exceeds ``1 / (K_old ln K_all)`` (0.022 on VOC
    15-1, 0.0043 on ADE), so only the first of 100 bins over [0, 1] ever fill."""
    factor = 1 / math.log(probabilities.shape[1] + 1e-8)
    entropy = -factor * torch.mean(probabilities * torch.log(probabilities + 1e-8), dim=1)
    return entropy / torch.log(torch.tensor(float(num_all), device=probabilities.device))


def pseudo_entropy(probabilities: torch.Tensor, *, num_all: int, mode: str = "reference") -> torch.Tensor:
    """The per-pixel uncertainty compared with the thresholds: ``reference`` (the reference
    code's scale, the default) or ``median`` (entropy / ln K_old)."""
    if mode == "reference":
        return reference_entropy(probabilities, num_all)
    if mode == "median":
        return normalized_entropy(probabilities)
    raise ValueError(f"pseudo-label thresholds {mode!r}; expected one of {PSEUDO_THRESHOLDS}")


def entropy_histogram(teacher_logits: torch.Tensor, labels: torch.Tensor, *, bins: int = 100, num_all: int,
                      mode: str = "reference") -> torch.Tensor:
    """``(K_old, bins)`` counts of background pixels by teacher argmax and uncertainty
    (:func:`pseudo_entropy`) over [0, 1]. Summed over the step's training data (and across
    ranks), it gives the thresholds."""
    num_old = teacher_logits.shape[1]
    probabilities = teacher_logits.float().softmax(dim=1)
    background = labels == 0
    values = pseudo_entropy(probabilities, num_all=num_all, mode=mode)[background]
    classes = probabilities.argmax(dim=1)[background]
    bin_index = (values * bins).long().clamp(0, bins - 1)
    histogram = torch.zeros(num_old * bins, dtype=torch.int64, device=teacher_logits.device)
    histogram.index_add_(0, classes * bins + bin_index, torch.ones_like(classes))
    return histogram.view(num_old, bins)


def reference_thresholds(histogram: torch.Tensor, *, floor: float = 0.001) -> torch.Tensor:
    """The reference code's per-class thresholds from a ``(K_old, bins)`` histogram, bit for
    bit: its loop adds bin *indices*, not counts, to the running sum, so it stops where that
    sum first reaches half the class's count, or runs past the last bin; the bin it stops at
    is usually empty, and the division by its count gives +inf (every pixel of the class is
    kept), -inf (then the floor) or NaN (none kept). Classes the teacher never predicts on
    background get the floor."""
    histogram = histogram.long().cpu()
    bins = histogram.shape[1]
    thresholds = torch.zeros(histogram.shape[0], dtype=torch.float32)
    for c in range(histogram.shape[0]):
        total = histogram[c].sum()
        if total <= 0.:
            continue
        half = total / 2
        running_sum = 0.
        for lower_border in range(bins):
            lower_border = lower_border / bins
            bin_index = int(lower_border * bins)
            if half >= running_sum and half <= (running_sum + histogram[c, bin_index]):
                break
            running_sum += lower_border * bins
        with torch.no_grad():  # 0-count bins divide by zero on purpose (see the docstring)
            thresholds[c] = lower_border + ((half - running_sum) / histogram[c, bin_index].sum()) * (1 / bins)
    for c in range(len(thresholds)):
        thresholds[c] = max(thresholds[c], floor)  # Python's max: a NaN threshold stays NaN
    return thresholds


def thresholds_from_histogram(histogram: torch.Tensor, *, floor: float = 0.001) -> torch.Tensor:
    """The true per-class median (``pseudo_thresholds="median"``) from a ``(K_old, bins)``
    histogram, interpolated inside the bin where the cumulative count crosses half.
    Classes the teacher never predicts on background get ``floor``."""
    histogram = histogram.double().cpu()
    bins = histogram.shape[1]
    total = histogram.sum(dim=1)
    cumulative = histogram.cumsum(dim=1)
    half = total / 2
    crossing = (cumulative < half[:, None]).sum(dim=1).clamp(max=bins - 1)
    before = torch.where(crossing > 0, cumulative.gather(1, (crossing - 1).clamp(min=0)[:, None])[:, 0],
                         torch.zeros_like(total))
    in_bin = histogram.gather(1, crossing[:, None])[:, 0]
    fraction = torch.where(in_bin > 0, (half - before) / in_bin.clamp(min=1), torch.zeros_like(total))
    median = (crossing.double() + fraction) / bins
    median = torch.where(total > 0, median, torch.zeros_like(median))
    return median.clamp(min=floor).float()


def pseudo_thresholds(histogram: torch.Tensor, *, floor: float, mode: str = "reference") -> torch.Tensor:
    """Thresholds for ``mode``: :func:`reference_thresholds` or :func:`thresholds_from_histogram`."""
    if mode == "reference":
        return reference_thresholds(histogram, floor=floor)
    return thresholds_from_histogram(histogram, floor=floor)


def entropy_pseudo_labels(labels: torch.Tensor, teacher_logits: torch.Tensor, thresholds: torch.Tensor, *,
                          num_all: int | None = None,
                          mode: str = "reference") -> tuple[torch.Tensor, torch.Tensor]:
    """PLOP's pseudo-labels on background pixels.

    ``labels: (B, H, W)``, ``teacher_logits: (B, K_old, H, W)``, ``thresholds: (K_old,)``,
    ``num_all``: the student's classes (the reference scale divides by ``ln K_all``;
    default ``K_old``). A pixel labelled 0 takes the teacher's argmax c when its
    uncertainty (:func:`pseudo_entropy`) is below ``thresholds[c]``, else 255. Returns the
    new labels and ``lambda: (B,)``, the share of each image's background pixels that got
    a confident label (1 for an image with no background pixel, where the reference code
    divides by zero).
    """
    with torch.no_grad():
        probabilities = teacher_logits.float().softmax(dim=1)
        pseudo = probabilities.argmax(dim=1)
        uncertainty = pseudo_entropy(probabilities, num_all=num_all or probabilities.shape[1], mode=mode)
        confident = uncertainty < thresholds.to(probabilities.device)[pseudo]
        background = labels == 0
        out = labels.clone()
        out[background & confident] = pseudo[background & confident]
        out[background & ~confident] = IGNORE_INDEX
        accepted = (background & confident).sum(dim=(1, 2)).float()
        total = background.sum(dim=(1, 2)).float()
        weight = torch.where(total > 0, accepted / total.clamp(min=1), torch.ones_like(total))
    return out, weight


def unbiased_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, *, num_old: int,
                           class_weights: torch.Tensor | None = None, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """MiB's UNCE: a background pixel may be any old class.

    The background log-probability is ``logsumexp(old logits) - logsumexp(all logits)``;
    labels below ``num_old`` count as background.
    """
    log_all = torch.logsumexp(logits, dim=1, keepdim=True)
    log_background = torch.logsumexp(logits[:, :num_old], dim=1, keepdim=True) - log_all
    log_new = logits[:, num_old:] - log_all
    filler = torch.zeros_like(logits[:, 1:num_old])  # old foreground channels: never a target
    log_probabilities = torch.cat([log_background, filler, log_new], dim=1)
    targets = torch.where((labels < num_old) & (labels != ignore_index), torch.zeros_like(labels), labels)
    weight = _class_weights(class_weights, logits.shape[1], logits.dtype)
    per_pixel = F.nll_loss(log_probabilities, targets, weight=weight, ignore_index=ignore_index, reduction="none")
    return _mean_over_pixels(per_pixel)


def knowledge_distillation(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *,
                           temperature: float = 1.0, class_reduction: str = "sum") -> torch.Tensor:
    """Paper eq. 1-2: ``-mean_i sum_c O_old[i, c] log O_new[i, c]`` over the old classes.

    The student is re-normalised over the teacher's classes. ``class_reduction="mean"``
    divides by K_old as MiB's and ILT's implementation does.
    """
    num_old = teacher_logits.shape[1]
    log_student = F.log_softmax(student_logits[:, :num_old] / temperature, dim=1)
    teacher = F.softmax(teacher_logits / temperature, dim=1)
    per_pixel = -(teacher * log_student).sum(dim=1)
    if class_reduction == "mean":
        per_pixel = per_pixel / num_old
    return per_pixel.mean()


def unbiased_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, num_old: int) -> torch.Tensor:
    """MiB's UNKD: the student's background is background or any new class.

    Student log-probabilities over all classes; its background channel takes the
    logsumexp of background and new logits. Averaged over the K_old classes and pixels.
    """
    if teacher_logits.shape[1] != num_old:
        raise ValueError(f"teacher has {teacher_logits.shape[1]} channels, expected num_old={num_old}")
    log_all = torch.logsumexp(student_logits, dim=1)
    background_and_new = torch.cat([student_logits[:, :1], student_logits[:, num_old:]], dim=1)
    log_background = torch.logsumexp(background_and_new, dim=1) - log_all
    log_old = student_logits[:, 1:num_old] - log_all[:, None]
    teacher = teacher_logits.softmax(dim=1)
    per_pixel = (teacher[:, 0] * log_background + (teacher[:, 1:] * log_old).sum(dim=1)) / num_old
    return -per_pixel.mean()


def lwf_mc_distillation(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """LwF-MC (as in MiB's code): sigmoid BCE between the student's old logits and the
    teacher's sigmoid outputs, summed over the K_old classes, mean over pixels."""
    num_old = teacher_logits.shape[1]
    targets = torch.sigmoid(teacher_logits)
    return num_old * F.binary_cross_entropy_with_logits(student_logits[:, :num_old], targets)


def feature_mse(old_features: torch.Tensor, new_features: torch.Tensor) -> torch.Tensor:
    """ILT's encoder distillation: mean squared error between feature maps."""
    return (new_features - old_features).pow(2).mean()


def pod_embedding(features: torch.Tensor, scales: Sequence[int] = (1, 2, 4)) -> torch.Tensor:
    """Local POD embedding ``(B, D)`` of ``features: (B, C, h, w)``.

    Squares the activations; for each scale s splits the map into s x s regions and keeps
    each region's width-pooled and height-pooled means. Regions use the height and the
    width each (the reference code cuts both with ``w // s``, which only agrees on square maps).
    """
    squared = features.pow(2)
    batch, _, height, width = squared.shape
    parts = []
    for scale in scales:
        step_h, step_w = max(height // scale, 1), max(width // scale, 1)
        for i in range(scale):
            for j in range(scale):
                region = squared[..., i * step_h:(i + 1) * step_h, j * step_w:(j + 1) * step_w]
                if region.numel() == 0:
                    continue
                parts.append(region.mean(dim=3).reshape(batch, -1))
                parts.append(region.mean(dim=2).reshape(batch, -1))
    return torch.cat(parts, dim=1)


def local_pod(old_features: list[torch.Tensor], new_features: list[torch.Tensor], *,
              scales: Sequence[int] = (1, 2, 4), layer_weights: Sequence[float] | None = None) -> torch.Tensor:
    """PLOP's local POD: per layer, the L2 norm of old - new embeddings per image, mean
    over the batch; weighted by ``layer_weights`` and averaged over the layers.

    A new layer with more channels than the old one (the logits layer) must be folded by
    the caller first (see :func:`fold_new_logits`).
    """
    if len(old_features) != len(new_features):
        raise ValueError(f"{len(old_features)} old layers but {len(new_features)} new ones")
    weights = list(layer_weights) if layer_weights is not None else [1.0] * len(old_features)
    total = new_features[0].new_zeros(())
    for weight, old, new in zip(weights, old_features, new_features):
        if old.shape != new.shape:
            raise ValueError(f"layer shapes differ: old {tuple(old.shape)}, new {tuple(new.shape)}")
        difference = pod_embedding(old.float(), scales) - pod_embedding(new.float(), scales)
        total = total + weight * torch.linalg.vector_norm(difference, dim=1).mean()
    return total / len(old_features)


def fold_new_logits(student_logits: torch.Tensor, num_old: int) -> torch.Tensor:
    """Sum the student's new-class logits into its background channel (K_all -> K_old)."""
    background = student_logits[:, :1] + student_logits[:, num_old:].sum(dim=1, keepdim=True)
    return torch.cat([background, student_logits[:, 1:num_old]], dim=1)


def _bilinear_weights(out_size: int, in_size: int, device) -> torch.Tensor:
    """``(out, in)`` matrix of bilinear interpolation with ``align_corners=True``."""
    matrix = torch.zeros(out_size, in_size, device=device)
    if in_size == 1 or out_size == 1:
        matrix[:, 0] = 1.0
        return matrix
    source = torch.arange(out_size, device=device, dtype=torch.float64) * (in_size - 1) / (out_size - 1)
    low = source.floor().long().clamp(max=in_size - 1)
    high = (low + 1).clamp(max=in_size - 1)
    fraction = (source - low).float()
    rows = torch.arange(out_size, device=device)
    matrix.index_put_((rows, low), 1 - fraction, accumulate=True)
    matrix.index_put_((rows, high), fraction, accumulate=True)
    return matrix


def class_feature_sums(features: torch.Tensor, labels: torch.Tensor,
                       classes: Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum and pixel count of the features of each class, as if ``features: (B, C, h, w)``
    were first upsampled bilinearly (``align_corners=True``) to the label size ``(H, W)``.

    Bilinear upsampling is linear, so the sum over a class's pixels of the upsampled
    features equals the low-resolution features weighted by ``Wy^T mask Wx``. That weight
    map is ``(B, h, w)``, so the ``(B, C, H, W)`` upsampled tensor (about 4 GB at batch 16,
    512 px, 256 channels) is never made. Returns ``sums: (U, C)``, ``counts: (U,)``.
    """
    batch, channels, height, width = features.shape
    rows = _bilinear_weights(labels.shape[1], height, features.device).to(features.dtype)
    cols = _bilinear_weights(labels.shape[2], width, features.device).to(features.dtype)
    classes = torch.as_tensor(classes, device=labels.device).tolist()
    sums = features.new_zeros(len(classes), channels)
    counts = features.new_zeros(len(classes))
    for index, class_id in enumerate(classes):
        mask = (labels == class_id).to(features.dtype)
        counts[index] = mask.sum()
        if counts[index] > 0:
            weights = rows.t() @ mask @ cols  # (B, h, w)
            sums[index] = torch.einsum("bhw,bchw->c", weights, features)
    return sums, counts


def csw_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
           features: torch.Tensor, old_prototypes: torch.Tensor, *, temperature: float = 3.0,
           delta: float = 0.0, reduce=None) -> torch.Tensor:
    """REMINDER's class-similarity-weighted KD on the pixels of new classes.

    ``student_logits: (B, K_all, H, W)``, ``teacher_logits: (B, K_old, H, W)``,
    ``labels: (B, H, W)``, ``features: (B, C, h, w)`` the student's pre-classifier features,
    ``old_prototypes: (K_old, C)``. For a pixel of new class u the prototype p_u is the
    mean of the batch's features over u's pixels (no gradient); ``s_v = softmax_v(cos(p_u,
    P_old[v]))`` with entries below ``delta / K_old`` set to 0. The target
    ``softmax(teacher / T) * s`` (not re-normalised) is distilled into
    ``log_softmax(student[:K_old] / T)``: ``T^2 * sum(-target * log p) / new pixels``.
    A batch without new pixels gives 0.

    ``reduce`` (data-parallel training) sums a tensor across ranks: the prototypes and the
    pixel count are then those of the global batch, and each rank's loss is scaled so that
    the ranks' mean equals the global-batch loss. Every rank must call it.
    """
    num_old, num_all = teacher_logits.shape[1], student_logits.shape[1]
    weighted = similarity_weights(features, labels, old_prototypes, num_old=num_old, num_all=num_all,
                                  delta=delta, reduce=reduce)
    if weighted is None:
        return student_logits.sum() * 0.0
    new_pixels, pixel_weights, scale = weighted
    with torch.no_grad():
        teacher = (teacher_logits.permute(0, 2, 3, 1)[new_pixels].float() / temperature).softmax(dim=1)
        target = teacher * pixel_weights
    student = student_logits.permute(0, 2, 3, 1)[new_pixels][:, :num_old].float()
    log_student = F.log_softmax(student / temperature, dim=1)
    return temperature ** 2 * -(target * log_student).sum() * scale


def similarity_weights(features: torch.Tensor, labels: torch.Tensor, old_prototypes: torch.Tensor, *,
                       num_old: int, num_all: int, delta: float = 0.0, reduce=None, first_old: int = 0):
    """CSW-KD's weights: ``(new_pixels (B, H, W), weights (N, num_old - first_old), scale)``,
    or None when the batch has no pixel of a new class. A new class's prototype is the mean
    of its pixels' features (no gradient); its weights are the softmax of its cosine with the
    old prototypes ``first_old..num_old-1``, those below ``delta / count`` set to 0. ``scale``
    (``world / pixels``) turns a sum over the new pixels into the global batch's mean."""
    new_pixels = (labels >= num_old) & (labels != IGNORE_INDEX)
    with torch.no_grad():
        new_classes = torch.arange(num_old, num_all, device=labels.device)
        sums, counts = class_feature_sums(features.detach().float(), labels, new_classes)
        world = sums.new_ones(1)
        if reduce is not None:
            packed = reduce(torch.cat([sums.flatten(), counts, world]))
            sums, counts, world = packed[:sums.numel()].view_as(sums), packed[sums.numel():-1], packed[-1:]
        total_pixels = counts.sum()
    if not bool(new_pixels.any()) or total_pixels.item() == 0:
        return None
    with torch.no_grad():
        prototypes = sums / counts.clamp(min=1)[:, None]
        old = F.normalize(old_prototypes[first_old:num_old].float().to(prototypes.device), dim=1)
        weights = (F.normalize(prototypes, dim=1) @ old.t()).softmax(dim=1)  # (K_new, K_old)
        weights = torch.where(weights < delta / old.shape[0], torch.zeros_like(weights), weights)
        return new_pixels, weights[labels[new_pixels] - num_old], (world[0] / total_pixels).item()


def ewc_penalty(parameters: dict[str, torch.Tensor], anchors: dict[str, torch.Tensor],
                fisher: dict[str, torch.Tensor]) -> torch.Tensor:
    """EWC: ``sum F * (theta - theta_old)^2`` over the parameters the old model had."""
    total = None
    for name, anchor in anchors.items():
        if name in parameters and name in fisher and parameters[name].shape == anchor.shape:
            term = (fisher[name] * (parameters[name] - anchor).pow(2)).sum()
            total = term if total is None else total + term
    if total is None:
        return next(iter(parameters.values())).new_zeros(())
    return total
