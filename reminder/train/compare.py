"""Pick the method of a run's next step on the user's own validation data (``reminder compare``).

Each candidate method trains the same increment from the same previous step, in its own
run folder ``RUN/compare/step<t>/<method>`` (the earlier steps are hard links to the run's,
checked by their sha256 when loaded). A share of the new data's training images is held out
of every candidate's training (``holdout``, by a stable hash of the ids); the candidates are
scored on it together with the earlier steps' val images. Never on the new YAML's val set:
that stays the run's test of the step. On the held-out images only the new classes need
labels: where such an image says background and a model says an old class, the pixel is not
counted (it may be that class, unlabelled). The winner's step becomes the run's next step.
Everything resumes: a complete candidate is not trained again, a scored one not scored again.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Sequence

from reminder.errors import ReminderError
from reminder.io import atomic_write_text, folder_lock, read_json

DEFAULT_METHODS = ("reminder", "dkd", "mib")


def compare_methods(run: str | Path, data: str | Path, *, methods: Sequence[str] = DEFAULT_METHODS,
                    holdout: float = 0.2, budget: float | None = None, keep: bool = True, progress: bool = True,
                    log: Callable[[str], None] = print, **options) -> dict:
    """Train ``data``'s classes as the next step of ``run`` with each of ``methods``, score them
    on validation images (never the test set), keep the best as the run's next step.

    ``budget``: seconds for the whole comparison; a candidate that would not fit (judged by
    the ones trained so far) is skipped and said so. ``options``: the increment's training
    options, as for ``reminder increment``. Returns the comparison (also written to
    ``RUN/compare/step<t>/comparison.json``)."""
    from reminder.train.custom import increment_config

    run = Path(run)
    methods = list(dict.fromkeys(methods))
    if not methods:
        raise ReminderError("`methods` is empty: name at least one method to compare")
    if not 0 < holdout < 1:
        raise ReminderError(f"`holdout` must be a share of the new training images in (0, 1), got {holdout!r}")
    if budget is not None and not budget > 0:
        raise ReminderError(f"`budget` must be a positive number of seconds, got {budget!r}")
    done = _complete_step_of(run, data)
    if done is not None:
        raise ReminderError(f"{data} is already a complete step of {run} (step {done}): compare chooses the method "
                            f"of a new step (increment with `redo` trains that one again)")
    configs = {}
    for method in methods:
        config = increment_config(run, data, method=method, log=lambda message: None, holdout=holdout, **options)
        if config is None:
            raise ReminderError(f"{data} is already a complete step of {run}: compare chooses the method of a new "
                                f"step (use `redo` with increment to train that one again)")
        configs[method] = config
    step = len(next(iter(configs.values())).data) - 1
    if (run / f"step{step}").exists():
        raise ReminderError(f"{run / f'step{step}'} exists (an interrupted increment): finish it with reminder "
                            f"increment, or remove it, before comparing methods for that step")
    folder = run / "compare" / f"step{step}"
    with folder_lock(run, what="run", log=log):
        rows, started, spent = [], time.perf_counter(), []
        for method, config in configs.items():
            rows.append(_candidate(run, folder / method, config, step, budget=budget, started=started, spent=spent,
                                   progress=progress, log=log))
        comparison = _summary(rows, step, holdout, data)
        atomic_write_text(folder / "comparison.json", json.dumps(comparison, indent=2))
        for line in comparison_lines(comparison):
            log(line)
        if keep and comparison["chosen"] is not None:
            _adopt(run, folder / comparison["chosen"], configs[comparison["chosen"]], step)
            log(f"kept {comparison['chosen']}'s step {step} as step {step} of {run}")
    return comparison


def _complete_step_of(run: Path, data) -> int | None:
    from reminder.train.checkpoint import completed_steps
    from reminder.train.config import load_config

    saved = load_config(run)
    path = str(Path(data).resolve())
    if path in saved.data and saved.data.index(path) in completed_steps(run):
        return saved.data.index(path)
    return None


def _candidate(run: Path, folder: Path, config, step: int, *, budget, started: float, spent: list, progress: bool,
               log) -> dict:
    from reminder.train.run import train_scenario

    method = config.for_step(step).method
    scored = folder / "validation.json"
    if scored.is_file():
        return read_json(scored)
    if budget is not None and spent:
        expected = sum(spent) / len(spent)
        if time.perf_counter() - started + expected > budget:
            log(f"{method}: skipped, the budget of {budget:.0f} s would be exceeded "
                f"(the candidates so far took {expected:.0f} s each)")
            return {"method": method, "skipped": "budget"}
    _link_earlier_steps(run, folder, step)
    began = time.perf_counter()
    candidate = dataclasses.replace(config, out=str(folder), export_each_step=None)
    train_scenario(candidate, progress=progress, log=lambda line: log(f"[{method}] {line}"))
    seconds = time.perf_counter() - began
    spent.append(seconds)
    row = {"method": method, "seconds": round(seconds, 1), **score_candidate(run, folder, step, progress=progress)}
    atomic_write_text(scored, json.dumps(row))
    return row


def _link_earlier_steps(run: Path, folder: Path, step: int) -> None:
    """``folder/step<t>`` for t < ``step``: hard links to the run's files (copies where links fail)."""
    for t in range(step):
        source, target = run / f"step{t}", folder / f"step{t}"
        if (target / "metrics.json").is_file():
            continue
        target.mkdir(parents=True, exist_ok=True)
        for path in sorted(source.iterdir()):
            if path.is_file() and not (target / path.name).exists():
                _link_or_copy(path, target / path.name)


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link (the step files are never modified in place), a copy where links fail."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def score_candidate(run: Path, folder: Path, step: int, *, progress: bool = False) -> dict:
    """Per-class IoU of ``folder``'s step ``step`` and of the run's previous step on the
    validation images: old / new / all and the forgetting of the old classes most similar
    to the new ones."""
    from reminder.train.checkpoint import load_model
    from reminder.train.config import load_config
    from reminder.train.forgetting import similarity_forgetting
    from reminder.train.prototypes import load_prototypes
    from reminder.train.run import ScenarioRunner

    config = load_config(folder)
    runner = ScenarioRunner(config, progress=False, log=lambda message: None)
    names = list(runner.data.spec.class_names)
    num_old, num_seen = runner.scenario.num_seen(step - 1), runner.scenario.num_seen(step)
    loaders = validation_loaders(runner, step)
    previous = _scored(load_model(folder / f"step{step - 1}", runner.device)[0], loaders, num_seen, num_old, runner)
    current = _scored(load_model(folder / f"step{step}", runner.device)[0], loaders, num_seen, num_old, runner)
    iou = {names[c]: _number(current[c]) for c in range(num_seen)}
    before = {names[c]: _number(previous[c]) for c in range(num_old)}
    bank = load_prototypes(folder / f"step{step}" / "prototypes.safetensors")["prototypes"].float().numpy()
    records = similarity_forgetting([{"step": step - 1, "num_seen": num_old, "iou": before},
                                     {"step": step, "num_seen": num_seen, "iou": iou}], names, prototypes=bank)
    similar = records[0].get("prototypes", {}) if records else {}
    return {"old": _mean(current[:num_old]), "new": _mean(current[num_old:num_seen]),
            "all": _mean(current[:num_seen]), "iou": iou, "iou_before": before,
            "similar_classes": similar.get("similar", []), "similar_drop": similar.get("similar_drop"),
            "other_drop": similar.get("other_drop"), "validation_images": sum(len(d.dataset) for d, _ in loaders)}


def validation_loaders(runner, step: int) -> list:
    """``[(loader, partial)]``: the earlier steps' val images, fully labelled for their classes,
    and the images held out of the new step's training (``partial``: only the new classes
    need labels there)."""
    import numpy as np

    from reminder.data.increments import holdout_samples, union_val_dataset
    from reminder.data.loading import SegmentationDataset
    from reminder.data.transforms import eval_transform

    config, data = runner.config, runner.data
    transform = eval_transform(config.eval_size)
    names, num_seen = data.spec.class_names, runner.scenario.num_seen(step)
    earlier = union_val_dataset(config.data[:step], names, num_seen, transform)
    latest = data.datasets[step]
    held = holdout_samples(latest, config.for_step(step).holdout)[1]
    if not held:
        raise ReminderError(f"no training image of {latest.source} falls in the held-out share "
                            f"({config.for_step(step).holdout}); use a larger `holdout` or more images")
    lut = np.arange(256, dtype=np.uint8)
    lut[num_seen:255] = 0
    new = SegmentationDataset(held, num_classes=latest.num_classes, label_lut=lut, transform=transform,
                              mask_reader=latest.mask_reader())
    return [(runner.plain_loader(earlier), False), (runner.plain_loader(new), True)]


def _scored(model, loaders, num_seen: int, num_old: int, runner) -> list[float]:
    import torch

    from reminder.train.metrics import ConfusionMatrix

    model.eval()
    matrix = ConfusionMatrix(num_seen)
    with torch.no_grad():
        for loader, partial in loaders:
            for images, labels in loader:
                prediction = model(images.to(runner.device)).argmax(1).cpu()
                if partial:  # labelled background, predicted an old class: it may be that class, unlabelled
                    unsure = (labels == 0) & (prediction > 0) & (prediction < num_old)
                    labels = torch.where(unsure, torch.full_like(labels, 255), labels)
                matrix.update(prediction.clamp(max=num_seen - 1), labels)
    return [float(v) for v in matrix.iou()[:num_seen]]


def _number(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 6)


def _mean(values: Sequence[float]) -> float | None:
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else None


def _summary(rows: list[dict], step: int, holdout: float, data) -> dict:
    scored = [r for r in rows if r.get("all") is not None]
    best = max(scored, key=lambda r: r["all"], default=None)
    unlearnt = {r["method"]: sorted(n for n, v in r["iou"].items() if v == 0.0) for r in scored}
    return {"step": step, "data": str(data), "holdout": holdout, "candidates": rows,
            "chosen": best["method"] if best else None,
            "margin": (best["all"] - max((r["all"] for r in scored if r is not best), default=best["all"]))
            if best else None, "not_learnt": unlearnt}


def comparison_lines(comparison: dict) -> list[str]:
    """The comparison as a per-class table and a recommendation."""
    rows = [r for r in comparison["candidates"] if r.get("all") is not None]
    if not rows:
        return ["no candidate was scored: " + ", ".join(f"{r['method']} ({r.get('skipped')})"
                                                         for r in comparison["candidates"])]

    def pct(value):
        return "   -" if value is None or value != value else f"{100 * value:5.1f}"
    names = list(rows[0]["iou"])
    width = max(len(n) for n in names + ["similar-class drop"])
    lines = [f"validation ({rows[0]['validation_images']} images: earlier val sets + {comparison['holdout']:.0%} "
             f"of the new training images held out), IoU %",
             " " * width + "".join(f" {r['method']:>9}" for r in rows)]
    for name in names:
        lines.append(f"{name:<{width}}" + "".join(f" {pct(r['iou'][name]):>9}" for r in rows))
    for label, key in (("old", "old"), ("new", "new"), ("all", "all"), ("similar-class drop", "similar_drop")):
        lines.append(f"{label:<{width}}" + "".join(f" {pct(r[key]):>9}" for r in rows))
    lines.append(f"{'seconds':<{width}}" + "".join(f" {r['seconds']:>9.0f}" for r in rows))
    chosen = comparison["chosen"]
    ahead = (f"{100 * comparison['margin']:.1f} points ahead of the next" if len(rows) > 1
             else "the only candidate scored")
    lines.append(f"recommended: {chosen} (all {pct(max(r['all'] for r in rows)).strip()}, {ahead})")
    if comparison["margin"] < 0.01 and len(rows) > 1:
        lines.append("the margin is under a point: on this validation set the methods are level")
    if comparison["not_learnt"].get(chosen):
        lines.append(f"warning: with {chosen}, {', '.join(comparison['not_learnt'][chosen])} score 0 IoU")
    return lines


def _adopt(run: Path, candidate: Path, config, step: int) -> None:
    """The candidate's step ``step`` becomes the run's (files linked into a temporary folder,
    renamed into place), then the run's config and results record it."""
    from reminder.train.results import write_results

    source, target = candidate / f"step{step}", run / f"step{step}"
    staging = run / f".step{step}.adopting"
    if staging.exists():
        shutil.rmtree(staging)  # our own half-made folder from an interrupted adoption
    staging.mkdir()
    for path in sorted(source.iterdir()):
        if path.is_file():
            _link_or_copy(path, staging / path.name)
    os.replace(staging, target)
    atomic_write_text(run / "config.json", json.dumps(dataclasses.replace(config, out=str(run)).to_json(), indent=2))
    write_results(run)
