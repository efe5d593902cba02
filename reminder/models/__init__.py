"""Segmentation models with a classifier head that grows at every continual step."""

from reminder.models.classifier import IncrementalClassifier
from reminder.models.segmenter import (
    IncrementalSegmenter,
    SegmenterOutput,
    build_segmenter,
    deeplabv3_mobilenet_v3_large,
    deeplabv3_resnet50,
    deeplabv3_resnet101,
    deeplabv3_tiny,
    segmenter_from_config,
)

__all__ = [
    "IncrementalClassifier", "IncrementalSegmenter", "SegmenterOutput", "build_segmenter",
    "deeplabv3_mobilenet_v3_large", "deeplabv3_resnet50", "deeplabv3_resnet101", "deeplabv3_tiny",
    "segmenter_from_config",
]
