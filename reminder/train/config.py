"""Training configuration: one frozen dataclass, presets for the paper's settings as data.

``resolve_config(dataset=..., setting=..., method=..., **overrides)`` starts from the
defaults, applies the dataset/setting/method presets (docs/training.md, "Presets"), then the
user's overrides; the result is saved as ``RUN/config.json``.
"""

from __future__ import annotations

import dataclasses
import re
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
    head: str = "deeplabv3"  # deeplabv3 | deeplabv3plus (a decoder on stride-4 features)
    output_stride: int = 16  # 16 | 8
    # optimisation: step 0 and the later steps
    epochs: int = 30
    lr: float = 0.01
    epochs_next: int = 30
    lr_next: float = 0.001
    batch_size: int = 24
    crop_size: int = 512
    crop_scale: tuple[float, float] = (0.5, 2.0)
    crop_mode: str = "resized"  # resized: the paper's random resized crop; native: rescale by crop_scale, then crop
    class_weights: str = "none"  # none | sqrt | inverse: CE weights from the step's pixel counts (train/balance.py)
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
    pseudo_thresholds: str = "reference"  # "reference": the reference code's scale and loop; "median": true median
    validation: float = 0.0  # > 0: evaluate on that share of the training images, carved out (not the test set)
    holdout: float = 0.0  # an own-data step: that share of its training images is kept out (reminder compare)
    csw_weight: float = 0.5
    csw_temperature: float = 3.0
    csw_delta: float = 0.0
    mib_kd_weight: float = 10.0
    ilt_kd_weight: float = 100.0
    ilt_feature_weight: float = 100.0
    lwf_weight: float = 10.0
    ewc_weight: float = 500.0
    ablation_kd_weight: float = 0.5
    # DKD (docs/training.md, "DKD"): the loss weights and mBCE's weight of positives
    dkd_kd_weight: float = 5.0
    dkd_regulator_weight: float = 5.0  # each of the positive and negative terms
    dkd_ac_weight: float = 1.0
    bce_pos_weight: float = 1.0
    bce_pos_weight_step0: float = 1.0
    head_lr_factor: float = 1.0  # the ASPP, decoder and classifier learn at lr x this
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
    # watching: RUN/step<t>/history.csv always; validation mIoU every eval_every epochs (0: at the end only)
    eval_every: int = 0
    tensorboard: bool = False
    wandb: bool = False
    # your own data (dataset "custom"): one dataset YAML per step, and each later step's options
    data: tuple[str, ...] = ()
    increments: tuple[dict, ...] = ()
    format: int = field(default=CONFIG_FORMAT)

    def for_step(self, step: int) -> "TrainConfig":
        """The options step ``step`` trains with: an increment's own method and options over the run's."""
        if step == 0 or step > len(self.increments):
            return self
        return dataclasses.replace(self, **self.increments[step - 1])

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
        for name in ("order", "crop_scale", "pod_scales", "data", "increments"):
            if values.get(name) is not None:
                values[name] = tuple(values[name])
        values["increments"] = tuple({k: tuple(v) if isinstance(v, list) else v for k, v in inc.items()}
                                     for inc in values.get("increments", ()))
        return cls(**values)


# The paper's settings (docs/training.md, "Presets"). Keys: dataset family, then (family, setting).
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
    # your own data: the VOC loss weights; sizes and schedule scale with the data (train/custom.py)
    "custom": {"pod_factor": 0.01, "pod_logits_factor": 0.0005, "csw_delta": 0.0, "eval_size": None},
}
# The reference repository's launch scripts pass --batch_size per GPU; the global batch is
# NB_GPU x BATCH_SIZE. The dataset presets above are its PLOP and MiB scripts' (2 GPUs x 12 =
# 24 on VOC and ADE); REMINDER's own scripts (the method and its Table 5 ablations) differ:
REMINDER_METHODS = ("reminder", "reminder-kd", "reminder-unkd")
REMINDER_PRESETS: dict[tuple[str, str], dict] = {
    ("voc", "15-1"): {"batch_size": 16},   # reminder_15-1.sh: 1 GPU x 16 (task "15-5s")
    ("voc", "15-5"): {"batch_size": 32},   # reminder_15-5.sh: 2 GPUs x 16
    ("voc", "19-1"): {"batch_size": 32},   # reminder_19-1.sh: 2 GPUs x 16
    # 10-1 has no REMINDER script: PLOP's plop_10-1.sh, 2 GPUs x 12 = 24 (the dataset preset)
    ("ade", "*"): {"batch_size": 10},      # every reminder ADE script: 1 GPU x 10
    ("ade", "100-50"): {"batch_size": 10, "lr_next": 0.0008},  # reminder_100-50.sh: step 1 at LR 0.0008
}

# DKD's launch scripts (docs/training.md, "DKD"): SGD at lr on the backbone and 10x on the
# rest, batch norm frozen after step 0, mBCE's positives weighted 2 at VOC's step 0 and 35 on ADE.
DKD_METHODS = ("dkd", "dkd+csw")
DKD_PRESETS: dict[str, dict] = {
    "voc": {"batch_size": 32, "epochs": 60, "lr": 0.001, "epochs_next": 60, "lr_next": 0.0001,
            "head_lr_factor": 10.0, "bce_pos_weight_step0": 2.0},
    "ade": {"batch_size": 24, "epochs": 100, "lr": 0.0025, "epochs_next": 100, "lr_next": 0.00025,
            "head_lr_factor": 10.0, "bce_pos_weight_step0": 35.0, "bce_pos_weight": 35.0},
    # the small presets: their schedules with DKD's learning rates relative to PLOP's (dkd_schedule)
    "synthvoc": {"bce_pos_weight_step0": 2.0},
    "custom": {"bce_pos_weight_step0": 2.0},
}


def dkd_schedule(preset: dict) -> dict:
    """A preset's learning rates as DKD's scripts set them against PLOP's on VOC: the
    backbone at a tenth, the rest at the same rate (``head_lr_factor`` 10). DKD's loss sums
    a binary cross-entropy per class, so it needs the lower rate (at PLOP's it diverges)."""
    scaled = {k: preset[k] / 10 for k in ("lr", "lr_next") if k in preset}
    return preset | scaled | {"head_lr_factor": 10.0}


def _canonical_setting(setting: str) -> str:
    """PLOP's ``N-Ms`` (N classes, then M single-class steps) is ``N-1``."""
    match = re.fullmatch(r"(\d+)-(\d+)s", setting)
    return f"{match.group(1)}-1" if match else setting


def resolve_config(*, dataset: str, root: str | Path, setting: str, method: str, out: str | Path,
                   **overrides) -> TrainConfig:
    """Defaults <- dataset preset <- REMINDER's (dataset, setting) preset <- overrides (None = keep)."""
    from reminder.train.methods import METHOD_NAMES

    if method not in METHOD_NAMES:
        raise ReminderError(f"unknown method {method!r}; expected one of {', '.join(METHOD_NAMES)}")
    family = "voc" if dataset == "voc" else dataset
    if family not in DATASET_PRESETS:
        raise ReminderError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASET_PRESETS)}")
    values: dict = {}
    values.update(DATASET_PRESETS[family])
    if method in REMINDER_METHODS:
        values.update(REMINDER_PRESETS.get((family, _canonical_setting(setting)),
                                           REMINDER_PRESETS.get((family, "*"), {})))
    if method in DKD_METHODS:
        values = values if family in ("voc", "ade") else dkd_schedule(values)
        values.update(DKD_PRESETS.get(family, {}))
    if method == "joint":
        setting = "offline"
    values.update({k: v for k, v in overrides.items() if v is not None})
    if values.get("eval_size") == "full":
        values["eval_size"] = None
    unknown = set(values) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise ReminderError(f"unknown training option {sorted(unknown)[0]!r}")
    _check_values(values)
    return TrainConfig(dataset=dataset, root=str(root), setting=setting, method=method, out=str(out), **values)


# lower bounds of numeric options: a value below is refused before anything runs
_MINIMUM = {"epochs": 1, "epochs_next": 1, "batch_size": 1, "crop_size": 16, "eval_size": 16, "eval_batch_size": 1,
            "max_iterations": 1, "workers": 0, "eval_every": 0}
_POSITIVE = ("lr", "lr_next", "head_lr_factor", "bce_pos_weight", "bce_pos_weight_step0")


def _check_values(values: dict) -> None:
    for name, low in _MINIMUM.items():
        value = values.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise ReminderError(f"--{name.replace('_', '-')} must be a whole number of at least {low}, got {value!r}")
    if not 0 <= values.get("holdout", 0.0) < 1:
        raise ReminderError(f"holdout must be a share of the step's training images in [0, 1), got "
                            f"{values['holdout']!r}")
    if not 0 <= values.get("validation", 0.0) < 1:
        raise ReminderError(f"validation must be a share of the training images in [0, 1), got "
                            f"{values['validation']!r}")
    if values.get("head", "deeplabv3") not in ("deeplabv3", "deeplabv3plus"):
        raise ReminderError(f"`head` must be deeplabv3 or deeplabv3plus, got {values['head']!r}")
    if values.get("output_stride", 16) not in (8, 16):
        raise ReminderError(f"`output_stride` must be 8 or 16, got {values['output_stride']!r}")
    scale = values.get("crop_scale", (0.5, 2.0))
    if not (isinstance(scale, tuple) and len(scale) == 2 and all(isinstance(v, (int, float)) for v in scale)
            and 0 < scale[0] <= scale[1] <= 4):
        raise ReminderError(f"crop_scale must be two numbers 0 < low <= high <= 4, got {scale!r}")
    if values.get("crop_mode", "resized") not in ("resized", "native"):
        raise ReminderError(f"crop_mode must be resized or native, got {values['crop_mode']!r}")
    if values.get("class_weights", "none") not in ("none", "sqrt", "inverse"):
        raise ReminderError(f"`class_weights` must be none, sqrt or inverse, got {values['class_weights']!r}")
    if values.get("pseudo_thresholds", "reference") not in ("reference", "median"):
        raise ReminderError(f"pseudo_thresholds must be 'reference' or 'median', got {values['pseudo_thresholds']!r}")
    for name in _POSITIVE:
        value = values.get(name)
        if value is not None and (not isinstance(value, (int, float)) or not value > 0):
            raise ReminderError(f"--{name.replace('_', '-')} must be positive, got {value!r}")


# Fields that may change between a run and its resumption without changing its results.
RESUMABLE_FIELDS = {"out", "root", "workers", "device", "cache_dir", "eval_batch_size", "export_each_step",
                    "tensorboard", "wandb", "data", "increments"}


def check_resume(saved: TrainConfig, current: TrainConfig) -> None:
    """Refuse to resume a run folder with a configuration that changes the results."""
    for f in dataclasses.fields(TrainConfig):
        if f.name in RESUMABLE_FIELDS:
            continue
        old, new = getattr(saved, f.name), getattr(current, f.name)
        if old != new:
            raise ReminderError(
                f"run folder {current.out} was trained with {f.name}={old!r}, not {new!r}; "
                f"use another `out` or the same options")


def load_config(run: str | Path) -> TrainConfig:
    """The configuration of the run in folder ``run``. A run is the folder it is in: its
    ``out`` is ``run`` whatever config.json says (that path was relative to where training
    started), so a moved or copied run reads and writes where it is now."""
    path = Path(run) / "config.json"
    if not path.is_file():
        raise ReminderError(f"{run} is not a run folder: config.json is missing")
    return dataclasses.replace(TrainConfig.from_json(read_json(path)), out=str(Path(run)))
