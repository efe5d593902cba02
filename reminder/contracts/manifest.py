"""The bundle manifest, typed: checked once when read, read through attributes, written
through methods, and turned into JSON only here.

``manifest.json`` (format ``reminder-bundle/1``)::

    name, version, step, created, parent {version, manifest_sha256} or null
    classes [{id, name, color}]
    input {height, width, layout, dtype, range, color, mean, std, normalization, sizes, profile}
    outputs {kind: labels|logits, names, label_dtype}
    artifacts {format: {path, sha256, bytes, precision, ... format fields}}, skipped {format: reason}
    files {name: {sha256, bytes}}, parity {format: {...}}, int8_refused {...}
    model {backbone, head, output_stride, classes_per_step, recipe, method, ...}
    metrics {...}, quality {per_class_iou, weak, ...}, tools {...}

:class:`InputSpec` also owns the one preparation of frames for the network
(:meth:`InputSpec.to_batch`): the runtime, the export's parity check, INT8 calibration and
the INT8 gate all feed the model through it.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np

from reminder.contracts.classes import ClassTable
from reminder.errors import ReminderError

BUNDLE_FORMAT = "reminder-bundle/1"
RESIZE_MODES = ("letterbox", "fit", "stretch", "none")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# names and versions become folder and file names (installs, targets): plain words only
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,254}")


def check_name(value, what: str) -> str:
    """``value`` if it is a plain name (letters, digits, ``._+-``, starting with a letter or
    digit, at most 128 characters: never ``.``, ``..``, a path or empty), else an error."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ReminderError(f"{what} {value!r} is not allowed: use letters, digits and . _ + - (starting with a "
                            f"letter or digit, at most 128 characters)")
    return value


def check_file_name(value, what: str) -> str:
    """``value`` if it is a plain file name inside the bundle (no folder, not hidden)."""
    if not isinstance(value, str) or not _FILE.fullmatch(value):
        raise ReminderError(f"{what} {value!r} must be a plain file name inside the bundle")
    return value


@dataclass(frozen=True)
class Placement:
    """Where a frame sits in the network input: ``(top, left, height, width)`` of its
    resized content, and the frame's own size."""

    top: int
    left: int
    height: int
    width: int
    frame_height: int
    frame_width: int


@dataclass(frozen=True)
class InputSpec:
    """The network input: NCHW float32 RGB in 0..255, normalised inside the graph with
    ``mean``/``std``; ``height`` x ``width`` is the deploy size."""

    height: int
    width: int
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    sizes: dict | None = None    # deploy size, where it came from, the training crop
    profile: dict | None = None  # the shapes the exporter checked (an engine profile)

    @classmethod
    def from_json(cls, data: dict, where: str = "manifest") -> "InputSpec":
        try:
            height, width = int(data["height"]), int(data["width"])
            mean = tuple(float(v) for v in data.get("mean", IMAGENET_MEAN))
            std = tuple(float(v) for v in data.get("std", IMAGENET_STD))
        except (KeyError, TypeError, ValueError):
            raise ReminderError(f"{where}: 'input' needs integer height and width, and numeric mean and std") from None
        if not (1 <= height <= 65536 and 1 <= width <= 65536) or len(mean) != 3 or len(std) != 3:
            raise ReminderError(f"{where}: 'input' has size {height}x{width} or a mean/std without 3 channels")
        profile = data.get("profile")
        if profile is not None and not (isinstance(profile, dict) and all(
                isinstance(profile.get(k), list) and len(profile[k]) == 3
                and all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 65536 for v in profile[k])
                for k in ("min_shape", "opt_shape", "max_shape"))):
            raise ReminderError(f"{where}: input.profile needs min_shape, opt_shape and max_shape as [batch, "
                                f"height, width] of positive whole numbers")
        return cls(height, width, mean, std, data.get("sizes"), profile)

    def to_json(self) -> dict:
        data = {"height": self.height, "width": self.width, "layout": "NCHW", "dtype": "float32", "range": [0, 255],
                "color": "RGB", "mean": list(self.mean), "std": list(self.std), "normalization": "in-graph"}
        if self.sizes is not None:
            data["sizes"] = self.sizes
        if self.profile is not None:
            data["profile"] = self.profile
        return data

    @property
    def size(self) -> tuple[int, int]:
        return self.height, self.width

    @property
    def pad(self) -> tuple[int, int, int]:
        """Letterbox padding in the mean colour: zero after the in-graph normalisation."""
        return tuple(round(255 * m) for m in self.mean)

    def place(self, height: int, width: int, *, size: tuple[int, int] | None = None,
              resize: str = "letterbox") -> tuple[tuple[int, int], Placement]:
        """The input shape for a ``height`` x ``width`` frame and where its content goes:
        ``letterbox`` keeps the aspect and pads to ``size`` (default: the deploy size),
        ``fit`` keeps the aspect without padding, ``stretch`` ignores the aspect and
        ``none`` keeps the frame as it is."""
        net_h, net_w = size or self.size
        if resize == "none":
            return (height, width), Placement(0, 0, height, width, height, width)
        if resize == "stretch":
            return (net_h, net_w), Placement(0, 0, net_h, net_w, height, width)
        if resize not in RESIZE_MODES:
            raise ReminderError(f"unknown resize mode {resize!r}; choose one of {', '.join(RESIZE_MODES)}")
        scale = min(net_h / height, net_w / width)
        new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
        if resize == "fit":
            return (new_h, new_w), Placement(0, 0, new_h, new_w, height, width)
        top, left = (net_h - new_h) // 2, (net_w - new_w) // 2
        return (net_h, net_w), Placement(top, left, new_h, new_w, height, width)

    def write(self, frame: np.ndarray, shape: tuple[int, int], place: Placement, out: np.ndarray, *,
              color: str = "rgb") -> None:
        """One ``(H, W, 3)`` uint8 frame (``color`` order), resized and padded, into ``out``
        ``(3, h, w)`` float32 RGB 0..255."""
        import cv2

        image = frame
        if (place.height, place.width) != frame.shape[:2]:
            area = place.height * place.width < frame.shape[0] * frame.shape[1]
            image = cv2.resize(frame, (place.width, place.height),
                               interpolation=cv2.INTER_AREA if area else cv2.INTER_LINEAR)
        channels = (2, 1, 0) if color == "bgr" else (0, 1, 2)
        if (place.height, place.width) != tuple(shape):
            for c, value in enumerate(self.pad):
                out[c].fill(value)
        region = out[:, place.top:place.top + place.height, place.left:place.left + place.width]
        for c, source in enumerate(channels):
            region[c] = image[:, :, source]

    def to_batch(self, frames: Sequence[np.ndarray], *, size: tuple[int, int] | None = None,
                 resize: str = "letterbox", color: str = "rgb") -> list[tuple[list[int], np.ndarray, list[Placement]]]:
        """Frames -> ``[(frame indices, (B, 3, h, w) float32 batch, placements)]``, one batch
        per distinct input shape, in the order the shapes first appear."""
        groups: dict[tuple[int, int], list[tuple[int, Placement]]] = {}
        for i, frame in enumerate(frames):
            shape, place = self.place(*frame.shape[:2], size=size, resize=resize)
            groups.setdefault(shape, []).append((i, place))
        batches = []
        for shape, members in groups.items():
            batch = np.empty((len(members), 3, *shape), dtype=np.float32)
            for row, (i, place) in enumerate(members):
                self.write(frames[i], shape, place, batch[row], color=color)
            batches.append(([i for i, _ in members], batch, [p for _, p in members]))
        return batches

    def to_inputs(self, frames: Sequence[np.ndarray], *, size: tuple[int, int] | None = None,
                  resize: str = "letterbox") -> list[np.ndarray]:
        """RGB frames -> one ``(1, 3, h, w)`` input each, in order (parity, calibration and
        the INT8 gate feed images one at a time)."""
        return [self.to_batch([frame], size=size, resize=resize)[0][1] for frame in frames]


@dataclass(frozen=True)
class OutputSpec:
    kind: str                      # "labels" (argmax in the graph) or "logits"
    names: tuple[str, ...]
    label_dtype: str = "uint8"

    def to_json(self) -> dict:
        return {"kind": self.kind, "names": list(self.names), "label_dtype": self.label_dtype}


@dataclass(frozen=True)
class Artifact:
    """One model file of the bundle: its path, hash and size, what it computes in, and the
    fields its format adds (engine facts, INT8 calibration and fallback)."""

    format: str
    path: str
    sha256: str
    bytes: int
    precision: str
    fields: dict = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)


@dataclass(frozen=True)
class Parent:
    version: str
    manifest_sha256: str


_SECTIONS = ("artifacts", "skipped", "files", "parity")


class Manifest:
    """A bundle's manifest. Built from its JSON (:meth:`from_json`, which checks it) or by
    the exporter (:meth:`new`); the writers complete it through its methods."""

    def __init__(self, data: dict, where: str = "manifest"):
        self._data, self.where = data, where
        self._check()

    # -- reading ---------------------------------------------------------------------------
    @classmethod
    def from_json(cls, data, where: str = "manifest") -> "Manifest":
        return cls(copy.deepcopy(data), where)

    def _check(self) -> None:
        data, where = self._data, self.where
        if not isinstance(data, dict):
            raise ReminderError(f"{where} must hold a JSON object, not {type(data).__name__}")
        if data.get("format") != BUNDLE_FORMAT:
            raise ReminderError(f"{where} has format {data.get('format')!r}; this reminder reads {BUNDLE_FORMAT}")
        for key, kind in (("name", str), ("version", str), ("classes", list), ("input", dict), ("outputs", dict)):
            if key not in data:
                raise ReminderError(f"{where} has no {key!r}")
            if not isinstance(data[key], kind):
                raise ReminderError(f"{where}: {key!r} must be a {'list' if kind is list else kind.__name__}")
        check_name(data["name"], f"{where}: name")
        check_name(data["version"], f"{where}: version")
        for entry in data["classes"]:
            if not isinstance(entry, dict) or not {"id", "name", "color"} <= set(entry):
                raise ReminderError(f"{where}: every class needs id, name and color")
        self.classes = ClassTable.from_manifest(data["classes"], where=where)
        self.input = InputSpec.from_json(data["input"], where)
        outputs = data["outputs"]
        if outputs.get("kind") not in ("labels", "logits"):
            raise ReminderError(f"{where}: outputs.kind must be 'labels' or 'logits', got {outputs.get('kind')!r}")
        names = outputs.get("names") or []
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ReminderError(f"{where}: outputs.names must be a list of names")
        self.outputs = OutputSpec(outputs["kind"], tuple(names), str(outputs.get("label_dtype", "uint8")))
        step = data.get("step")
        if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step < 0):
            raise ReminderError(f"{where}: 'step' must be a whole number from 0, got {step!r}")
        for key in ("model", "metrics", "quality", "tools"):
            if not isinstance(data.get(key) or {}, dict):
                raise ReminderError(f"{where}: {key!r} must be an object")
        for key in _SECTIONS:
            data.setdefault(key, {})
            if not isinstance(data[key], dict):
                raise ReminderError(f"{where}: {key!r} must be an object")
        for name, entry in self.artifact_entries().items():
            if not isinstance(entry, dict) or "path" not in entry:
                raise ReminderError(f"{where}: artifact {name!r} has no 'path'")
        for name, entry in data["files"].items():
            if not isinstance(entry, dict):
                raise ReminderError(f"{where}: file {name!r} has no 'sha256' and 'bytes'")
        for name, entry in self.listed_files().items():
            check_file_name(name, f"{where}: file")
            for key, kind in (("sha256", str), ("bytes", int)):
                if not isinstance(entry.get(key), kind) or (key == "bytes" and entry[key] < 0):
                    raise ReminderError(f"{where}: {name} has no {key!r}")
        parent = data.get("parent")
        if parent is not None and not (isinstance(parent, dict) and isinstance(parent.get("version"), str)
                                       and isinstance(parent.get("manifest_sha256"), str)):
            raise ReminderError(f"{where}: 'parent' must be null or {{version, manifest_sha256}}")

    name = property(lambda self: self._data["name"])
    version = property(lambda self: self._data["version"])
    step = property(lambda self: self._data.get("step"))
    created = property(lambda self: self._data.get("created"))

    @property
    def parent(self) -> Parent | None:
        parent = self._data.get("parent")
        return Parent(parent["version"], parent["manifest_sha256"]) if parent else None

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.classes.names

    @property
    def formats(self) -> list[str]:
        """The formats of the artifacts, in the order they were written."""
        return list(self._data["artifacts"])

    def artifact_entries(self) -> dict[str, dict]:
        return self._data["artifacts"]

    def artifact(self, fmt: str) -> Artifact:
        entry = self._data["artifacts"].get(fmt)
        if entry is None:
            raise ReminderError(f"the bundle has no {fmt} artifact (it has: {', '.join(self.formats) or 'none'})")
        rest = {k: v for k, v in entry.items() if k not in ("path", "sha256", "bytes", "precision")}
        precision = entry.get("precision", "int8" if fmt == "onnx-int8" else "fp32")
        return Artifact(fmt, entry["path"], entry["sha256"], entry["bytes"], precision, copy.deepcopy(rest))

    def has_file(self, name: str) -> bool:
        return name in self._data["files"]

    def listed_files(self) -> dict[str, dict]:
        """Every file the manifest hashes: relative path -> {sha256, bytes}."""
        files = {entry["path"]: entry for entry in self._data["artifacts"].values()}
        files.update(self._data["files"])
        return files

    def _section(self, key: str) -> dict:
        return copy.deepcopy(self._data.get(key) or {})

    skipped = property(lambda self: self._section("skipped"))
    parity = property(lambda self: self._section("parity"))
    model = property(lambda self: self._section("model"))
    metrics = property(lambda self: self._section("metrics"))
    quality = property(lambda self: self._section("quality"))
    tools = property(lambda self: self._section("tools"))
    int8_refused = property(lambda self: self._data.get("int8_refused"))
    update = property(lambda self: self._data.get("update"))

    @property
    def has_checkpoint(self) -> bool:
        return self.has_file("checkpoint.safetensors")

    def to_json(self) -> dict:
        return copy.deepcopy(self._data)

    # -- writing ---------------------------------------------------------------------------
    @classmethod
    def new(cls, *, name: str, version: str, step: int, created: str, classes: ClassTable, input: InputSpec,
            outputs: OutputSpec, model: dict, metrics: dict, quality: dict, tools: dict,
            parent: Parent | None = None, update: dict | None = None) -> "Manifest":
        data = {"format": BUNDLE_FORMAT, "name": name, "version": version, "step": step, "created": created,
                "parent": None if parent is None else vars(parent).copy(), "classes": classes.to_manifest(),
                "input": input.to_json(), "outputs": outputs.to_json(), "artifacts": {}, "skipped": {},
                "files": {}, "parity": {}, "model": model, "metrics": metrics, "quality": quality, "tools": tools}
        if update is not None:  # the on-device update's report
            data["update"] = update
        return cls(data, f"manifest of {name} {version}")

    def derive(self, *, version: str, created: str, classes: ClassTable, parent: Parent, model: dict,
               metrics: dict, quality: dict, tools: dict, update: dict | None = None) -> "Manifest":
        """A child's manifest: this one's input and outputs, the new classes and lineage, and
        no artifacts, files or parity yet."""
        return Manifest.new(name=self.name, version=version, step=(self.step or 0) + 1, created=created,
                            classes=classes, input=self.input, outputs=self.outputs, model=model, metrics=metrics,
                            quality=quality, tools=tools, parent=parent, update=update)

    def set_input(self, spec: InputSpec) -> None:
        self._data["input"] = spec.to_json()
        self.input = spec

    def with_input(self, **changes) -> None:
        self.set_input(replace(self.input, **changes))

    def set_parent(self, parent: Parent | None) -> None:
        self._data["parent"] = None if parent is None else vars(parent).copy()

    def set_model(self, model: dict) -> None:
        self._data["model"] = copy.deepcopy(model)

    def add_artifact(self, fmt: str, entry: dict) -> None:
        self._data["artifacts"][fmt] = dict(entry)

    def skip(self, fmt: str, reason: str) -> None:
        self._data["skipped"][fmt] = reason

    def add_file(self, name: str, entry: dict) -> None:
        self._data["files"][check_file_name(name, "bundle file")] = dict(entry)

    def record_parity(self, fmt: str, result: dict) -> None:
        self._data["parity"][fmt] = dict(result)

    def refuse_int8(self, reason: str, result: dict) -> None:
        """An INT8 model that missed its gate: skipped, with the gate's numbers."""
        self.skip("onnx-int8", reason)
        self._data["int8_refused"] = dict(result)
