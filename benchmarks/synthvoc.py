"""The paper's Table 1 on SynthVOC: old / new / all / avg per method and setting.

One step-0 model per seed is trained (finetune's run of the first setting) and reused by
every other run through ``from_step0``, as the paper reuses its step-0 models; ``joint``
trains every class at once (the upper bound). Writes the run folders and a report under
``--out`` and prints one JSON object with every run's final metrics.

    python benchmarks/synthvoc.py --out runs/synthvoc-table1 --backbone mobilenet_v3_large
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
    config = resolve_config(dataset="synthvoc", root=root, setting=setting, method=method, out=out,
                            backbone=args.backbone, epochs=args.epochs, epochs_next=args.epochs_next,
                            seed=seed, workers=args.workers, max_iterations=args.max_iterations,
                            from_step0=str(step0) if step0 else None)
    started = time.perf_counter()
    results = train_scenario(config, progress=not args.quiet, log=lambda line: print(line, file=sys.stderr))
    last = results["steps"][-1]
    return {"setting": setting, "method": method, "seed": seed, "run": str(out),
            "old": last["old"], "new": last["new"], "all": last["all"], "avg": last["avg"],
            "seconds": round(time.perf_counter() - started, 1)}


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
    args = parser.parse_args()
    root = ensure_synthvoc(args.out / "synthvoc", images=args.images, size=args.size)
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
    report = write_report(runs, args.out / "report")
    print(json.dumps({
        "benchmark": "synthvoc_table1", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads", "torch": torch.__version__,
        "images": args.images, "size": args.size, "backbone": args.backbone, "epochs": args.epochs,
        "epochs_next": args.epochs_next, "report": str(report), "runs": rows}, indent=2))


if __name__ == "__main__":
    main()
