"""Frame sources: cameras (V4L2), video files, RTSP / HTTP streams, GStreamer pipelines,
image folders and globs, all read with OpenCV.

``open_source(spec)`` reads what the user typed: ``0`` (camera index), ``/dev/video1``,
``rtsp://...`` / ``http://...``, a GStreamer pipeline (contains ``!``, ends in
``appsink``), a video file, an image file, a folder of images or a glob
(``frames/*.png``). Live sources (cameras, network streams, pipelines) are reconnected
with backoff when they drop out; files end when they end.
"""

from __future__ import annotations

import glob
import re
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from reminder.errors import ReminderError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
NETWORK_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")


class EndOfSource(Exception):
    """A file source has no more frames (or a live one could not be reconnected)."""


class ImageSource:
    """Image files, read in the order given. An unreadable file is reported, not fatal."""

    live = False

    def __init__(self, paths: list[Path], label: str, description: str):
        self.paths, self.label, self.description = paths, label, description
        self.names = unique_names(paths)
        self.position = 0
        self.fps = None
        self.name = ""
        self.warning = None

    def open(self) -> None:
        pass

    def read(self) -> np.ndarray | None:
        """The next image (BGR uint8), ``None`` when that file cannot be decoded.
        ``warning`` says what was wrong with a file that decoded anyway (a truncated JPEG
        decodes, grey below the cut)."""
        import cv2

        if self.position >= len(self.paths):
            raise EndOfSource
        path, self.name = self.paths[self.position], self.names[self.position]
        self.position += 1
        self.warning = truncated_jpeg(path)
        try:  # cv2.imread of a name that is not UTF-8 (a surrogate in the str) crashed the process
            str(path).encode("utf-8")
        except UnicodeEncodeError:  # such a name is read through its bytes
            try:
                data = np.fromfile(path, dtype=np.uint8)
            except OSError:
                return None
            return cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
        return cv2.imread(str(path), cv2.IMREAD_COLOR)  # decodes a truncated JPEG, which imdecode refuses

    def reconnect(self) -> bool:
        return False

    def close(self) -> None:
        pass


class CaptureSource:
    """Anything ``cv2.VideoCapture`` opens: files, cameras, network streams, pipelines."""

    def __init__(self, target, api: int, *, live: bool, label: str, description: str):
        self.target, self.api, self.live = target, api, live
        self.label, self.description = label, description
        self.capture = None
        self.fps = None
        self.index = 0
        self.name = ""

    def open(self) -> None:
        import cv2

        capture = cv2.VideoCapture(self.target, self.api)
        if not capture.isOpened():
            capture.release()
            hint = " (is it connected, and is this user in the 'video' group?)" if isinstance(self.target, int) else ""
            raise ReminderError(f"cannot open {self.description}{hint}")
        if self.live:
            capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # ask the driver for its newest frame
        fps = capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and 1 <= fps <= 240 else None
        self.capture = capture

    def read(self) -> np.ndarray | None:
        ok, frame = self.capture.read()
        if not ok:
            raise EndOfSource
        self.name = f"{self.index:06d}"
        self.index += 1
        if frame is None or frame.ndim != 3 or frame.shape[2] != 3:
            return None
        return frame

    def reconnect(self) -> bool:
        self.close()
        try:
            self.open()
        except ReminderError:
            return False
        return True

    def close(self) -> None:
        if self.capture is not None:
            self.capture.release()
            self.capture = None


def gstreamer_available() -> bool:
    import cv2

    match = re.search(r"GStreamer:\s*(\w+)", cv2.getBuildInformation())
    return bool(match and match.group(1).upper() == "YES")


def printable(text: str) -> str:
    """``text`` with the bytes of a file name that are not UTF-8 shown as ``\\xff`` escapes."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def unique_names(paths: Sequence[Path]) -> list[str]:
    """One output name per image, never two alike: the file's stem; where stems repeat (``a/f.jpg``,
    ``b/f.jpg``, ``a/f.png``), its path below the images' common folder, extension included.
    Bytes that are not UTF-8 become ``_``, so every name can be written."""
    def clean(text: str) -> str:
        return "".join(c if c.isprintable() and c not in "/\\" else "_" for c in printable(text).replace("\\x", "x"))

    stems = [clean(p.stem) for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    import os

    common = Path(os.path.commonpath([str(p.parent) for p in paths])) if paths else Path()
    names, used = [], set()
    for path, stem in zip(paths, stems):
        name = stem
        if stems.count(stem) > 1:
            name = clean("-".join(path.relative_to(common).with_suffix("").parts) + "_" + path.suffix.lstrip("."))
        while name in used:
            name += "_"
        used.add(name)
        names.append(name)
    return names


def _images(paths, what: str) -> list[Path]:
    images = sorted(Path(p) for p in paths if Path(p).suffix.lower() in IMAGE_EXTENSIONS and Path(p).is_file())
    if not images:
        raise ReminderError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in {what}")
    return images


def truncated_jpeg(path: Path) -> str | None:
    """Why a JPEG file is incomplete (no end-of-image marker at its end), or ``None``."""
    if path.suffix.lower() not in (".jpg", ".jpeg"):
        return None
    try:
        with open(path, "rb") as handle:
            handle.seek(-2, 2)
            end = handle.read(2)
    except OSError:
        return None
    return None if end == b"\xff\xd9" else f"{path.name} is a truncated JPEG (no end marker); the part after the " \
                                                "cut is missing"


def safe_label(label: str) -> str:
    """A source's label as a plain folder name under ``--out`` (``..`` or ``/`` never
    lead outside it)."""
    label = re.sub(r"[^A-Za-z0-9._-]", "_", label).lstrip(".")
    return label[:64] or "source"


def open_source(spec: str, *, live: bool | None = None, label: str | None = None):
    """The source ``spec`` names, opened. ``live`` overrides whether it is treated as a
    live source (newest frame wins, reconnect on drop-out): a recording can stand in for a
    camera. Raises :class:`ReminderError` naming the source when it cannot be opened."""
    import cv2

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # a failed open is reported once, by us
    spec = str(spec).strip()
    if not spec:
        raise ReminderError("empty `source`")
    v4l2 = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
    if spec.isdigit():
        source = CaptureSource(int(spec), v4l2, live=True if live is None else live, label=label or f"camera{spec}",
                               description=f"camera {spec} (/dev/video{spec})")
    elif spec.startswith("/dev/video"):
        source = CaptureSource(spec, v4l2, live=True if live is None else live,
                               label=label or Path(spec).name, description=f"camera {spec}")
    elif spec.lower().startswith(NETWORK_SCHEMES):
        host = re.sub(r"^\w+://(?:[^@/]*@)?", "", spec).split("/")[0].replace(":", "_")
        source = CaptureSource(spec, cv2.CAP_FFMPEG, live=True if live is None else live,
                               label=label or f"stream_{host}", description=f"stream {spec}")
    elif "!" in spec:
        if not gstreamer_available():
            raise ReminderError("this OpenCV was built without GStreamer, so pipeline sources cannot open; "
                                "on Jetson use the system OpenCV (python3-opencv from JetPack)")
        source = CaptureSource(spec, cv2.CAP_GSTREAMER, live=True if live is None else live,
                               label=label or "pipeline", description=f"GStreamer pipeline {spec!r}")
    elif any(c in spec for c in "*?["):
        source = ImageSource(_images(glob.glob(spec), f"glob {spec!r}"), label or "images", f"images {spec!r}")
    else:
        path = Path(spec)
        if path.is_dir():
            source = ImageSource(_images(path.iterdir(), f"folder {path}"), label or path.name, f"folder {path}")
        elif path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
            source = ImageSource([path], label or path.stem, f"image {path}")
        elif path.is_file():
            source = CaptureSource(str(path), cv2.CAP_ANY, live=bool(live), label=label or path.stem,
                                   description=f"video {path}")
        else:
            raise ReminderError(f"source {spec}: no such file, folder or camera")
    if live and isinstance(source, ImageSource):
        raise ReminderError(f"source {spec} is a set of images; it cannot be read as live")
    source.label = safe_label(source.label)
    source.open()
    return source
