"""The module that is exported: fused head, normalisation inside, logits or labels out.

Input ``images``: float32 ``(B, 3, H, W)``, RGB in 0..255 (the runtime only converts
HWC uint8 frames to NCHW float; mean/std are applied in the graph and also recorded in
the manifest). Output, by ``output``:

- ``"logits"``: ``logits`` float32 ``(B, K, H, W)``;
- ``"labels"``: ``labels`` uint8 ``(B, H, W)`` (int32 above 256 classes) and
  ``confidence`` float32 ``(B, H, W)``, the probability of the decision (the top softmax
  probability; with per-class sigmoid outputs, the chosen class's sigmoid, or for
  background one minus the highest class's).

A model with sigmoid outputs carries its decision rule in its logits (channel 0 is the
threshold, 0), so the graph, its labels and every runtime need no special case.
"""

from __future__ import annotations

import torch
from torch import nn

from reminder.data.transforms import IMAGENET_MEAN, IMAGENET_STD

OUTPUTS = ("logits", "labels")


class ExportModule(nn.Module):
    def __init__(self, model: nn.Module, *, output: str = "labels", mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        self.model = model.fuse() if hasattr(model, "fuse") else model
        self.model.eval()
        self.output = output
        self.num_classes = self.model.num_classes
        self.register_buffer("scale", 1.0 / (255.0 * torch.tensor(std).view(1, 3, 1, 1)))
        self.register_buffer("shift", torch.tensor(mean).view(1, 3, 1, 1) / torch.tensor(std).view(1, 3, 1, 1))

    @property
    def output_names(self) -> list[str]:
        return ["logits"] if self.output == "logits" else ["labels", "confidence"]

    @property
    def label_dtype(self) -> torch.dtype:
        return torch.uint8 if self.num_classes <= 256 else torch.int32

    def forward(self, images: torch.Tensor):
        logits = self.model(images * self.scale - self.shift)
        if self.output == "logits":
            return logits
        if getattr(self.model, "outputs", "softmax") == "sigmoid":
            return logits.argmax(dim=1).to(self.label_dtype), self.model.top_confidence(logits)
        # the top softmax probability is 1 / sum(exp(logits - max)): no full softmax, which
        # ONNX Runtime computes slowly over the channel axis (half the CPU time at 512 px)
        top, labels = logits.max(dim=1)
        confidence = 1.0 / torch.exp(logits - top.unsqueeze(1)).sum(dim=1)
        return labels.to(self.label_dtype), confidence


def example_input(batch: int = 2, height: int = 64, width: int = 96, seed: int = 0) -> torch.Tensor:
    """A traced example: batch >= 2 so the exporters do not specialise the batch to 1."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, height, width, generator=generator) * 255
