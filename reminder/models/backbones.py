"""Backbones at output stride 16 (or 8) that also return each stage's features for distillation.

``backbone(x) -> (stages, out)``: ``stages`` holds one feature map per stage for
distillation, ``out`` is the activated last stage that feeds ASPP.
Stage features are taken before the stage's final activation where the architecture
has one (ResNet: the last bottleneck's sum before its ReLU, as PLOP's local POD uses);
MobileNetV3's inverted residuals end linearly, so their outputs are pre-activation.

Each backbone names its stride-4 stage (``low_level_index``, ``low_level_channels``: what
DeepLabV3+'s decoder fuses) and the stage that takes stride 8 to 16 (``stride16_index``):
:func:`dilate_to_stride8` turns that stage's stride into dilation, for output stride 8.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models import mobilenetv3, resnet

from reminder.errors import ReminderError


class ResNetBackbone(nn.Module):
    """torchvision ResNet, layer4 dilated (output stride 16), returning 4 stages."""

    def __init__(self, net: resnet.ResNet):
        super().__init__()
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.stages = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
        self.out_channels = net.layer4[-1].conv3.out_channels
        self.low_level_index, self.low_level_channels = 0, net.layer1[-1].conv3.out_channels
        self.stride16_index = 2

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        x = self.stem(x)
        features = []
        for stage in self.stages:
            for block in stage[:-1]:
                x = block(x)
            pre = _bottleneck_pre_activation(stage[-1], x)
            features.append(pre)
            x = torch.relu(pre)
        return features, x


def _bottleneck_pre_activation(block: resnet.Bottleneck, x: torch.Tensor) -> torch.Tensor:
    identity = x if block.downsample is None else block.downsample(x)
    out = block.relu(block.bn1(block.conv1(x)))
    out = block.relu(block.bn2(block.conv2(out)))
    return block.bn3(block.conv3(out)) + identity


class MobileNetV3Backbone(nn.Module):
    """torchvision MobileNetV3-Large with the last stages dilated (output stride 16)."""

    def __init__(self, net: mobilenetv3.MobileNetV3):
        super().__init__()
        blocks = net.features
        # a stage ends before each block that reduces resolution (torchvision marks them _is_cn)
        cuts = [i for i, b in enumerate(blocks) if getattr(b, "_is_cn", False)] + [len(blocks)]
        self.stages = nn.ModuleList([blocks[start:end] for start, end in zip([0] + cuts[:-1], cuts)])
        self.out_channels = blocks[-1].out_channels
        self.low_level_index = 1
        self.low_level_channels = self.stages[1][-1].out_channels
        self.stride16_index = 3

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features, x


class TinyBackbone(nn.Module):
    """Four stride-2 conv stages (output stride 16) for tests and CPU demos."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 96)):
        super().__init__()
        stages, in_channels = [], 3
        for width in widths:
            stages.append(nn.Sequential(
                nn.Conv2d(in_channels, width, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
            ))
            in_channels = width
        self.stages = nn.ModuleList(stages)
        self.out_channels = in_channels
        self.low_level_index, self.low_level_channels = 1, widths[1]
        self.stride16_index = 3

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        features = []
        for stage in self.stages:
            pre = stage(x)
            features.append(pre)
            x = torch.relu(pre)
        return features, x


def dilate_to_stride8(backbone: nn.Module) -> nn.Module:
    """Output stride 8: the stage that goes from stride 8 to 16 keeps stride 8, and it and every
    later stage see twice the dilation (the weights are unchanged, as in DeepLab)."""
    for stage in backbone.stages[backbone.stride16_index:]:
        for conv in stage.modules():
            if not isinstance(conv, nn.Conv2d):
                continue
            if conv.stride == (2, 2):
                conv.stride = (1, 1)
            if conv.kernel_size[0] > 1:
                dilation = conv.dilation[0] * 2
                conv.dilation = (dilation, dilation)
                conv.padding = (dilation * (conv.kernel_size[0] - 1) // 2,) * 2
    return backbone


def _imagenet_weights(enum, weights: str | Path | None):
    """``None``, ``"imagenet"`` (torchvision download or cache) or a local file.

    For ResNets, ``imagenet`` means ``IMAGENET1K_V1``: trained with the plain recipe (77.4%
    top-1 for ResNet-101), the closest to the reference's own InPlaceABN checkpoint; V2's
    heavy-augmentation recipe is further from what the paper started from."""
    if weights is None or str(weights).lower() == "none":  # trained from scratch, on purpose
        return None, None
    if str(weights) == "imagenet":
        return getattr(enum, "IMAGENET1K_V1", enum.DEFAULT), None
    path = Path(weights)
    if not path.is_file():
        raise ReminderError(f"backbone weights file {path} does not exist (or pass 'imagenet')")
    return None, path


def _load_local(net: nn.Module, path: Path) -> None:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    missing, unexpected = net.load_state_dict(state, strict=False)
    if len([k for k in missing if not k.startswith("fc.") and not k.startswith("classifier.")]):
        raise ReminderError(f"backbone weights {path} do not fit this backbone: missing {missing[0]}")


def _build_torchvision(builder, enum, weights, **kwargs) -> nn.Module:
    tv_weights, local = _imagenet_weights(enum, weights)
    try:
        net = builder(weights=tv_weights, **kwargs)
    except (OSError, RuntimeError) as error:  # URLError is an OSError
        url = getattr(tv_weights, "url", "")
        cached = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
        raise ReminderError(
            f"ImageNet weights {tv_weights} could not be loaded ({str(error)[:120]}); without internet, download "
            f"{url} elsewhere and pass the file with `weights_backbone` PATH, or put it at {cached} (torchvision's "
            f"cache); `weights_backbone` none trains the backbone from scratch") from None
    if local is not None:
        _load_local(net, local)
    return net


def resnet_backbone(depth: int, *, weights: str | Path | None = None) -> ResNetBackbone:
    builders = {50: (resnet.resnet50, resnet.ResNet50_Weights),
                101: (resnet.resnet101, resnet.ResNet101_Weights)}
    builder, enum = builders[depth]
    net = _build_torchvision(builder, enum, weights, replace_stride_with_dilation=[False, False, True])
    # output stride 16 as the reference builds it: every block of the last stage dilated by 2
    # (torchvision leaves the stage's first block at dilation 1); the weights are unchanged
    first = net.layer4[0].conv2
    first.dilation, first.padding = (2, 2), (2, 2)
    return ResNetBackbone(net)


def mobilenet_v3_large_backbone(*, weights: str | Path | None = None) -> MobileNetV3Backbone:
    net = _build_torchvision(mobilenetv3.mobilenet_v3_large, mobilenetv3.MobileNet_V3_Large_Weights,
                             weights, dilated=True)
    return MobileNetV3Backbone(net)


def tiny_backbone(*, weights: str | Path | None = None) -> TinyBackbone:
    if weights is not None and str(weights).lower() != "none":
        raise ReminderError(f"the tiny backbone has no pretrained weights (got {weights!r}; leave them out, or none)")
    return TinyBackbone()


BACKBONES = {
    "resnet101": lambda weights=None: resnet_backbone(101, weights=weights),
    "resnet50": lambda weights=None: resnet_backbone(50, weights=weights),
    "mobilenet_v3_large": lambda weights=None: mobilenet_v3_large_backbone(weights=weights),
    "tiny": lambda weights=None: tiny_backbone(weights=weights),
}
OUTPUT_STRIDES = (8, 16)
