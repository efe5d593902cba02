"""CSW-KD weight and temperature on a validation split carved from SynthVOC's training images.

Never the test set: every run here trains on the training images minus a held-out share
(``--validation``, chosen by a stable hash of the image ids) and is evaluated on that
share. One step-0 model is trained (finetune's), and PLOP and each REMINDER variant start
from it. Printed (JSON), per run: final old / new / all / avg on the validation split,
the similarity-driven forgetting (mean IoU drop of the old classes nearest to each step's
new classes, and of the others), and the mean of each loss term per step, unweighted and
weighted. Runs resume when the command is run again.

    python benchmarks/csw_sweep.py --out runs/csw-sweep --weights 0.5 2 8 --temperatures 3 1
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from reminder.demo import ensure_synthvoc
from reminder.train.config import resolve_config
from reminder.train.methods import build_method
from reminder.train.run import train_scenario


def _forgetting(results: dict) -> dict:
    out = {}
    for criterion in ("prototypes", "group"):
        records = [r[criterion] for r in results.get("similarity_forgetting", []) if criterion in r]
        for key in ("similar_drop", "other_drop"):
            values = [r[key] for r in records if r[key] is not None]
            out[f"{criterion}_{key}"] = float(np.mean(values)) if values else None
    return out


def _terms(results: dict, config) -> list[dict]:
    weights = {t.name: t.weight for t in build_method(config.method, config).terms}
    rows = []
    for step in results["steps"][1:]:
        stats = step.get("train", {})
        rows.append({"step": step["step"]} | {name: round(value, 4) for name, value in stats.items()
                                               if name not in ("iterations",)}
                    | {f"{name}_weighted": round(stats[name] * w, 4) for name, w in weights.items() if name in stats})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/csw-sweep"))
    parser.add_argument("--setting", default="15-1")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--validation", type=float, default=0.2)
    parser.add_argument("--weights", nargs="+", type=float, default=[0.5, 2.0, 8.0])
    parser.add_argument("--temperatures", nargs="+", type=float, default=[3.0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--epochs-next", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    root = ensure_synthvoc(args.out / "synthvoc", images=args.images, size=args.size)
    common = dict(dataset="synthvoc", root=root, setting=args.setting, backbone="tiny", epochs=args.epochs,
                  epochs_next=args.epochs_next, seed=args.seed, workers=0, validation=args.validation)
    quiet = {"progress": False, "log": lambda line: print(line, file=sys.stderr)}
    step0 = args.out / "finetune" / "step0"
    runs = [("finetune", {}), ("plop", {})] + [
        ("reminder", {"csw_weight": w, "csw_temperature": t}) for w in args.weights for t in args.temperatures]
    rows = []
    for method, overrides in runs:
        name = method + "".join(f"-{k.split('_')[1]}{v:g}" for k, v in overrides.items())
        config = resolve_config(method=method, out=args.out / name, **common, **overrides,
                                from_step0=None if method == "finetune" else str(step0))
        results = train_scenario(config, **quiet)
        last = results["steps"][-1]
        rows.append({"run": name, "method": method, **overrides,
                     **{k: last[k] for k in ("old", "new", "all", "avg")},
                     "forgetting": _forgetting(results), "terms": _terms(results, config)})
    print(json.dumps({"benchmark": "csw_sweep", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                      "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
                      "evaluated_on": f"validation: {args.validation:.0%} of the training images, carved out",
                      "setting": args.setting, "epochs": args.epochs, "epochs_next": args.epochs_next,
                      "seed": args.seed, "runs": rows}, indent=2))


if __name__ == "__main__":
    main()
