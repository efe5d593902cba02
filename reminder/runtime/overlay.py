"""Drawing label maps: colour masks, overlays on the frame, and side-by-side views.

Frames and outputs are OpenCV's BGR uint8 ``(H, W, 3)``; palettes are ``(K, 3)`` uint8 in
the same channel order as the frame they are drawn on.
"""

from __future__ import annotations

import numpy as np

from reminder.errors import ReminderError

VIEWS = ("overlay", "mask", "both")


def colorize(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """``(H, W)`` class ids -> ``(H, W, 3)`` colours (ids past the palette are black)."""
    if labels.max(initial=0) >= len(palette):
        palette = np.concatenate([palette, np.zeros((int(labels.max()) + 1 - len(palette), 3), np.uint8)])
    return palette[labels]


def overlay(frame: np.ndarray, labels: np.ndarray, palette: np.ndarray, *, alpha: float = 0.5,
            background: bool = False) -> np.ndarray:
    """The frame with each pixel's class colour blended in at ``alpha``.

    Background pixels (class 0) are left as they are unless ``background`` is set, so the
    scene stays visible where nothing was found.
    """
    import cv2

    if not 0.0 <= alpha <= 1.0:
        raise ReminderError(f"alpha must be within 0..1, got {alpha}")
    blended = cv2.addWeighted(frame, 1.0 - alpha, colorize(labels, palette), alpha, 0.0)
    if background:
        return blended
    return np.where((labels > 0)[..., None], blended, frame)


def render(frame: np.ndarray, labels: np.ndarray, palette: np.ndarray, *, view: str = "overlay",
           alpha: float = 0.5) -> np.ndarray:
    """One output image per frame: ``overlay``, the colour ``mask`` alone, or ``both`` side by side."""
    if view == "overlay":
        return overlay(frame, labels, palette, alpha=alpha)
    if view == "mask":
        return colorize(labels, palette)
    if view == "both":
        return np.concatenate([overlay(frame, labels, palette, alpha=alpha), colorize(labels, palette)], axis=1)
    raise ReminderError(f"unknown view {view!r}; choose one of {', '.join(VIEWS)}")
