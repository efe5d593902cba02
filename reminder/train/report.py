"""Reports over run folders: the paper's tables in Markdown and PNG plots.

- Table 1 layout: methods as rows; per setting, old / new / all / avg of the final step.
- Table 4 layout: per-class IoU of the final step, methods as rows.
- ``miou_per_step.png``: all-mIoU per step for each run.
- ``forgetting_<run>.png``: IoU of each step-0 class over the steps.
- ``confusion_<run>.png``: the final step's row-normalised confusion matrix (Fig. 5).
- ``similarity_forgetting.png``: per run, the mean IoU drop of the old classes most similar
  to each step's new classes against the other old classes (:mod:`.forgetting`).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from reminder.errors import ReminderError
from reminder.io import atomic_write_text
from reminder.train.results import collect_steps, read_results


def _pct(value) -> str:
    return "-" if value is None or value != value else f"{100 * value:.2f}"


def _load(runs: Sequence[Path]) -> list[dict]:
    loaded = []
    for run in runs:
        results = read_results(run)
        if not results["steps"]:
            raise ReminderError(f"run {run} has no complete step")
        results["run"] = Path(run)
        results["label"] = f"{results['method']} ({Path(run).name})"
        loaded.append(results)
    return loaded


def _joint_in_setting(joint: dict, num_old: int) -> dict:
    """A joint (single-step) run's final IoUs split as a setting splits them (Table 1's Joint row)."""
    values = np.array([np.nan if v is None else v for v in joint["steps"][-1]["iou"].values()], dtype=np.float64)
    old, new = values[:num_old], values[num_old:]
    return {"old": float(np.nanmean(old)), "new": float(np.nanmean(new)) if new.size else None,
            "all": float(np.nanmean(values)), "avg": float(np.nanmean(values))}


def table1(results: list[dict]) -> str:
    """Markdown table: one row per method, old / new / all / avg per setting.

    A ``joint`` run (every class in one step) appears in each setting with its IoUs split
    into that setting's old and new classes, as the paper's Joint row."""
    incremental = [r for r in results if r["setting"] != "offline"]
    joints = [r for r in results if r["setting"] == "offline"]
    settings = list(dict.fromkeys(f"{r['dataset']} {r['setting']}" for r in incremental or results))
    first = {}
    for setting in settings:
        sample = next(r for r in incremental or results if f"{r['dataset']} {r['setting']}" == setting)
        first[setting] = len(sample["steps"][0]["classes"])
    rows: dict[str, dict[str, dict]] = defaultdict(dict)
    for r in incremental:
        rows[r["method"]][f"{r['dataset']} {r['setting']}"] = r["steps"][-1]
    for r in joints:
        for setting in settings:
            if setting.split()[0] == r["dataset"]:
                rows[r["method"]][setting] = _joint_in_setting(r, first[setting] + 1)
    header = ["Method"]
    for setting in settings:
        header += [f"{setting}: 0-{first[setting]} (old)", "new", "all", "avg"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for method, per_setting in rows.items():
        row = [method]
        for setting in settings:
            last = per_setting.get(setting, {})
            row += [_pct(last.get("old")), _pct(last.get("new")), _pct(last.get("all")), _pct(last.get("avg"))]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def table4(results: list[dict]) -> str:
    """Markdown table of the final step's per-class IoU, one row per run."""
    names = list(results[0]["steps"][-1]["iou"])
    lines = ["| Run | " + " | ".join(names) + " | mIoU |", "|" + " --- |" * (len(names) + 2)]
    for r in results:
        iou = r["steps"][-1]["iou"]
        lines.append(f"| {r['label']} | " + " | ".join(_pct(iou.get(n)) for n in names)
                     + f" | {_pct(r['steps'][-1]['all'])} |")
    return "\n".join(lines)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _line_colors(count: int) -> list:
    """Distinct colours for ``count`` lines: matplotlib's 10 up to 10, tab20 up to 20, then
    evenly spaced hues (the default cycle repeats after 10)."""
    import matplotlib

    if count <= 10:
        return [matplotlib.colormaps["tab10"](i) for i in range(count)]
    if count <= 20:
        return [matplotlib.colormaps["tab20"](i) for i in range(count)]
    return [matplotlib.colormaps["hsv"](i / count) for i in range(count)]


def _save_line_plot(fig, ax, path: Path, *, ylabel: str, title: str, **legend) -> Path:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(**legend)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)
    return path


def plot_miou_per_step(results: list[dict], path: Path) -> Path:
    fig, ax = _pyplot().subplots(figsize=(6, 4))
    for r, color in zip(results, _line_colors(len(results))):
        steps = [s["step"] for s in r["steps"]]
        ax.plot(steps, [100 * s["all"] for s in r["steps"]], marker="o", label=r["label"], color=color)
    return _save_line_plot(fig, ax, path, ylabel="mIoU of seen classes (%)", title="mIoU per step", fontsize=8)


def plot_forgetting(result: dict, path: Path) -> Path:
    """IoU of each step-0 class over the steps: how much each old class is forgotten."""
    steps = result["steps"]
    fig, ax = _pyplot().subplots(figsize=(7, 4))
    names = list(steps[0]["iou"])
    for name, color in zip(names, _line_colors(len(names))):
        values = [100 * (s["iou"].get(name) or 0.0) for s in steps]
        ax.plot([s["step"] for s in steps], values, marker=".", label=name, color=color)
    return _save_line_plot(fig, ax, path, ylabel="IoU (%)", title=f"Old classes over the steps: {result['label']}",
                           fontsize=6, ncol=2, bbox_to_anchor=(1.02, 1), loc="upper left")


def plot_losses(result: dict, path: Path) -> Path | None:
    """Per step, every loss term (and the learning rate, and validation mIoU when recorded)
    over the iterations, from ``RUN/step<t>/history.csv``: where to look when a new class is
    not learnt (its cross-entropy stays high) or an old one is forgotten (distillation rises)."""
    from reminder.train.history import read_history

    histories = [(s["step"], read_history(result["run"] / f"step{s['step']}")) for s in result["steps"]]
    histories = [(t, h) for t, h in histories if h.get("iteration")]
    if not histories:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(histories), figsize=(4.2 * len(histories), 3.4), squeeze=False)
    for ax, (step, history) in zip(axes[0], histories):
        terms = [k for k in history if k not in ("epoch", "iteration", "lr", "val_miou")]
        rows = [i for i, v in enumerate(history["lr"]) if v is not None]
        iterations = [history["iteration"][i] for i in rows]
        for term, color in zip(terms, _line_colors(len(terms))):
            ax.plot(iterations, [history[term][i] for i in rows], label=term, color=color, linewidth=1)
        ax.set_yscale("log")
        ax.set_title(f"step {step}", fontsize=9)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        validated = [(history["iteration"][i], v) for i, v in enumerate(history.get("val_miou", [])) if v is not None]
        if validated:
            twin = ax.twinx()
            twin.plot(*zip(*[(x, 100 * v) for x, v in validated]), "k--", marker="o", markersize=3, label="val mIoU")
            twin.set_ylabel("val mIoU (%)", fontsize=8)
        ax.legend(fontsize=6, loc="upper right")
    fig.suptitle(f"Loss terms per step: {result['label']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_confusion(result: dict, path: Path) -> Path:
    plt = _pyplot()
    last = collect_steps(result["run"])[-1]
    matrix = np.asarray(last["confusion"], dtype=np.float64)
    rows = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    names = list(last["iou"])
    fig, ax = plt.subplots(figsize=(7, 6))
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
    ax.set_yticks(range(len(names)), names, fontsize=6)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    ax.set_title(f"Confusion, step {last['step']}: {result['label']}")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _mean_drops(result: dict, criterion: str) -> tuple[float | None, float | None]:
    records = [r[criterion] for r in result.get("similarity_forgetting", []) if criterion in r]
    similar = [r["similar_drop"] for r in records if r["similar_drop"] is not None]
    other = [r["other_drop"] for r in records if r["other_drop"] is not None]
    return (float(np.mean(similar)) if similar else None, float(np.mean(other)) if other else None)


def similarity_table(results: list[dict]) -> str:
    """Mean IoU drop (points) per step of the old classes similar to the step's new ones,
    against the other old classes, per run and criterion."""
    lines = ["| Run | criterion | similar old classes: drop | other old classes: drop | difference |",
             "| --- | --- | --- | --- | --- |"]
    for r in results:
        for criterion in ("prototypes", "group"):
            similar, other = _mean_drops(r, criterion)
            if similar is None and other is None:
                continue
            difference = None if similar is None or other is None else similar - other
            lines.append(f"| {r['label']} | {criterion} | {_pct(similar)} | {_pct(other)} | {_pct(difference)} |")
    return "\n".join(lines)


def plot_similarity_forgetting(results: list[dict], path: Path) -> Path | None:
    """Per method (its runs, e.g. seeds, averaged; the bars' lines are the spread), the mean
    IoU drop per step of the similar old classes against the others, one panel per criterion."""
    plt = _pyplot()
    criteria = [c for c in ("prototypes", "group") if any(_mean_drops(r, c)[0] is not None for r in results)]
    if not criteria:
        return None
    methods = list(dict.fromkeys(r["method"] for r in results))
    fig, axes = plt.subplots(1, len(criteria), figsize=(max(5, 1.4 * len(methods)) * len(criteria), 4),
                             squeeze=False)
    for ax, criterion in zip(axes[0], criteria):
        x = np.arange(len(methods))
        for offset, index, label in ((-0.2, 0, "old classes similar to the new ones"), (0.2, 1, "other old classes")):
            values = [[100 * v for r in results if r["method"] == m
                       for v in [_mean_drops(r, criterion)[index]] if v is not None] for m in methods]
            means = [float(np.mean(v)) if v else 0.0 for v in values]
            spread = [float(np.std(v)) if len(v) > 1 else 0.0 for v in values]
            ax.bar(x + offset, means, 0.4, yerr=spread, capsize=3, label=label)
        runs = {m: sum(r["method"] == m for r in results) for m in methods}
        ax.set_xticks(x, [f"{m}\n({runs[m]} run{'s' if runs[m] > 1 else ''})" for m in methods], fontsize=8)
        ax.set_ylabel("mean IoU drop per step (points)")
        ax.set_title(f"similar by {criterion}")
        ax.axhline(0, color="black", linewidth=0.5)
        ax.legend(fontsize=7)
    fig.suptitle("Similarity-driven forgetting")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(runs: Sequence[str | Path], out: str | Path) -> Path:
    """Write ``out/report.md`` and its PNG plots for one or more run folders."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = _load([Path(r) for r in runs])
    plots = [plot_miou_per_step(results, out / "miou_per_step.png")]
    similarity_plot = plot_similarity_forgetting(results, out / "similarity_forgetting.png")
    plots += [similarity_plot] if similarity_plot else []
    for r in results:
        slug = r["run"].name
        plots.append(plot_forgetting(r, out / f"forgetting_{slug}.png"))
        losses = plot_losses(r, out / f"losses_{slug}.png")
        plots += [losses] if losses else []
        plots.append(plot_confusion(r, out / f"confusion_{slug}.png"))
    parts = ["# Continual segmentation report", "",
             "Final-step mIoU (%) in the layout of the paper's Table 1 (old = classes of step 0 with "
             "background, new = the classes learnt after, all = every seen class, avg = mean of all "
             "over the steps).", "", table1(results), "",
             "## Per-class IoU at the final step (Table 4 layout)", "", table4(results), "",
             "## Similarity-driven forgetting", "",
             "Mean IoU drop per step (points) of the old foreground classes most similar to the step's new "
             "classes (prototypes: the 3 nearest by cosine of the stored prototypes; group: SynthVOC's visual "
             "group), against the other old classes.", "", similarity_table(results), "",
             "## Plots", ""]
    parts += [f"![{p.stem}]({p.name})" for p in plots]
    parts += ["", "## Runs", ""]
    parts += [f"- `{r['run']}`: {r['dataset']} {r['setting']} ({r['mode']}), {r['method']}, "
              f"{r['backbone']}, seed {r['seed']}, {len(r['steps'])} steps" for r in results]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(parts) + "\n")
    atomic_write_text(out / "report.json", json.dumps(
        [{k: v for k, v in r.items() if k != "run"} | {"run": str(r["run"])} for r in results], indent=2))
    return path
