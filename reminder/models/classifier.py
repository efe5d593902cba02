"""The growing classifier head: one 1x1 convolution per step, logits concatenated."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from reminder.errors import ReminderError


INITS = ("mib", "aux", "default")


class IncrementalClassifier(nn.Module):
    """``heads[t]`` scores the classes step t added; channel 0 is background.

    ``forward(features: (B, C, h, w)) -> (B, K, h, w)`` with K the classes of all steps.
    """

    def __init__(self, in_channels: int, classes_per_step: Sequence[int]):
        super().__init__()
        if not classes_per_step or min(classes_per_step) < 1:
            raise ReminderError(f"classes per step must be positive, got {list(classes_per_step)}")
        self.in_channels = in_channels
        self.heads = nn.ModuleList(nn.Conv2d(in_channels, n, 1) for n in classes_per_step)

    @property
    def classes_per_step(self) -> list[int]:
        return [head.out_channels for head in self.heads]

    @property
    def num_classes(self) -> int:
        return sum(self.classes_per_step)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if len(self.heads) == 1:
            return self.heads[0](features)
        return torch.cat([head(features) for head in self.heads], dim=1)

    @torch.no_grad()
    def add_classes(self, num_new: int, *, init: str = "mib") -> range:
        """Append a head for ``num_new`` classes; return their channel ids.

        ``init="mib"`` (MiB's initialisation): the new classes copy the background
        weights, and the new biases and the background bias all become
        ``b_bg - log(num_new + 1)``. The background probability mass is then shared
        evenly by background and the new classes, and the probabilities of the old
        foreground classes are unchanged (their logits are bit-identical; the
        background logit moves by ``-log(num_new + 1)``). ``init="aux"`` (DKD's, for sigmoid
        outputs): the new classes copy channel 0, the auxiliary classifier, weights and bias;
        every old logit stays bit-identical. ``init="default"`` keeps PyTorch's random
        initialisation and leaves every old logit bit-identical.
        """
        if not isinstance(num_new, int) or num_new < 1:
            raise ReminderError(f"add_classes needs a positive number of classes, got {num_new!r}")
        if init not in INITS:
            raise ReminderError(f"unknown head initialisation {init!r}; expected one of {', '.join(INITS)}")
        reference = self.heads[0]
        head = nn.Conv2d(self.in_channels, num_new, 1).to(reference.weight.device, reference.weight.dtype)
        if init == "mib":
            shifted_bias = reference.bias[0] - math.log(num_new + 1)
            head.weight.copy_(reference.weight[0:1].expand_as(head.weight))
            head.bias.fill_(shifted_bias.item())
            reference.bias[0] = shifted_bias
        elif init == "aux":
            head.weight.copy_(reference.weight[0:1].expand_as(head.weight))
            head.bias.fill_(reference.bias[0].item())
        start = self.num_classes
        self.heads.append(head)
        return range(start, start + num_new)

    @torch.no_grad()
    def fused(self) -> nn.Conv2d:
        """One 1x1 convolution with the same logits as the per-step heads."""
        conv = nn.Conv2d(self.in_channels, self.num_classes, 1).to(self.heads[0].weight)
        conv.weight.copy_(torch.cat([h.weight for h in self.heads]))
        conv.bias.copy_(torch.cat([h.bias for h in self.heads]))
        return conv

    @torch.no_grad()
    def convert(self, outputs: str) -> None:
        """Rewrite the weights for ``outputs`` (``sigmoid`` or ``softmax``) with the same predictions.

        To sigmoid: each class's logit becomes its softmax logit minus the background's
        (``z_c - z_0 > 0`` exactly where class c beats background), and channel 0 becomes an
        auxiliary classifier with weights 0 and bias ``-log(K - 1)`` (a probability of 1/K for
        the classes it will initialise). To softmax: channel 0 becomes the constant 0 that
        the sigmoid rule compares the classes with.
        """
        if outputs not in ("sigmoid", "softmax"):
            raise ReminderError(f"unknown outputs {outputs!r}; expected sigmoid or softmax")
        first = self.heads[0]
        background_weight, background_bias = first.weight[0].clone(), first.bias[0].clone()
        if outputs == "sigmoid":
            for index, head in enumerate(self.heads):
                start = 1 if index == 0 else 0
                head.weight[start:] -= background_weight
                head.bias[start:] -= background_bias
        first.weight[0].zero_()
        first.bias[0] = -math.log(max(self.num_classes - 1, 1)) if outputs == "sigmoid" else 0.0
