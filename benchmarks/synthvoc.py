"""The paper's Table 1 on SynthVOC: old / new / all / avg per method and setting, over seeds.

One step-0 model per seed is trained (the first method's run of the first setting) and
reused by every other run of that seed through ``from_step0``, as the paper reuses its
step-0 models; ``joint`` trains every class at once (the upper bound). Every run resumes
where it stopped: run the same command again after an interruption. ``--parallel N`` runs
N seeds at once in child processes (one torch thread each). Writes the run folders and a
report under ``--out`` and prints one JSON object with every run's final metrics, the mean
and standard deviation per method, the paired differences per seed (REMINDER - PLOP,
DKD - REMINDER, DKD+CSW - DKD, ...), and each method's similarity-driven forgetting.

    python benchmarks/synthvoc.py --out runs/synthvoc-15-1 --backbone tiny --settings 15-1 \
        --methods finetune mib plop reminder --seeds 0 1 2 --parallel 2
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from reminder.demo import ensure_synthvoc
from reminder.train.config import resolve_config
from reminder.train.report import write_report
from reminder.train.run import train_scenario


def run_one(args, root: Path, out: Path, setting: str, method: str, seed: int, step0: Path | None) -> dict:
    overrides = {}
    for pair in args.set:
        key, _, value = pair.partition("=")
        overrides[key] = json.loads(value)
    config = resolve_config(dataset="synthvoc", root=root, setting=setting, method=method, out=out,
                            backbone=args.backbone, epochs=args.epochs, epochs_next=args.epochs_next,
                            seed=seed, workers=args.workers, max_iterations=args.max_iterations,
                            from_step0=str(step0) if step0 else None, **overrides)
    started = time.perf_counter()
    results = train_scenario(config, progress=not args.quiet, log=lambda line: print(line, file=sys.stderr))
    last = results["steps"][-1]
    return {"setting": setting, "method": method, "seed": seed, "run": str(out),
            "old": last["old"], "new": last["new"], "all": last["all"], "avg": last["avg"],
            "seconds": round(time.perf_counter() - started, 1)}


def summarise(rows: list[dict], out: Path) -> dict:
    """Mean and std per (setting, method), paired REMINDER - PLOP per seed, and the mean
    similarity-driven forgetting per method (from each run's results.json)."""
    import numpy as np

    summary: dict = {"methods": {}, "paired_reminder_minus_plop": [], "similarity_forgetting": {}}
    keys = sorted({(r["setting"], r["method"]) for r in rows})
    for setting, method in keys:
        group = [r for r in rows if (r["setting"], r["method"]) == (setting, method)]
        summary["methods"][f"{setting} {method}"] = {
            metric: {"mean": float(np.mean([r[metric] for r in group])),
                     "std": float(np.std([r[metric] for r in group], ddof=1)) if len(group) > 1 else None}
            for metric in ("old", "new", "all", "avg")} | {"seeds": [r["seed"] for r in group]}
        drops = {"similar": [], "other": []}
        for r in group:
            records = json.loads((Path(r["run"]) / "results.json").read_text()).get("similarity_forgetting", [])
            for criterion in ("prototypes", "group"):
                for record in records:
                    if criterion in record and record[criterion]["similar_drop"] is not None:
                        drops.setdefault(f"{criterion}_similar", []).append(record[criterion]["similar_drop"])
                        drops.setdefault(f"{criterion}_other", []).append(record[criterion]["other_drop"])
        summary["similarity_forgetting"][f"{setting} {method}"] = {
            k: float(np.nanmean([v for v in values if v is not None])) for k, values in drops.items() if values}
    by_seed = {(r["setting"], r["method"], r["seed"]): r for r in rows}
    summary["paired"] = {}
    for (setting, method, seed), r in sorted(by_seed.items()):
        for first, second in PAIRS:
            other = by_seed.get((setting, second, seed))
            if method == first and other is not None:
                difference = {m: r[m] - other[m] for m in ("old", "new", "all", "avg")}
                difference = {"setting": setting, "seed": seed} | difference
                summary["paired"].setdefault(f"{first} - {second}", []).append(difference)
    summary["paired_reminder_minus_plop"] = summary["paired"].get("reminder - plop", [])
    return summary


# the paired differences reported when both runs of a seed exist (same step-0 model)
PAIRS = (("reminder", "plop"), ("dkd", "reminder"), ("dkd+csw", "dkd"), ("dkd", "mib"), ("dkd", "plop"))


def plot_method_forgetting(summary: dict, path: Path) -> Path | None:
    """Per method: the mean IoU drop per step of the old classes most similar to the new ones
    (by prototypes) beside the other old classes', and the final all-mIoU, over the seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    keys = [k for k in summary["similarity_forgetting"] if "prototypes_similar" in summary["similarity_forgetting"][k]]
    if not keys:
        return None
    names = [k.split(" ", 1)[1] for k in keys]
    similar = [100 * summary["similarity_forgetting"][k]["prototypes_similar"] for k in keys]
    other = [100 * summary["similarity_forgetting"][k]["prototypes_other"] for k in keys]
    final = [100 * summary["methods"][k]["all"]["mean"] for k in keys]
    spread = [100 * (summary["methods"][k]["all"]["std"] or 0) for k in keys]
    x = np.arange(len(keys))
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.bar(x - 0.2, similar, 0.4, label="3 old classes most similar to the new ones")
    left.bar(x + 0.2, other, 0.4, label="the other old classes")
    left.set_xticks(x, names)
    left.set_ylabel("IoU drop per step (points)")
    left.set_title("Forgetting by similarity (prototypes)")
    left.legend(fontsize=8)
    right.bar(x, final, 0.6, yerr=spread, capsize=4, color="tab:green")
    right.set_xticks(x, names)
    right.set_ylabel("final all-mIoU (%)")
    right.set_title(f"After the last step ({len(summary['methods'][keys[0]]['seeds'])} seeds, mean ± std)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _child(args, seed: int) -> None:
    """This script for one seed, in a child process with one torch thread."""
    import subprocess

    command = [sys.executable, __file__, "--out", str(args.out), "--images", str(args.images), "--size",
               str(args.size), "--backbone", args.backbone, "--settings", *args.settings, "--methods", *args.methods,
               "--seeds", str(seed), "--epochs", str(args.epochs), "--epochs-next", str(args.epochs_next),
               "--workers", "0", "--threads", "1", "--quiet", "--no-report"]
    if args.max_iterations:
        command += ["--max-iterations", str(args.max_iterations)]
    for override in args.set:
        command += ["--set", override]
    with open(args.out / f"seed{seed}.log", "a") as log:
        subprocess.run(command, stdout=log, stderr=log, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/synthvoc-table1"))
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--backbone", default="mobilenet_v3_large")
    parser.add_argument("--settings", nargs="+", default=["15-1", "15-5"])
    parser.add_argument("--methods", nargs="+", default=["finetune", "mib", "plop", "reminder", "joint"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--epochs-next", type=int, default=30)
    parser.add_argument("--max-iterations", type=int, default=None)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--parallel", type=int, default=1, help="Seeds run at once in child processes.")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of this process.")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="Configuration override for every run (e.g. csw_weight=2).")
    parser.add_argument("--no-report", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    root = ensure_synthvoc(args.out / "synthvoc", images=args.images, size=args.size)
    if args.parallel > 1 and len(args.seeds) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(args.parallel) as pool:
            list(pool.map(lambda seed: _child(args, seed), args.seeds))
    rows, runs = [], []
    for seed in args.seeds:
        step0 = None
        for setting in args.settings:
            for method in args.methods:
                if method == "joint" and setting != args.settings[0]:
                    continue  # joint does not depend on the setting
                out = args.out / f"seed{seed}" / ("joint" if method == "joint" else f"{setting}-{method}")
                rows.append(run_one(args, root, out, setting, method, seed, None if method == "joint" else step0))
                runs.append(out)
                if step0 is None and method != "joint":
                    step0 = out / "step0"
    if args.no_report:
        return
    report = write_report(runs, args.out / "report")
    summary = summarise(rows, args.out)
    plot_method_forgetting(summary, args.out / "report" / "method_forgetting.png")
    print(json.dumps({
        "benchmark": "synthvoc_table1", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads", "torch": torch.__version__,
        "images": args.images, "size": args.size, "backbone": args.backbone, "epochs": args.epochs,
        "epochs_next": args.epochs_next, "overrides": args.set, "report": str(report), "runs": rows,
        "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
