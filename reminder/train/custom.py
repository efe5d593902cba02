"""Training on your own data: step 0 from a dataset YAML, later steps added one at a time.

``fit(data="day1.yaml", out="runs/wh")`` trains step 0 on the classes the YAML names;
``fit(data="day2.yaml", resume_from="runs/wh")`` adds the classes day2.yaml adds as the
run's next step (REMINDER by default, the previous step as the teacher). Running either
again resumes what was interrupted, or says that the step exists.

Settings scale with the data and the backbone (:func:`custom_preset`); every value can be
overridden. docs/own-data.md gives the recipe and what to turn when a class is not learnt
or an old one is forgotten.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Callable

from reminder.errors import ReminderError
from reminder.train.checkpoint import completed_steps
from reminder.train.config import (DKD_METHODS, RESUMABLE_FIELDS, TrainConfig, _check_values, check_resume,
                                   dkd_schedule, load_config, resolve_config)

DEFAULT_BACKBONE = "mobilenet_v3_large"
# per backbone: crop, batch, step-0 learning rate, and iterations of step 0 (later steps: half)
BACKBONE_SETTINGS = {
    "tiny": {"crop_size": 128, "batch_size": 16, "lr": 0.05, "iterations": 600},
    "mobilenet_v3_large": {"crop_size": 384, "batch_size": 8, "lr": 0.01, "iterations": 1500},
    "resnet50": {"crop_size": 512, "batch_size": 8, "lr": 0.01, "iterations": 1500},
    "resnet101": {"crop_size": 512, "batch_size": 8, "lr": 0.01, "iterations": 1500},
}
# the head and crops that keep thin and small objects, and rare classes weighted up (the
# measurements behind the choice: docs/own-data.md, "Thin and small classes")
OWN_DATA_RECIPE = {"head": "deeplabv3plus", "output_stride": 16, "crop_mode": "native", "crop_scale": (1.0, 1.5),
                   "class_weights": "sqrt"}
# what an increment may not change: the run fixes the model and where it lives
RUN_FIXED = ("backbone", "weights_backbone", "head", "output_stride", "dataset", "root", "setting", "out", "data",
             "increments", "format")


def custom_preset(num_images: int, backbone: str, *, min_side: int | None = None, next_step: bool = False) -> dict:
    """Schedule and sizes for ``num_images`` training images of a step.

    Steps are counted in iterations, not epochs, so a small dataset gets more epochs: step 0
    runs about ``iterations`` SGD steps (later steps half as many, at a tenth of the learning
    rate, as the paper's schedule), between 3 and 300 epochs. The crop is the backbone's,
    capped by the images' shorter side, taken at native scale or larger (never shrunk), and
    step 0 gets DeepLabV3+ and square-root class weights (:data:`OWN_DATA_RECIPE`).
    Validation runs about 10 times per step. Under 200 images, the loader reads in the
    training process (workers 0).
    """
    if backbone not in BACKBONE_SETTINGS:
        raise ReminderError(f"unknown backbone {backbone!r}; expected one of {', '.join(BACKBONE_SETTINGS)}")
    settings = BACKBONE_SETTINGS[backbone]
    crop = settings["crop_size"] if not min_side else max(32, min(settings["crop_size"], min_side // 16 * 16))
    batch = min(settings["batch_size"], max(2, num_images))
    per_epoch = max(1, num_images // batch)
    iterations = settings["iterations"] // (2 if next_step else 1)
    epochs = max(3, min(300, math.ceil(iterations / per_epoch)))
    # a small step's epochs are a few batches: loader processes restarted every epoch would
    # cost more than they save, so images are read in the training process
    preset = {"crop_size": crop, "batch_size": batch, "eval_every": max(1, epochs // 10),
              "workers": 0 if num_images < 200 else 2}
    if next_step:
        return preset | {"epochs_next": epochs, "lr_next": settings["lr"] / 10}
    weights = None if backbone == "tiny" else "imagenet"
    return preset | OWN_DATA_RECIPE | {"backbone": backbone, "weights_backbone": weights, "epochs": epochs,
                                       "lr": settings["lr"], "epochs_next": max(3, epochs // 2),
                                       "lr_next": settings["lr"] / 10}


def _step_size(data_paths: list[str], step: int, cache_dir: Path) -> tuple[int, int | None]:
    """(training images of ``step``, shorter side of the smallest of its first 16 images)."""
    from reminder.data.increments import load_increments
    from reminder.data.samples import open_image

    data = load_increments(data_paths, cache_dir=cache_dir)
    ids = data.train_ids(step)
    if not ids:
        names = ", ".join(data.spec.class_names[c] for c in data.scenario.steps[step])
        raise ReminderError(f"{data_paths[step]}: no training image holds {names}; label them in the train masks")
    by_id = {s.id: s for s in data.train_sets[step]}
    sides = []
    for image_id in ids[:16]:
        with open_image(by_id[image_id].image) as image:
            sides.append(min(image.size))
    return len(ids), min(sides)


def resolve_custom_config(data: str | Path, out: str | Path, *, method: str = "reminder", **overrides) -> TrainConfig:
    """Step 0's configuration: the preset for the data and backbone, then ``overrides``.

    On an existing run of the same YAML, the options not given keep the run's values (so
    ``train`` with the same YAML resumes), and the later steps are kept."""
    path, out = str(Path(data).resolve()), Path(out)
    given = {k: v for k, v in overrides.items() if v is not None}
    # a start that failed before its first step (no weights offline, say) leaves config.json:
    # that is no run to resume, and the options given now start it afresh
    if (out / "config.json").is_file() and completed_steps(out):
        saved = load_config(out)
        if saved.dataset == "custom" and saved.data[:1] == (path,):
            unknown = sorted(set(given) - {f.name for f in dataclasses.fields(TrainConfig)})
            if unknown:
                raise ReminderError(f"unknown training option {unknown[0]!r}")
            _check_values(given)
            return dataclasses.replace(saved, **given)
    backbone = given.get("backbone", DEFAULT_BACKBONE)
    count, side = _step_size([path], 0, out / "cache")
    preset = custom_preset(count, backbone, min_side=side)
    if method in DKD_METHODS:
        preset = dkd_schedule(preset)
    return resolve_config(dataset="custom", root=Path(path).parent, setting="custom", method=method, out=out,
                          data=(path,), **(preset | given))


def increment_config(run: str | Path, data: str | Path, *, method: str | None = None,
                     log: Callable[[str], None] = print, **options) -> TrainConfig | None:
    """The run's configuration with ``data`` as its next step (None: that step exists already)."""
    run, path = Path(run), str(Path(data).resolve())
    saved = load_config(run)
    if saved.dataset != "custom":
        raise ReminderError(f"{run} is a benchmark run ({saved.dataset} {saved.setting}); steps are added to runs "
                            f"trained on your own data (reminder train --data DATA.yaml)")
    given = {k: v for k, v in options.items() if v is not None}
    fixed = [k for k in RUN_FIXED if k in given]
    if fixed:
        raise ReminderError(f"{fixed[0]} is fixed by {run} ({getattr(saved, fixed[0], None)!r}); an increment "
                            f"cannot change it")
    given = {{"epochs": "epochs_next", "lr": "lr_next"}.get(k, k): v for k, v in given.items()}
    done = completed_steps(run)
    if path in saved.data and saved.data.index(path) in done:
        step = saved.data.index(path)
        recorded = saved.increments[step - 1] if 0 < step <= len(saved.increments) else {}
        trained = {**{k: getattr(saved, k) for k in given if hasattr(saved, k)}, **recorded,
                   "method": recorded.get("method", saved.method)}
        asked = {**given, **({"method": method} if method else {})}
        differ = sorted(k for k, v in asked.items() if k not in RESUMABLE_FIELDS and k in trained and trained[k] != v)
        if differ:  # a new option would be silently ignored: say so
            raise ReminderError(f"step {step} of {run} ({path}) is complete with "
                                + ", ".join(f"{k}={trained[k]!r}" for k in differ) + "; it is not trained again "
                                "with " + ", ".join(f"{k}={asked[k]!r}" for k in differ)
                                + (": add `redo` to train it again with them (the old step stays until the new one "
                                   "completes)" if step == done[-1] else ": to train it with other options, start a "
                                   "new run folder"))
        log(f"step {step} of {run} ({path}) already exists; nothing to do")
        return None
    if path == saved.data[0]:
        raise ReminderError(f"{path} is step 0 of {run}; resume it with reminder train --data {path} --out {run}")
    if path in saved.data:  # the last step, interrupted: resumed, with the options given now
        keep = len(saved.data) - 1
    else:
        if len(done) < len(saved.data):
            raise ReminderError(f"step {len(done)} of {run} ({saved.data[len(done)]}) is not complete; finish it "
                                f"first: reminder increment {run} --data {saved.data[len(done)]}")
        keep = len(saved.data)
    data_paths = list(saved.data[:keep]) + [path]
    count, side = _step_size(data_paths, keep, run / "cache")
    base = {k: v for k, v in given.items() if k in RESUMABLE_FIELDS}
    step_options = custom_preset(count, saved.backbone, min_side=side, next_step=True)
    if (method or "reminder") in DKD_METHODS:
        step_options = dkd_schedule(step_options)
    step_options |= {"method": method or "reminder"} | {k: v for k, v in given.items() if k not in RESUMABLE_FIELDS}
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(step_options) - known)
    if unknown:
        raise ReminderError(f"unknown training option {unknown[0]!r}")
    _check_values(step_options)
    from reminder.train.methods import METHOD_NAMES

    if step_options["method"] not in METHOD_NAMES or step_options["method"] == "joint":
        raise ReminderError(f"unknown method {step_options['method']!r} for a step; expected one of "
                            f"{', '.join(m for m in METHOD_NAMES if m != 'joint')}")
    config = dataclasses.replace(saved, **base, data=tuple(data_paths),
                                 increments=tuple(saved.increments[:keep - 1]) + (step_options,))
    check_resume(saved, config)
    return config


def fit(data: str | Path, out: str | Path | None = None, *, resume_from: str | Path | None = None,
        method: str | None = None, progress: bool = True, log: Callable[[str], None] = print,
        on_step: Callable[[Path, int], object] | None = None, **options) -> dict:
    """Train on your own data and return the run's ``results.json``.

    ``fit(data="day1.yaml", out="runs/wh")``: step 0 on the YAML's classes.
    ``fit(data="day2.yaml", resume_from="runs/wh")``: the classes day2.yaml adds, as the next
    step. ``options`` are :class:`TrainConfig` fields (``epochs``, ``lr``, ``batch_size``,
    ``crop_size``, ``max_iterations``, ``device``, ``amp``, ...); for an increment,
    ``epochs`` and ``lr`` are its own. ``on_step``: e.g.
    ``reminder.export.each_step_exporter("onnx")``.
    """
    from reminder.train.results import read_results
    from reminder.train.run import train_scenario

    if resume_from is not None:
        if out is not None and Path(out).resolve() != Path(resume_from).resolve():
            raise ReminderError("give out= for a new run, or resume_from= to add a step to a run, not both")
        config = increment_config(resume_from, data, method=method, log=log, **options)
        if config is None:
            return read_results(Path(resume_from))
    elif out is None:
        raise ReminderError("fit needs out= (a new run folder) or resume_from= (a run to add a step to)")
    else:
        config = resolve_custom_config(data, out, method=method or "reminder", **options)
    return train_scenario(config, progress=progress, log=log, on_step=on_step)
