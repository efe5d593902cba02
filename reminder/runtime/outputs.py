"""What a stream writes: overlay video (or images, for image sources), label PNGs and
JSON lines of per-frame stats, under ``--out/<source label>/``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from reminder.errors import ReminderError
from reminder.runtime.predictor import Prediction, Predictor
from reminder.runtime.sources import ImageSource

if TYPE_CHECKING:
    from reminder.runtime.stream import Frame

SAVE_KINDS = ("video", "labels", "stats")


class Outputs:
    """Overlay video (or images, for image sources), label PNGs and JSON lines of stats."""

    def __init__(self, out: Path | None, save: Sequence[str], sources, *, view: str, alpha: float):
        self.check(out, save)
        self.out, self.save, self.sources, self.view, self.alpha = out, set(save), sources, view, alpha
        self.writers: dict[int, object] = {}
        self.written: dict[int, int] = {}   # frames written to each overlay video
        self.folders: set[Path] = set()
        self.lost: list[str] = []           # outputs that could not be written (a full disk, say)
        self.stats = None
        if out is not None and self.save:
            out.mkdir(parents=True, exist_ok=True)
            if "stats" in self.save:
                self.stats = open(out / "stats.jsonl", "a", buffering=1)

    @staticmethod
    def check(out: Path | None, save: Sequence[str]) -> None:
        unknown = set(save) - set(SAVE_KINDS)
        if unknown:
            raise ReminderError(f"unknown `save` {', '.join(sorted(unknown))}; choose from {', '.join(SAVE_KINDS)}")
        if save and out is None:
            raise ReminderError("`save` needs `out` (the folder to write to)")

    def folder(self, source: int, kind: str) -> Path:
        folder = self.out / self.sources[source].label / kind
        if folder not in self.folders:  # created once, not on every frame
            folder.mkdir(parents=True, exist_ok=True)
            self.folders.add(folder)
        return folder

    def write(self, frame: Frame, prediction: Prediction, predictor: Predictor, record: dict) -> None:
        import cv2

        if "video" in self.save:
            image = predictor.render(frame.image, prediction, view=self.view, alpha=self.alpha)
            if isinstance(self.sources[frame.source], ImageSource):
                path = self.folder(frame.source, "overlay") / f"{frame.name}.jpg"
                if not cv2.imwrite(str(path), image):  # OpenCV says False, it raises nothing
                    self._lose(path, "not written")
            else:
                self._video(frame.source, image).write(self._fit(frame.source, image))
                self.written[frame.source] = self.written.get(frame.source, 0) + 1
        if "labels" in self.save:
            path = self.folder(frame.source, "labels") / f"{frame.name}.png"
            try:
                predictor.save_labels(path, prediction)
            except OSError as error:
                self._lose(path, error.strerror or str(error))
        if self.stats is not None:
            try:
                self.stats.write(json.dumps(record) + "\n")
            except OSError as error:
                self._lose(self.out / "stats.jsonl", error.strerror or str(error))

    def _lose(self, path: Path, why: str) -> None:
        if not self.lost:  # the first one is said at once, with the free space left
            import shutil

            free = shutil.disk_usage(path.parent if path.parent.exists() else self.out).free
            self.lost.append(f"{path}: {why} ({free / 1e6:.0f} MB free on its disk)")
        else:
            self.lost.append(f"{path}: {why}")

    def _video(self, source: int, image: np.ndarray):
        import cv2

        if source not in self.writers:
            path = self.out / self.sources[source].label / "overlay.mp4"
            path.parent.mkdir(parents=True, exist_ok=True)
            fps = self.sources[source].fps or 30.0
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (image.shape[1], image.shape[0]))
            if not writer.isOpened():
                raise ReminderError(f"cannot write video {path} (OpenCV has no mp4v encoder here)")
            self.writers[source] = (writer, image.shape[:2])
        return self.writers[source][0]

    def _fit(self, source: int, image: np.ndarray) -> np.ndarray:
        import cv2

        height, width = self.writers[source][1]
        return image if image.shape[:2] == (height, width) else cv2.resize(image, (width, height))

    def close(self) -> None:
        import cv2

        for source, (writer, _) in self.writers.items():
            writer.release()
            path = self.out / self.sources[source].label / "overlay.mp4"
            capture = cv2.VideoCapture(str(path))  # a video cut short by a full disk: its last frame is gone
            readable = capture.isOpened()
            if readable and self.written.get(source, 0):
                capture.set(cv2.CAP_PROP_POS_FRAMES, self.written[source] - 1)
                readable = capture.read()[0]
            capture.release()
            if not readable:
                self._lose(path, f"unreadable after {self.written.get(source, 0)} frames")
        self.writers.clear()
        if self.stats is not None:
            try:
                self.stats.close()
            except OSError as error:
                self._lose(self.out / "stats.jsonl", error.strerror or str(error))
            self.stats = None
