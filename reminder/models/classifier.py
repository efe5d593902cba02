"""The growing classifier head: one 1x1 convolution per step, logits concatenated."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from reminder.errors import ReminderError


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
        background logit moves by ``-log(num_new + 1)``). ``init="default"`` keeps
        PyTorch's random initialisation and leaves every old logit bit-identical.
        """
        if not isinstance(num_new, int) or num_new < 1:
            raise ReminderError(f"add_classes needs a positive number of classes, got {num_new!r}")
        if init not in ("mib", "default"):
            raise ReminderError(f"unknown head initialisation {init!r}; expected mib or default")
        reference = self.heads[0]
        head = nn.Conv2d(self.in_channels, num_new, 1).to(reference.weight.device, reference.weight.dtype)
        if init == "mib":
            shifted_bias = reference.bias[0] - math.log(num_new + 1)
            head.weight.copy_(reference.weight[0:1].expand_as(head.weight))
            head.bias.fill_(shifted_bias.item())
            reference.bias[0] = shifted_bias
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
