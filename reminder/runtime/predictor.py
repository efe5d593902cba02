"""``Predictor``: frames in, label maps out, with a bundle's model on the best backend here.

Pre-processing resizes each frame to the network input (``letterbox``: keep the aspect
and pad; ``fit``: keep the aspect, no padding, so the input shape follows the frame;
``stretch``: ignore the aspect; ``none``: the frame as it is), converts HWC uint8 to NCHW
float32 in 0..255 and batches frames of the same input shape. Normalisation happens in the
exported graph (the manifest says so), so nothing else is done to the pixels.
Post-processing takes the argmax when the model outputs logits, removes the padding and
resizes the labels back to each frame with nearest-neighbour interpolation.

Torch-free: numpy, OpenCV and the backend's own library only.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from reminder.contracts.manifest import RESIZE_MODES, Placement
from reminder.errors import ReminderError
from reminder.bundle import open_bundle
from reminder.runtime.backends import select_backend
from reminder.runtime.overlay import render, write_label_png

MIN_SIZE, MAX_SIZE = 16, 8192  # network input per side: below, the model has nothing left; above, no memory


@dataclass
class Prediction:
    """One frame's result, at the frame's own size."""

    labels: np.ndarray               # (H, W) class ids, uint8 (uint16 above 256 classes)
    confidence: np.ndarray | None    # (H, W) top softmax probability, when asked for
    counts: np.ndarray               # (K,) pixels per class

    @property
    def shares(self) -> np.ndarray:
        """(K,) fraction of the frame's pixels in each class."""
        return self.counts / max(int(self.counts.sum()), 1)


def check_frame(frame, what: str = "frame") -> np.ndarray:
    """Refuse anything but an ``(H, W, 3)`` uint8 array, naming what was given."""
    if not isinstance(frame, np.ndarray):
        raise ReminderError(f"{what} must be a numpy array (H, W, 3) uint8, got {type(frame).__name__}")
    if frame.dtype != np.uint8:
        raise ReminderError(f"{what} has dtype {frame.dtype}; expected uint8 (H, W, 3)")
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] < 1 or frame.shape[1] < 1:
        raise ReminderError(f"{what} has shape {frame.shape}; expected (H, W, 3) with 3 colour channels")
    return frame


class Predictor:
    """Runs a bundle on frames.

    ``bundle``: a bundle folder, its ``.tar``, or an install folder holding ``current``.
    ``size``: the network input ``(height, width)`` (default: the manifest's input size).
    ``color``: channel order of the frames given (``"bgr"`` as OpenCV reads them, or ``"rgb"``).
    ``backend``: ``auto``, ``ort``, ``openvino``, ``trt``, ``torchscript`` or ``aoti``; or
    ``triton`` with ``url=`` (``http://HOST:8000`` or ``grpc://HOST:8001``): ``bundle`` is
    then the model's name on that Triton server, and :meth:`refresh` follows its versions.
    ``precision``: ``fp32``, ``int8`` (the bundle's ``onnx-int8`` artifact, or an INT8
    engine) or ``auto`` (INT8 on a CPU when the bundle has it, else FP32).
    Backend options (``threads``, ``providers``, ``device``, ...) go to the backend.
    """

    def __init__(self, bundle: str | Path, *, backend: str = "auto", precision: str = "auto",
                 size: int | Sequence[int] | None = None,
                 resize: str = "letterbox", color: str = "bgr", confidence: bool = False,
                 workdir: str | Path | None = None, log: Callable[[str], None] | None = None, **backend_options):
        if resize not in RESIZE_MODES:
            raise ReminderError(f"unknown resize mode {resize!r}; choose one of {', '.join(RESIZE_MODES)}")
        if color not in ("bgr", "rgb"):
            raise ReminderError(f"color must be 'bgr' or 'rgb', got {color!r}")
        if backend == "triton":  # ``bundle`` names the model on the server at ``url``
            from reminder.runtime.triton import TritonBackend

            self.path = None
            self.backend = TritonBackend(backend_options.get("url"), str(bundle), log=log,
                                         timeout=backend_options.get("timeout", 10.0))
            self.manifest = self.backend.manifest
        else:
            source = resolve_bundle(bundle)
            if workdir is None and source.is_file():
                # a .tar is unpacked into a folder of its own, removed with this predictor
                workdir = tempfile.mkdtemp(prefix="reminder-bundle-")
                weakref.finalize(self, shutil.rmtree, workdir, True)
            self.path, self.manifest = open_bundle(source, workdir)
            self.backend = select_backend(self.path, self.manifest, backend, precision=precision, log=log,
                                          **backend_options)
        self.precision = getattr(self.backend, "precision", "fp32")
        spec = self.manifest.input
        if size is None:
            size = spec.size
        elif isinstance(size, int):
            size = (size, size)
        self.size = (int(size[0]), int(size[1]))
        if min(self.size) < MIN_SIZE or max(self.size) > MAX_SIZE:
            raise ReminderError(f"input size {self.size[0]}x{self.size[1]} is outside {MIN_SIZE}..{MAX_SIZE} pixels "
                                f"per side")
        self.resize, self.color, self.with_confidence = resize, color, confidence
        self.max_batch = check_profile(getattr(self.backend, "profile", None), self.size, resize,
                                       getattr(self.backend, "path", self.path))
        self._take_manifest(self.manifest)

    def _take_manifest(self, manifest) -> None:
        self.manifest = manifest
        self.output_kind = manifest.outputs.kind
        self.classes = manifest.classes
        self.names = list(self.classes.names)
        self.version = manifest.version
        rgb = np.array(self.classes.colors, dtype=np.uint8).reshape(-1, 3)
        self.colors = rgb  # RGB, for label PNGs
        self.palette = rgb if self.color == "rgb" else np.ascontiguousarray(rgb[:, ::-1])

    def refresh(self) -> bool:
        """A served model (``backend="triton"``): move to the server's newest version, with its
        classes, when there is one; True when it moved. Other backends: False."""
        refresh = getattr(self.backend, "refresh", None)
        if refresh is None or not refresh():
            return False
        self._take_manifest(self.backend.manifest)
        return True

    def close(self) -> None:
        """Release the backend's native resources now (a backend without any keeps them to
        garbage collection). The predictor cannot predict afterwards."""
        close = getattr(self.backend, "close", None)
        if close is not None:
            close()

    @property
    def backend_name(self) -> str:
        providers = getattr(self.backend, "providers", None)
        name = f"{self.backend.name} {self.precision}"
        return f"{name} ({', '.join(providers)})" if providers else name

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    # -- pre-processing ------------------------------------------------------------
    def preprocess(self, frames: Sequence[np.ndarray]) -> list[tuple[list[int], np.ndarray, list[Placement]]]:
        """Frames -> ``[(frame indices, (B, 3, h, w) float32 batch, placements)]``, one
        batch per distinct input shape (the manifest's :meth:`InputSpec.to_batch`)."""
        for i, frame in enumerate(frames):
            check_frame(frame, f"frame {i}")
        return self.manifest.input.to_batch(frames, size=self.size, resize=self.resize, color=self.color)

    # -- inference and post-processing -----------------------------------------
    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``(B, 3, h, w)`` float32 -> labels ``(B, h, w)`` and confidence (or None); a
        batch larger than the backend accepts runs in parts."""
        if self.max_batch is not None and len(batch) > self.max_batch:
            parts = [self.infer(batch[i:i + self.max_batch]) for i in range(0, len(batch), self.max_batch)]
            labels = np.concatenate([p[0] for p in parts])
            return labels, None if parts[0][1] is None else np.concatenate([p[1] for p in parts])
        outputs = self.backend(batch)
        if self.output_kind == "logits":
            logits = outputs["logits"]
            labels = logits.argmax(axis=1)
            confidence = None
            if self.with_confidence:
                top = logits.max(axis=1, keepdims=True)
                confidence = (1.0 / np.exp(logits - top).sum(axis=1)).astype(np.float32)
        else:
            labels, confidence = outputs["labels"], outputs.get("confidence")
        labels = labels.astype(np.uint8 if self.num_classes <= 256 else np.uint16, copy=False)
        return labels, confidence if self.with_confidence else None

    def postprocess(self, labels: np.ndarray, confidence: np.ndarray | None, place: Placement) -> Prediction:
        import cv2

        labels = labels[place.top:place.top + place.height, place.left:place.left + place.width]
        size = (place.frame_width, place.frame_height)
        if labels.shape != (place.frame_height, place.frame_width):
            labels = cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST)
        if confidence is not None:
            confidence = confidence[place.top:place.top + place.height, place.left:place.left + place.width]
            if confidence.shape != labels.shape:
                confidence = cv2.resize(confidence, size, interpolation=cv2.INTER_LINEAR)
        counts = np.bincount(labels.ravel(), minlength=self.num_classes)
        return Prediction(np.ascontiguousarray(labels), confidence, counts)

    def predict(self, frames: np.ndarray | Sequence[np.ndarray]) -> list[Prediction]:
        """One frame ``(H, W, 3)``, a batch ``(B, H, W, 3)`` or a list of frames of any sizes
        (uint8, in this predictor's ``color`` order) -> one :class:`Prediction` per frame."""
        if frames is None:
            raise ReminderError("no frame given (None): cv2.imread returns None for a file it cannot read")
        if isinstance(frames, np.ndarray) and frames.ndim == 3:
            frames = [frames]
        elif isinstance(frames, np.ndarray) and frames.ndim == 4:
            frames = list(frames)
        elif isinstance(frames, np.ndarray):
            raise ReminderError(f"frames have shape {frames.shape}; expected (H, W, 3) or (B, H, W, 3)")
        results: list[Prediction | None] = [None] * len(frames)
        for indices, batch, places in self.preprocess(frames):
            labels, confidence = self.infer(batch)
            for row, (i, place) in enumerate(zip(indices, places)):
                results[i] = self.postprocess(labels[row], None if confidence is None else confidence[row], place)
        return results

    __call__ = predict

    # -- presentation ----------------------------------------------------------
    def render(self, frame: np.ndarray, prediction: Prediction, *, view: str = "overlay",
               alpha: float = 0.5, legend: bool = True) -> np.ndarray:
        """The frame with its labels drawn in the bundle's palette (see :mod:`.overlay`) and,
        with ``legend``, the names and colours of the classes present."""
        return render(frame, prediction.labels, self.palette, view=view, alpha=alpha,
                      names=self.names if legend else None)

    def save_labels(self, path, prediction: Prediction) -> None:
        """The label map as a palette PNG: class colours in any viewer, pixel values the ids."""
        write_label_png(path, prediction.labels.astype(np.uint8, copy=False), self.colors)

    def shares(self, prediction: Prediction, *, minimum: float = 0.0) -> dict[str, float]:
        """``{class name: share of the frame}`` for the classes above ``minimum``."""
        shares = prediction.shares
        return {self.names[k]: round(float(shares[k]), 6) for k in np.flatnonzero(shares > minimum)
                if k < self.num_classes}


def check_profile(profile, size: tuple[int, int], resize: str, engine: Path) -> int | None:
    """For a backend with a fixed shape profile (a TensorRT engine): refuse what it cannot
    take, saying why, and return its largest batch (``None`` without a profile)."""
    if profile is None:
        return None
    if resize in ("none", "fit"):
        raise ReminderError(f"resize={resize} feeds frames at shapes of their own, and engine {Path(engine).name} "
                            f"accepts only {profile.describe()}; use letterbox or stretch, or the ort backend")
    if not profile.holds(*size):
        raise ReminderError(f"input size {size[0]}x{size[1]} is outside engine {Path(engine).name}'s profile "
                            f"({profile.describe()}); choose a size inside it, or export the engine again with "
                            f"`trt_sizes` {size[0]}x{size[1]}")
    return profile.max_shape[0]


def resolve_bundle(path: str | Path) -> Path:
    """A bundle folder or ``.tar`` as given; an install folder (``current`` inside, no
    ``manifest.json``) -> the bundle ``current`` points at, resolved once: every file is
    then read from that one version even if ``current`` switches meanwhile."""
    import os

    path = Path(path)
    if path.is_dir() and not (path / "manifest.json").exists() and (path / "current").exists():
        return Path(os.path.realpath(path / "current"))
    if not path.exists():
        raise ReminderError(f"bundle {path} does not exist")
    return path
