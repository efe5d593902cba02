"""A run's results over its completed steps: ``results.json`` and ``results.csv``."""

from __future__ import annotations

import json
from pathlib import Path

from reminder.errors import ReminderError
from reminder.io import atomic_write_text, read_json
from reminder.train.checkpoint import completed_steps
from reminder.train.config import load_config
from reminder.train.forgetting import run_similarity_forgetting
from reminder.train.metrics import average_over_steps

RESULTS_FORMAT = 1


def collect_steps(run: Path) -> list[dict]:
    """The metrics of every complete step of a run folder, in order."""
    return [read_json(Path(run) / f"step{t}" / "metrics.json") for t in completed_steps(run)]


def write_results(run: Path) -> dict:
    """``results.json`` and ``results.csv`` from the completed steps' metrics."""
    config = load_config(run)
    steps = collect_steps(run)
    alls = []
    for metrics in steps:
        alls.append(metrics["all"])
        metrics["avg"] = average_over_steps(alls)
        metrics.pop("confusion", None)
    results = {"format": RESULTS_FORMAT, "dataset": config.dataset, "setting": config.setting,
               "method": config.method, "backbone": config.backbone, "mode": config.mode, "seed": config.seed,
               "steps": steps, "similarity_forgetting": run_similarity_forgetting(run, steps, config.dataset)}
    atomic_write_text(run / "results.json", json.dumps(results, indent=2))
    class_names = list(steps[-1]["iou"]) if steps else []
    lines = [",".join(["step", "old", "new", "all", "avg"] + class_names)]
    for metrics in steps:
        values = [metrics["old"], metrics["new"], metrics["all"], metrics["avg"]]
        values += [metrics["iou"].get(name) for name in class_names]
        lines.append(",".join([str(metrics["step"])] + ["" if v is None or v != v else f"{v:.6f}" for v in values]))
    atomic_write_text(run / "results.csv", "\n".join(lines) + "\n")
    return results


def read_results(run: Path) -> dict:
    path = Path(run) / "results.json"
    if not path.is_file():
        raise ReminderError(f"{run} has no results.json yet: no step is complete")
    results = read_json(path)
    if results.get("format", 1) > RESULTS_FORMAT:
        raise ReminderError(f"{path} has format {results['format']}, newer than this reminder understands")
    return results
