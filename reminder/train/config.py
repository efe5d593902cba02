"""Training configuration: one frozen dataclass, presets for the paper's settings as data.

``resolve_config(dataset=..., setting=..., method=..., **overrides)`` starts from the
defaults, applies the dataset/setting/method presets (DESIGN.md section 4), then the
user's overrides; the result is saved as ``RUN/config.json``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from reminder.errors import ReminderError
from reminder.io import read_json

CONFIG_FORMAT = 1


@dataclass(frozen=True)
class TrainConfig:
    dataset: str
    root: str
    setting: str
    method: str
    out: str
    mode: str = "overlap"
    order: tuple[int, ...] | None = None
    test_protocol: str = "reminder"
    other_as_background: bool = True
    # model
    backbone: str = "resnet101"
    weights_backbone: str | None = None
    # optimisation: step 0 and the later steps
    epochs: int = 30
    lr: float = 0.01
    epochs_next: int = 30
    lr_next: float = 0.001
    batch_size: int = 24
    crop_size: int = 512
    crop_scale: tuple[float, float] = (0.5, 2.0)
    eval_size: int | None = 512  # None: full images
    eval_batch_size: int = 8
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_power: float = 0.9
    max_iterations: int | None = None  # cap per step (quick runs, tests)
    # loss weights and options
    pod_factor: float = 0.01
    pod_logits_factor: float = 0.0005
    pod_scales: tuple[int, ...] = (1, 2, 4)
    pseudo_bins: int = 100
    pseudo_floor: float = 0.001
    csw_weight: float = 0.5
    csw_temperature: float = 3.0
    csw_delta: float = 0.0
    mib_kd_weight: float = 10.0
    ilt_kd_weight: float = 100.0
    ilt_feature_weight: float = 100.0
    lwf_weight: float = 10.0
    ewc_weight: float = 500.0
    ablation_kd_weight: float = 0.5
    # machinery
    seed: int = 0
    device: str = "auto"
    workers: int = 2
    amp: str = "none"  # none | bf16 | fp16
    channels_last: bool = False
    compile: bool = False
    freeze_bn: bool = False
    sync_bn: bool = False
    from_step0: str | None = None
    cache_dir: str | None = None
    export_each_step: str | None = None  # e.g. "onnx,torchscript": a bundle per step in RUN/bundles
    format: int = field(default=CONFIG_FORMAT)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "TrainConfig":
        if data.get("format", 1) > CONFIG_FORMAT:
            raise ReminderError(
                f"run folder config has format {data['format']}, newer than this reminder "
                f"understands ({CONFIG_FORMAT}); upgrade reminder")
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for name in ("order", "crop_scale", "pod_scales"):
            if values.get(name) is not None:
                values[name] = tuple(values[name])
        return cls(**values)


# The paper's settings (DESIGN.md section 4). Keys: dataset family, then method.
DATASET_PRESETS: dict[str, dict] = {
    "voc": {"epochs": 30, "lr": 0.01, "epochs_next": 30, "lr_next": 0.001, "batch_size": 24,
            "crop_size": 512, "eval_size": 512, "pod_factor": 0.01, "pod_logits_factor": 0.0005,
            "csw_delta": 0.0},
    "ade": {"epochs": 60, "lr": 0.01, "epochs_next": 70, "lr_next": 0.001, "batch_size": 24,
            "crop_size": 512, "eval_size": 512, "pod_factor": 0.001, "pod_logits_factor": 0.00001,
            "csw_delta": 1.0},
    # the embedded default: small images, a CPU model, minutes per step
    "synthvoc": {"backbone": "tiny", "epochs": 12, "lr": 0.05, "epochs_next": 6, "lr_next": 0.005,
                 "batch_size": 16, "crop_size": 128, "crop_scale": (0.5, 1.5), "eval_size": None,
                 "eval_batch_size": 16, "pod_factor": 0.01, "pod_logits_factor": 0.0005, "csw_delta": 0.0},
}
METHOD_PRESETS: dict[tuple[str, str], dict] = {
    ("voc", "reminder"): {"batch_size": 16},  # REMINDER's VOC scripts
}


def resolve_config(*, dataset: str, root: str | Path, setting: str, method: str, out: str | Path,
                   **overrides) -> TrainConfig:
    """Defaults <- dataset preset <- (dataset, method) preset <- overrides (None = keep)."""
    from reminder.train.methods import METHOD_NAMES

    if method not in METHOD_NAMES:
        raise ReminderError(f"unknown method {method!r}; expected one of {', '.join(METHOD_NAMES)}")
    family = "voc" if dataset == "voc" else dataset
    if family not in DATASET_PRESETS:
        raise ReminderError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASET_PRESETS)}")
    values: dict = {}
    values.update(DATASET_PRESETS[family])
    values.update(METHOD_PRESETS.get((family, method), {}))
    if method == "joint":
        setting = "offline"
    values.update({k: v for k, v in overrides.items() if v is not None})
    if values.get("eval_size") == "full":
        values["eval_size"] = None
    unknown = set(values) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise ReminderError(f"unknown training option {sorted(unknown)[0]!r}")
    return TrainConfig(dataset=dataset, root=str(root), setting=setting, method=method, out=str(out), **values)


# Fields that may change between a run and its resumption without changing its results.
RESUMABLE_FIELDS = {"out", "root", "workers", "device", "cache_dir", "eval_batch_size", "export_each_step"}


def check_resume(saved: TrainConfig, current: TrainConfig) -> None:
    """Refuse to resume a run folder with a configuration that changes the results."""
    for f in dataclasses.fields(TrainConfig):
        if f.name in RESUMABLE_FIELDS:
            continue
        old, new = getattr(saved, f.name), getattr(current, f.name)
        if old != new:
            raise ReminderError(
                f"run folder {current.out} was trained with {f.name}={old!r}, not {new!r}; "
                f"use another --out or the same options")


def load_config(run: str | Path) -> TrainConfig:
    path = Path(run) / "config.json"
    if not path.is_file():
        raise ReminderError(f"{run} is not a run folder: config.json is missing")
    return TrainConfig.from_json(read_json(path))
