"""Drawing label maps: colour masks, overlays on the frame, and side-by-side views.

Frames and outputs are OpenCV's BGR uint8 ``(H, W, 3)``; palettes are ``(K, 3)`` uint8 in
the same channel order as the frame they are drawn on.
"""

from __future__ import annotations

import numpy as np

from reminder.errors import ReminderError

VIEWS = ("overlay", "mask", "both")
LEGEND_MIN_HEIGHT = 120


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


def draw_legend(image: np.ndarray, labels: np.ndarray, palette: np.ndarray, names, *,
                background: bool = False) -> np.ndarray:
    """``image`` with a legend of the classes present in ``labels`` (colour box and name), at
    its top left on a dark panel; background (class 0) is listed only when ``background``.
    Images under ``LEGEND_MIN_HEIGHT`` pixels get none: it would hide most of them."""
    import cv2

    present = [int(k) for k in np.unique(labels) if (background or k > 0) and k < len(names)]
    if not present or image.shape[0] < LEGEND_MIN_HEIGHT:
        return image
    image = np.ascontiguousarray(image).copy()
    scale = max(0.35, min(1.0, image.shape[0] / 720 * 0.6))
    line = int(28 * scale) + 4
    box = line - 6
    widths = [cv2.getTextSize(str(names[k]), cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] for k in present]
    width = min(image.shape[1], box + 14 + max(widths))
    height = min(image.shape[0], line * len(present) + 6)
    panel = image[:height, :width]
    panel[:] = (panel.astype(np.uint16) * 2 // 5).astype(np.uint8)  # darkened, so any colour reads
    for row, k in enumerate(present):
        top = 4 + row * line
        if top + box > height:
            break
        color = tuple(int(v) for v in palette[k]) if k < len(palette) else (0, 0, 0)
        cv2.rectangle(image, (4, top), (4 + box, top + box), color, -1)
        cv2.rectangle(image, (4, top), (4 + box, top + box), (255, 255, 255), 1)
        cv2.putText(image, str(names[k]), (box + 10, top + box - 2), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (255, 255, 255), 1, cv2.LINE_AA)
    return image


def legend_bar(width: int, ids, palette: np.ndarray, names, *, height: int = 22) -> np.ndarray:
    """A white bar ``width`` pixels wide naming the classes ``ids`` beside their colour boxes
    (wrapped onto more rows when they do not fit), for figures that show several frames."""
    import cv2

    rows, x, row = [[]], 4, 0
    for k in ids:
        size = cv2.getTextSize(str(names[k]), cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)[0][0] + 26
        if x + size > width and rows[-1]:
            rows.append([])
            x = 4
        rows[-1].append((k, x))
        x += size
    bar = np.full((height * len(rows), width, 3), 255, np.uint8)
    for row, entries in enumerate(rows):
        top = row * height + 5
        for k, left in entries:
            cv2.rectangle(bar, (left, top), (left + 12, top + 12), tuple(int(v) for v in palette[k]), -1)
            cv2.rectangle(bar, (left, top), (left + 12, top + 12), (0, 0, 0), 1)
            cv2.putText(bar, str(names[k]), (left + 16, top + 11), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1,
                        cv2.LINE_AA)
    return bar


def render(frame: np.ndarray, labels: np.ndarray, palette: np.ndarray, *, view: str = "overlay",
           alpha: float = 0.5, names=None) -> np.ndarray:
    """One output image per frame: ``overlay``, the colour ``mask`` alone, or ``both`` side by
    side; with ``names`` (class names by id), a legend of the classes present."""
    if view == "overlay":
        image = overlay(frame, labels, palette, alpha=alpha)
    elif view == "mask":
        image = colorize(labels, palette)
    elif view == "both":
        image = np.concatenate([overlay(frame, labels, palette, alpha=alpha), colorize(labels, palette)], axis=1)
    else:
        raise ReminderError(f"unknown view {view!r}; choose one of {', '.join(VIEWS)}")
    return image if names is None else draw_legend(image, labels, palette, names)


def write_label_png(path, labels: np.ndarray, colors: np.ndarray) -> None:
    """``(H, W)`` uint8 class ids as a palette PNG: any viewer shows the class colours (RGB
    ``colors``, ``(K, 3)``) and the pixel values are still the ids (no PIL needed)."""
    import struct
    import zlib

    if labels.dtype != np.uint8 or labels.ndim != 2:
        raise ReminderError(f"label PNGs hold (H, W) uint8 class ids, got {labels.dtype} {labels.shape}")
    palette = np.zeros((256, 3), np.uint8)
    palette[: min(256, len(colors))] = np.asarray(colors, np.uint8)[:256]

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    height, width = labels.shape
    rows = np.concatenate([np.zeros((height, 1), np.uint8), np.ascontiguousarray(labels)], axis=1)
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0))
            + chunk(b"PLTE", palette.tobytes()) + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
            + chunk(b"IEND", b""))
    with open(path, "wb") as handle:
        handle.write(data)
