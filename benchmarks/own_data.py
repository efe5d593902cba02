"""The own-data recipe measured on warehouse scenes: step 0 on 4 classes, then `cart` added.

For each seed: generate day 1 (shelf, pallet, forklift, person) and day 2 (cart labelled
only, in every image), train step 0 with the custom preset (tiny backbone, CPU), then the
increment with each variant of its schedule. Variants are chosen on a validation share
carved from the training images (``validation=0.2``), never on the val set; the val set
(fully labelled, both days) then scores every variant. Resumable: finished runs are skipped.

    python benchmarks/own_data.py --out runs/own-data --seeds 0,1,2

Prints one JSON object: per variant and seed, the carved-validation and val-set mIoUs.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

VARIANTS = {  # increment options over the preset (which is lr_next = lr / 10, half the step-0 iterations)
    "preset": {},
    "lr x4": {"lr": 0.02},
    "iterations x2": {"epochs_factor": 2},
    "lr x4, pod x0.5": {"lr": 0.02, "set": {"pod_factor": 0.005}},
}


def run_seed(out: Path, seed: int) -> dict:
    from reminder.data.warehouse import write_warehouse
    from reminder.train.custom import fit
    from reminder.train.config import load_config
    from reminder.train.run import evaluate_run

    quiet = dict(progress=False, log=lambda message: None)
    data = out / f"data-{seed}"
    day1, day2 = data / "day1" / "data.yaml", data / "day2" / "data.yaml"
    if not day2.is_file():
        write_warehouse(data / "day1", seed=seed)
        write_warehouse(data / "day2", names=("background", "shelf", "pallet", "forklift", "person", "cart"),
                        labelled=["cart"], must=["cart"], seed=1000 + seed)
    base = out / f"seed{seed}-step0"
    fit(day1, out=base, backbone="tiny", validation=0.2, seed=seed, **quiet)
    results = {}
    for name, variant in VARIANTS.items():
        run = out / f"seed{seed}-{name.replace(' ', '').replace(',', '_')}"
        if not (run / "step1" / "metrics.json").is_file():
            shutil.rmtree(run, ignore_errors=True)
            shutil.copytree(base, run, ignore=shutil.ignore_patterns("bundles", "tensorboard"))
            (run / "config.json").write_text(json.dumps(load_config(base).to_json() | {"out": str(run)}))
            options = {k: v for k, v in variant.items() if k not in ("epochs_factor", "set")}
            options |= variant.get("set", {})
            if "epochs_factor" in variant:
                from reminder.train.custom import _step_size, custom_preset

                count, side = _step_size([str(day1.resolve()), str(day2.resolve())], 1, run / "cache")
                options["epochs"] = custom_preset(count, "tiny", min_side=side, next_step=True)["epochs_next"] * 2
            fit(day2, resume_from=run, seed=seed, **options, **quiet)
        validation = json.loads((run / "step1" / "metrics.json").read_text())
        val = evaluate_run(run, step=1, data=[day1, day2], **quiet)[0]
        results[name] = {"validation": {k: validation[k] for k in ("old", "new", "all")},
                         "val": {k: val[k] for k in ("old", "new", "all")}, "val_iou": val["iou"]}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/own-data"))
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    per_seed = {seed: run_seed(args.out, seed) for seed in seeds}
    summary = {}
    for name in VARIANTS:
        for split in ("validation", "val"):
            for key in ("old", "new", "all"):
                values = [per_seed[s][name][split][key] for s in seeds]
                summary.setdefault(name, {})[f"{split}_{key}"] = round(100 * sum(values) / len(values), 2)
    print(json.dumps({"seeds": seeds, "summary": summary, "per_seed": per_seed}, indent=1))


if __name__ == "__main__":
    main()
