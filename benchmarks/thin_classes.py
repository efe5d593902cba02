"""Heads, crops and class weights on thin and small classes: inspection frames (320x192).

Day 1 labels panel, cable (2-3 px), scratch (1 px), screw (discs, ~0.4% of the pixels);
day 2 adds rust and sticker (each ~0.2-0.3%). Every variant trains step 0 with the own-data
preset for the tiny backbone on 2 CPU cores, with only the head, crop and class weights
changed, and a validation share carved from the training images (``validation=0.2``):
variants are compared on that, never on the val set. The val set (every class labelled)
then scores the chosen variants. ``--increment`` adds day 2 to the listed variants.
Resumable: finished runs are skipped. Prints one JSON object (per class, per seed, and the
mean over seeds).

    python benchmarks/thin_classes.py --out runs/thin --seeds 0,1,2 --increment old,v3plus-sqrt
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

DAY1 = ("background", "panel", "cable", "scratch", "screw")
DAY2 = DAY1 + ("rust", "sticker")
VARIANTS = {  # over the own-data preset for the tiny backbone
    "old": {"head": "deeplabv3", "output_stride": 16, "crop_mode": "resized", "crop_scale": (0.5, 2.0),
            "class_weights": "none"},
    "v3-native": {"head": "deeplabv3", "output_stride": 16, "crop_mode": "native", "crop_scale": (1.0, 1.5),
                  "class_weights": "none"},
    "v3plus": {"head": "deeplabv3plus", "output_stride": 16, "crop_mode": "native", "crop_scale": (1.0, 1.5),
               "class_weights": "none"},
    "v3plus-sqrt": {"head": "deeplabv3plus", "output_stride": 16, "crop_mode": "native", "crop_scale": (1.0, 1.5),
                    "class_weights": "sqrt"},
    "os8-sqrt": {"head": "deeplabv3", "output_stride": 8, "crop_mode": "native", "crop_scale": (1.0, 1.5),
                 "class_weights": "sqrt"},
}


def _data(out: Path, seed: int, train: int, val: int) -> tuple[Path, Path]:
    from reminder.data.inspection import write_inspection

    folder = out / f"data-{seed}"
    day1, day2 = folder / "day1" / "data.yaml", folder / "day2" / "data.yaml"
    if not day2.is_file():
        write_inspection(folder / "day1", names=DAY1, train=train, val=val, seed=seed)
        write_inspection(folder / "day2", names=DAY2, labelled=["rust", "sticker"], train=train // 2, val=val,
                         seed=1000 + seed)
    return day1, day2


def _scores(run: Path, step: int, day_yamls: list[Path]) -> dict:
    from reminder.train.run import evaluate_run

    carved = json.loads((run / f"step{step}" / "metrics.json").read_text())
    val = evaluate_run(run, step=step, data=day_yamls, progress=False, log=lambda message: None)[0]
    return {"validation_iou": carved["iou"], "val_iou": val["iou"], "seconds": carved["seconds"],
            "class_weights": carved.get("train", {}).get("class_weights")}


def run_variant(out: Path, name: str, seed: int, *, increment: bool, train: int, val: int) -> dict:
    from reminder.train.custom import fit

    quiet = dict(progress=False, log=lambda message: None)
    day1, day2 = _data(out, seed, train, val)
    run = out / f"{name}-s{seed}"
    fit(day1, out=run, backbone="tiny", validation=0.2, seed=seed, **VARIANTS[name], **quiet)
    result = {"step0": _scores(run, 0, [day1])}
    if increment:
        fit(day2, resume_from=run, seed=seed, **quiet)
        result["step1"] = _scores(run, 1, [day1, day2])
    return result


def _mean(per_seed: dict, name: str, step: str, split: str) -> dict:
    rows = [per_seed[s][name][step][split] for s in per_seed if step in per_seed[s].get(name, {})]
    return {c: round(100 * sum(r[c] for r in rows) / len(rows), 2) for c in rows[0]} if rows else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/thin"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--increment", default="", help="Variants that also learn day 2 (comma-separated).")
    parser.add_argument("--train", type=int, default=80, help="Training frames of day 1 (day 2: half).")
    parser.add_argument("--val", type=int, default=30)
    args = parser.parse_args()
    seeds, names = [int(s) for s in args.seeds.split(",")], args.variants.split(",")
    incremented = set(filter(None, args.increment.split(",")))
    started = time.time()
    per_seed: dict = {}
    for seed in seeds:  # seed-major: a partial sweep still compares every variant
        for name in names:
            per_seed.setdefault(seed, {})[name] = run_variant(args.out, name, seed, increment=name in incremented,
                                                              train=args.train, val=args.val)
    summary = {name: {f"{step}_{split}": _mean(per_seed, name, step, split)
                      for step in ("step0", "step1") for split in ("validation_iou", "val_iou")}
               for name in names}
    print(json.dumps({"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.node(),
                      "cpus": os.cpu_count(), "seconds": round(time.time() - started), "seeds": seeds,
                      "variants": {n: VARIANTS[n] for n in names}, "summary": summary, "per_seed": per_seed},
                     indent=1, default=str))


if __name__ == "__main__":
    main()
