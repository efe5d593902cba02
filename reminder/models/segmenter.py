"""DeepLabV3 (output stride 16, ASPP 256) with a growing head, for continual segmentation.

    model = deeplabv3_resnet101(num_classes=16)
    new_ids = model.add_classes(1)          # range(16, 17)
    logits = model(images)                  # (B, 17, H, W)
    out = model.forward_features(images)    # logits, low-res logits, features, stages
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.segmentation.deeplabv3 import ASPP

from reminder.errors import ReminderError
from reminder.models.backbones import BACKBONES
from reminder.models.classifier import IncrementalClassifier

ATROUS_RATES = (6, 12, 18)  # output stride 16


@dataclass
class SegmenterOutput:
    """What distillation needs from one forward pass.

    logits: (B, K, H, W) at input size; lowres_logits: (B, K, h, w);
    features: (B, 256, h, w) the ASPP output before the classifier;
    stages: backbone stage outputs (pre-activation where the architecture allows).
    """

    logits: torch.Tensor
    lowres_logits: torch.Tensor
    features: torch.Tensor
    stages: list[torch.Tensor]


class IncrementalSegmenter(nn.Module):
    def __init__(self, backbone: nn.Module, classes_per_step: Sequence[int], *,
                 backbone_name: str = "custom", aspp_channels: int = 256):
        super().__init__()
        self.backbone_name = backbone_name
        self.backbone = backbone
        self.aspp = ASPP(backbone.out_channels, list(ATROUS_RATES), aspp_channels)
        self.aspp.project[-1] = nn.Identity()  # no dropout before the head, as in MiB/PLOP
        self.classifier = IncrementalClassifier(aspp_channels, classes_per_step)

    @property
    def num_classes(self) -> int:
        return self.classifier.num_classes

    @property
    def classes_per_step(self) -> list[int]:
        return self.classifier.classes_per_step

    def config(self) -> dict:
        """What :func:`build_segmenter` needs to rebuild this architecture."""
        return {"backbone": self.backbone_name, "classes_per_step": self.classes_per_step,
                "aspp_channels": self.classifier.in_channels, "output_stride": 16}

    def forward_features(self, images: torch.Tensor) -> SegmenterOutput:
        """``images: (B, 3, H, W)`` normalised -> :class:`SegmenterOutput`."""
        stages, out = self.backbone(images)
        features = self.aspp(out)
        lowres = self.classifier(features)
        logits = F.interpolate(lowres, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return SegmenterOutput(logits, lowres, features, stages)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images: (B, 3, H, W)`` normalised -> ``logits: (B, K, H, W)``."""
        _, out = self.backbone(images)
        lowres = self.classifier(self.aspp(out))
        return F.interpolate(lowres, size=images.shape[-2:], mode="bilinear", align_corners=False)

    def add_classes(self, num_new: int, *, init: str = "mib") -> range:
        """Grow the head by ``num_new`` classes (see :meth:`IncrementalClassifier.add_classes`)."""
        return self.classifier.add_classes(num_new, init=init)

    def fuse(self) -> "IncrementalSegmenter":
        """A copy whose per-step heads are folded into one convolution (same logits)."""
        fused = copy.deepcopy(self)
        conv = self.classifier.fused()
        fused.classifier.heads = nn.ModuleList([conv])
        return fused


def build_segmenter(backbone: str, *, num_classes: int | Sequence[int],
                    weights_backbone: str | Path | None = None) -> IncrementalSegmenter:
    """DeepLabV3 on ``backbone`` (``resnet101``, ``resnet50``, ``mobilenet_v3_large``, ``tiny``).

    ``num_classes``: classes of step 0 (background included), or the classes of each
    step so far. ``weights_backbone``: None, ``"imagenet"`` or a local weights file.
    """
    if backbone not in BACKBONES:
        raise ReminderError(f"unknown backbone {backbone!r}; expected one of {', '.join(BACKBONES)}")
    per_step = [num_classes] if isinstance(num_classes, int) else list(num_classes)
    return IncrementalSegmenter(BACKBONES[backbone](weights_backbone), per_step, backbone_name=backbone)


def deeplabv3_resnet101(*, num_classes: int | Sequence[int], weights_backbone=None) -> IncrementalSegmenter:
    return build_segmenter("resnet101", num_classes=num_classes, weights_backbone=weights_backbone)


def deeplabv3_resnet50(*, num_classes: int | Sequence[int], weights_backbone=None) -> IncrementalSegmenter:
    return build_segmenter("resnet50", num_classes=num_classes, weights_backbone=weights_backbone)


def deeplabv3_mobilenet_v3_large(*, num_classes: int | Sequence[int],
                                 weights_backbone=None) -> IncrementalSegmenter:
    return build_segmenter("mobilenet_v3_large", num_classes=num_classes, weights_backbone=weights_backbone)


def deeplabv3_tiny(*, num_classes: int | Sequence[int]) -> IncrementalSegmenter:
    return build_segmenter("tiny", num_classes=num_classes)
