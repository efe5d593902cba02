"""Step checkpoints: safetensors weights plus a JSON description, written atomically.

``RUN/step<t>/model.safetensors`` holds the weights; ``meta.json`` what rebuilds the
model (backbone, classes per step) and where it comes from (dataset, setting, order).
A step is complete only when its ``metrics.json`` exists: it is written last, so an
interrupted step is redone from its start and a half-written file is never loaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from reminder.errors import ReminderError
from reminder.io import atomic_write, atomic_write_text, read_json, sha256_file
from reminder.models import IncrementalSegmenter, segmenter_from_config

CHECKPOINT_FORMAT = 1


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(state, str(tmp)))


def load_tensors(path: Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file on ``device``. Read on the CPU, then moved:
    safetensors' own ``device="cuda"`` means ``cuda:0`` on every DDP rank."""
    try:
        tensors = load_file(str(path), device="cpu")
    except Exception as error:  # safetensors raises its own error types
        raise ReminderError(f"cannot read {path}: {error}") from None
    device = torch.device(device)
    return tensors if device.type == "cpu" else {name: t.to(device) for name, t in tensors.items()}


def save_model(step_dir: Path, model: IncrementalSegmenter, meta: dict) -> None:
    step_dir.mkdir(parents=True, exist_ok=True)
    model = getattr(model, "module", model)
    save_tensors(step_dir / "model.safetensors", model.state_dict())
    atomic_write_text(step_dir / "meta.json",
                      json.dumps({"format": CHECKPOINT_FORMAT, **model.config(), **meta}, indent=2))


STEP_FILES = ("model.safetensors", "prototypes.safetensors", "fisher.safetensors")


def step_file_hashes(step_dir: Path) -> dict[str, str]:
    """sha256 of the step's weight files, recorded in its metrics.json when it completes."""
    return {name: sha256_file(step_dir / name) for name in STEP_FILES if (step_dir / name).is_file()}


def verify_step_files(step_dir: Path) -> None:
    """Check a complete step's weight files against the sha256 its metrics.json recorded
    (a bit flip on disk must not be trained on silently)."""
    metrics_path = step_dir / "metrics.json"
    if not metrics_path.is_file():
        return
    for name, digest in read_json(metrics_path).get("sha256", {}).items():
        path = step_dir / name
        if not path.is_file() or sha256_file(path) != digest:
            raise ReminderError(f"{path} does not match the sha256 recorded in {metrics_path} when the step "
                                f"completed (corrupted or replaced); restore it, or delete {step_dir} to train the "
                                f"step again")


def read_meta(step_dir: Path) -> dict:
    path = step_dir / "meta.json"
    if not path.is_file():
        raise ReminderError(f"{step_dir} is not a step checkpoint: meta.json is missing")
    meta = read_json(path)
    if meta.get("format", 1) > CHECKPOINT_FORMAT:
        raise ReminderError(f"checkpoint {step_dir} has format {meta['format']}, newer than this reminder "
                            f"understands ({CHECKPOINT_FORMAT})")
    return meta


def load_model(step_dir: Path, device: str | torch.device = "cpu") -> tuple[IncrementalSegmenter, dict]:
    """Rebuild and load the model saved in ``step_dir`` (weights checked against the meta,
    and, for a complete step, every weight file against its recorded sha256)."""
    meta = read_meta(step_dir)
    verify_step_files(step_dir)
    model = segmenter_from_config(meta)
    state = load_tensors(step_dir / "model.safetensors")
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ReminderError(f"weights in {step_dir / 'model.safetensors'} do not match its meta.json: "
                            f"{str(error).splitlines()[0]}") from None
    return model.to(device), meta


def completed_steps(run: Path) -> list[int]:
    """Steps 0, 1, ... of a run folder whose metrics.json exists (a step is complete then)."""
    steps = []
    while (Path(run) / f"step{len(steps)}" / "metrics.json").is_file():
        steps.append(len(steps))
    return steps


def check_compatible(meta: dict, expected: dict, source: Path) -> None:
    """Refuse a checkpoint whose backbone, dataset or classes differ; name the field."""
    for key, value in expected.items():
        if meta.get(key) != value:
            raise ReminderError(f"checkpoint {source} has {key}={meta.get(key)!r}, but this run needs {value!r}")
