"""DeepLabV3 or DeepLabV3+ (output stride 16 or 8, ASPP 256) with a growing head, for
continual segmentation.

    model = deeplabv3_resnet101(num_classes=16)
    model = build_segmenter("tiny", num_classes=6, head="deeplabv3plus", output_stride=8)
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
from reminder.models.backbones import BACKBONES, OUTPUT_STRIDES, dilate_to_stride8
from reminder.models.classifier import IncrementalClassifier
from reminder.models.decoder import DeepLabV3PlusDecoder

ATROUS_RATES = {16: (6, 12, 18), 8: (12, 24, 36)}  # per output stride, as DeepLab
HEADS = ("deeplabv3", "deeplabv3plus")
OUTPUTS = ("softmax", "sigmoid")  # docs/training.md, "Outputs: softmax or per-class sigmoid"


@dataclass
class SegmenterOutput:
    """What distillation needs from one forward pass.

    logits: (B, K, H, W) at input size; lowres_logits: (B, K, h, w);
    features: (B, 256, h, w) what the classifier reads: the ASPP output (DeepLabV3), or the
    decoder's stride-4 output (DeepLabV3+);
    stages: backbone stage outputs (pre-activation where the architecture allows);
    weight: (K, 256) the classifier's weights (what DKD decomposes the logits with).
    With sigmoid outputs, channel 0 is the auxiliary classifier (reading detached features).
    """

    logits: torch.Tensor
    lowres_logits: torch.Tensor
    features: torch.Tensor
    stages: list[torch.Tensor]
    weight: torch.Tensor | None = None


class IncrementalSegmenter(nn.Module):
    def __init__(self, backbone: nn.Module, classes_per_step: Sequence[int], *,
                 backbone_name: str = "custom", aspp_channels: int = 256, head: str = "deeplabv3",
                 output_stride: int = 16, outputs: str = "softmax"):
        super().__init__()
        if outputs not in OUTPUTS:
            raise ReminderError(f"unknown outputs {outputs!r}; expected one of {', '.join(OUTPUTS)}")
        self.outputs = outputs
        if head not in HEADS:
            raise ReminderError(f"unknown head {head!r}; expected one of {', '.join(HEADS)}")
        if output_stride not in OUTPUT_STRIDES:
            raise ReminderError(f"output stride must be one of {OUTPUT_STRIDES}, got {output_stride!r}")
        self.backbone_name, self.head, self.output_stride = backbone_name, head, output_stride
        self.backbone = dilate_to_stride8(backbone) if output_stride == 8 else backbone
        self.aspp = ASPP(backbone.out_channels, list(ATROUS_RATES[output_stride]), aspp_channels)
        self.aspp.project[-1] = nn.Identity()  # no dropout before the head, as in MiB/PLOP
        self.decoder = (DeepLabV3PlusDecoder(backbone.low_level_channels, aspp_channels, aspp_channels)
                        if head == "deeplabv3plus" else None)
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
                "aspp_channels": self.classifier.in_channels, "output_stride": self.output_stride,
                "head": self.head, "outputs": self.outputs}

    def low_level(self, stages: Sequence[torch.Tensor]) -> torch.Tensor | None:
        """The stride-4 stage the decoder fuses (None without a decoder)."""
        return stages[self.backbone.low_level_index] if self.decoder is not None else None

    def head_features(self, out: torch.Tensor, low: torch.Tensor | None) -> torch.Tensor:
        """What the classifier reads, from the backbone's output and its stride-4 stage."""
        features = self.aspp(out)
        return features if self.decoder is None else self.decoder(features, low)

    def aspp_branches(self, out: torch.Tensor) -> torch.Tensor:
        """The ASPP's five branches on the backbone's output, concatenated (before its projection)."""
        return torch.cat([branch(out) for branch in self.aspp.convs], dim=1)

    def head_from_branches(self, branches: torch.Tensor, low: torch.Tensor | None) -> torch.Tensor:
        """:meth:`head_features` from :meth:`aspp_branches`' output: the projection, then the decoder."""
        features = self.aspp.project(branches)
        return features if self.decoder is None else self.decoder(features, low)

    def forward_features(self, images: torch.Tensor) -> SegmenterOutput:
        """``images: (B, 3, H, W)`` normalised -> :class:`SegmenterOutput`."""
        stages, out = self.backbone(images)
        features = self.head_features(out, self.low_level(stages))
        lowres = self.classify(features)
        logits = F.interpolate(lowres, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return SegmenterOutput(logits, lowres, features, stages, self.classifier_weight())

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """The low-res logits that training reads. With sigmoid outputs, channel 0 (the
        auxiliary classifier) reads the features detached: it does not train them."""
        lowres = self.classifier(features)
        if self.outputs == "sigmoid":
            first = self.classifier.heads[0]
            aux = F.conv2d(features.detach(), first.weight[:1], first.bias[:1])
            lowres = torch.cat([aux, lowres[:, 1:]], dim=1)
        return lowres

    def classifier_weight(self) -> torch.Tensor:
        """``(K, C)``: every class's 1x1 weights (what DKD splits the logits with)."""
        return torch.cat([head.weight.flatten(1) for head in self.classifier.heads])

    def top_confidence(self, logits: torch.Tensor) -> torch.Tensor:
        """:func:`top_confidence` of :meth:`forward`'s logits, by this model's outputs."""
        return top_confidence(logits, self.outputs)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images: (B, 3, H, W)`` normalised -> ``logits: (B, K, H, W)`` whose argmax is the
        prediction. With sigmoid outputs, channel 0 is the threshold, 0 (a probability of
        0.5): background where no class passes it, the highest class elsewhere."""
        stages, out = self.backbone(images)
        lowres = self.classifier(self.head_features(out, self.low_level(stages)))
        if self.outputs == "sigmoid":
            lowres = torch.cat([torch.zeros_like(lowres[:, :1]), lowres[:, 1:]], dim=1)
        return F.interpolate(lowres, size=images.shape[-2:], mode="bilinear", align_corners=False)

    def add_classes(self, num_new: int, *, init: str = "mib") -> range:
        """Grow the head by ``num_new`` classes (see :meth:`IncrementalClassifier.add_classes`)."""
        return self.classifier.add_classes(num_new, init=init)

    def convert_outputs(self, outputs: str) -> "IncrementalSegmenter":
        """Switch to ``outputs`` (``softmax`` or ``sigmoid``) in place, with the same predictions
        (:meth:`IncrementalClassifier.convert`); returns ``self``."""
        if outputs != self.outputs:
            self.classifier.convert(outputs)
            self.outputs = outputs
        return self

    def fuse(self) -> "IncrementalSegmenter":
        """A copy whose per-step heads are folded into one convolution (same logits)."""
        fused = copy.deepcopy(self)
        conv = self.classifier.fused()
        fused.classifier.heads = nn.ModuleList([conv])
        return fused


def top_confidence(logits: torch.Tensor, outputs: str = "softmax") -> torch.Tensor:
    """``(B, H, W)`` the probability of each pixel's decision, from a model's ``(B, K, H, W)``
    logits: the top softmax probability, or with sigmoid ``outputs`` the chosen class's
    sigmoid (for background, one minus the highest class's). Written without a full
    softmax, which ONNX Runtime computes slowly over the channel axis."""
    if outputs == "sigmoid":
        return torch.sigmoid(logits[:, 1:].max(dim=1).values.abs())
    top = logits.max(dim=1).values
    return 1.0 / torch.exp(logits - top.unsqueeze(1)).sum(dim=1)


def build_segmenter(backbone: str, *, num_classes: int | Sequence[int],
                    weights_backbone: str | Path | None = None, head: str = "deeplabv3",
                    output_stride: int = 16, outputs: str = "softmax") -> IncrementalSegmenter:
    """DeepLabV3 (or ``head="deeplabv3plus"``) on ``backbone`` (``resnet101``, ``resnet50``,
    ``mobilenet_v3_large``, ``tiny``) at output stride 16 or 8.

    ``num_classes``: classes of step 0 (background included), or the classes of each
    step so far. ``weights_backbone``: None, ``"imagenet"`` or a local weights file.
    ``outputs``: ``softmax`` (background is channel 0) or ``sigmoid`` (one sigmoid per class,
    channel 0 an auxiliary classifier; DKD).
    """
    if backbone not in BACKBONES:
        raise ReminderError(f"unknown backbone {backbone!r}; expected one of {', '.join(BACKBONES)}")
    per_step = [num_classes] if isinstance(num_classes, int) else list(num_classes)
    return IncrementalSegmenter(BACKBONES[backbone](weights_backbone), per_step, backbone_name=backbone,
                                head=head, output_stride=output_stride, outputs=outputs)


def segmenter_from_config(info: dict) -> IncrementalSegmenter:
    """The architecture that :meth:`IncrementalSegmenter.config` describes (a checkpoint's
    meta or a bundle's ``model``; those written before heads existed are DeepLabV3 at 16)."""
    return build_segmenter(info["backbone"], num_classes=list(info["classes_per_step"]),
                           head=info.get("head", "deeplabv3"), output_stride=int(info.get("output_stride", 16)),
                           outputs=info.get("outputs", "softmax"))


def deeplabv3_resnet101(*, num_classes: int | Sequence[int], weights_backbone=None) -> IncrementalSegmenter:
    return build_segmenter("resnet101", num_classes=num_classes, weights_backbone=weights_backbone)


def deeplabv3_resnet50(*, num_classes: int | Sequence[int], weights_backbone=None) -> IncrementalSegmenter:
    return build_segmenter("resnet50", num_classes=num_classes, weights_backbone=weights_backbone)


def deeplabv3_mobilenet_v3_large(*, num_classes: int | Sequence[int],
                                 weights_backbone=None) -> IncrementalSegmenter:
    return build_segmenter("mobilenet_v3_large", num_classes=num_classes, weights_backbone=weights_backbone)


def deeplabv3_tiny(*, num_classes: int | Sequence[int]) -> IncrementalSegmenter:
    return build_segmenter("tiny", num_classes=num_classes)
