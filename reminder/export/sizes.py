"""The size a bundle runs at: the size of the frames the model was trained on.

A model trained on 320x192 camera frames (at native scale) must run on 320x192 frames:
letterboxed into the training crop (128x128, say), every object shrinks to 0.4x and thin
ones vanish. So a run on your own data deploys at its data's frame size (the most common
size among its evaluation images), and ``reminder eval`` (full images) scores at that size.
Benchmark runs keep their evaluation size (the paper's 512x512), or the crop.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable, Sequence

from reminder.errors import ReminderError

MIN_SIDE, MAX_SIDE = 32, 4096
SAMPLED_IMAGES = 32


def frame_size(paths: Sequence) -> tuple[int, int] | None:
    """(height, width) most common among the first images of ``paths`` (None: no images)."""
    from reminder.data.samples import open_image

    sizes = Counter()
    for path in list(paths)[:SAMPLED_IMAGES]:
        with open_image(path) as image:
            sizes[(image.height, image.width)] += 1
    return sizes.most_common(1)[0][0] if sizes else None


def check_deploy_size(size: Sequence[int]) -> tuple[int, int]:
    height, width = (int(v) for v in size)
    if not (MIN_SIDE <= height <= MAX_SIDE and MIN_SIDE <= width <= MAX_SIDE):
        raise ReminderError(f"deploy size {height}x{width} is outside {MIN_SIDE}..{MAX_SIDE} pixels per side")
    return height, width


def deploy_size(config, step: int, load_data: Callable, given: Sequence[int] | None = None) -> tuple[tuple[int, int],
                                                                                                  str]:
    """(height, width) of the bundle's input, and where it came from (``given``, ``data``,
    ``eval`` or ``crop``)."""
    if given is not None:
        return check_deploy_size(given), "given"
    if config.dataset == "custom":
        size = frame_size([s.image for s in load_data().step_test_samples(step)])
        if size is not None:
            return check_deploy_size(size), "data"
    if config.eval_size:
        return (config.eval_size, config.eval_size), "eval"
    return (config.crop_size, config.crop_size), "crop"
