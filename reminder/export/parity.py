"""Parity at export time: every artifact against eager PyTorch on real images.

Images are fed one at a time at their own size (so the dynamic height and width are
exercised), as float32 RGB 0..255, through the runtime's own backends. Reported: share of
pixels with the same label, and the largest absolute difference of the logits (or of the
confidence, for label outputs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from reminder.contracts.manifest import InputSpec
from reminder.data.samples import read_image
from reminder.errors import ReminderError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def images_from_folder(folder: str | Path, limit: int = 8) -> list[np.ndarray]:
    folder = Path(folder)
    if not folder.is_dir():
        raise ReminderError(f"image folder {folder} " + ("is a file: give the folder that holds the images"
                                                         if folder.exists() else "does not exist"))
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not paths:
        raise ReminderError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return [read_image(p) for p in paths]


def _labels_and_values(outputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    if "logits" in outputs:
        return outputs["logits"].argmax(axis=1), outputs["logits"]
    return outputs["labels"].astype(np.int64), outputs["confidence"]


def check_parity(module: torch.nn.Module, backend, images: Sequence[np.ndarray], *, threshold: float,
                 device: str = "cpu", spec: InputSpec | None = None) -> dict:
    """Compare ``backend`` with the eager ``module`` on ``images``; ``passed`` when at least
    ``threshold`` of the pixels get the same label."""
    same = total = 0
    max_diff = 0.0
    module = module.eval().to(device)
    for image in images:
        [batch] = (spec or InputSpec(*image.shape[:2])).to_inputs([image], resize="none")
        with torch.no_grad():
            eager = module(torch.from_numpy(batch).to(device))
        eager = eager if isinstance(eager, tuple) else (eager,)
        names = ["logits"] if len(eager) == 1 else ["labels", "confidence"]
        expected_labels, expected_values = _labels_and_values(
            {n: t.cpu().numpy() for n, t in zip(names, eager)})
        labels, values = _labels_and_values(backend(batch))
        if labels.shape != expected_labels.shape:
            raise ReminderError(f"{backend.name} output has shape {labels.shape}, eager {expected_labels.shape}")
        same += int((labels == expected_labels).sum())
        total += labels.size
        max_diff = max(max_diff, float(np.abs(values.astype(np.float64) - expected_values).max()))
    agreement = same / max(total, 1)
    return {"images": len(images), "pixels": total, "pixel_agreement": agreement, "max_abs_diff": max_diff,
            "threshold": threshold, "passed": agreement >= threshold}
