"""Pseudo-labels under the reference thresholds against the true median, on a real teacher.

For step ``--step`` of a trained run's setting, the step-(t-1) model is the teacher: its
thresholds are computed both ways from the step's training data, then each image's
background pixels are pseudo-labelled. Printed (JSON): the thresholds' range in each mode
and in units of entropy / ln K_old, the share of background pixels kept, and the mean
per-image CE weight (lambda).

    python benchmarks/pseudo_thresholds.py runs/synthvoc-15-1/seed0/15-1-reminder --step 1
"""

from __future__ import annotations

import argparse
import json
import math
from datetime import datetime, timezone
from pathlib import Path

import torch

from reminder.data.splits import load_scenario
from reminder.data.transforms import eval_transform
from reminder.train import losses as L
from reminder.train.checkpoint import load_model
from reminder.train.config import load_config
from reminder.train.step import compute_thresholds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--step", type=int, default=1)
    args = parser.parse_args()
    config = load_config(args.run)
    data = load_scenario(config.dataset, config.root, config.setting, mode=config.mode, order=config.order,
                         cache_dir=config.cache_dir or args.run / "cache", progress=False)
    teacher, _ = load_model(args.run / f"step{args.step - 1}")
    teacher.eval()
    num_all = data.scenario.num_seen(args.step)
    loader = torch.utils.data.DataLoader(data.train_dataset(args.step, eval_transform(config.crop_size)),
                                         batch_size=16)
    report = {"benchmark": "pseudo_thresholds", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "run": str(args.run), "step": args.step, "num_old": teacher.num_classes, "num_all": num_all,
              "max_reference_quantity": 1 / (teacher.num_classes * math.log(num_all))}
    with torch.no_grad():
        for mode in L.PSEUDO_THRESHOLDS:
            thresholds = compute_thresholds(teacher, loader, device=torch.device("cpu"), bins=config.pseudo_bins,
                                            floor=config.pseudo_floor, num_all=num_all, mode=mode)
            kept = background = 0
            weights = []
            for images, labels in loader:
                logits = teacher(images)
                pseudo, weight = L.entropy_pseudo_labels(labels, logits, thresholds, num_all=num_all, mode=mode)
                mask = labels == 0
                kept += int((mask & (pseudo != 255)).sum())
                background += int(mask.sum())
                weights += weight.tolist()
            finite = thresholds[torch.isfinite(thresholds)]
            # the reference quantity times K_old ln K_all is entropy / ln K_old
            scale = teacher.num_classes * math.log(num_all) if mode == "reference" else 1.0
            report[mode] = {"thresholds_min": float(finite.min()) if len(finite) else None,
                            "thresholds_max": float(finite.max()) if len(finite) else None,
                            "infinite": int(torch.isinf(thresholds).sum()), "nan": int(torch.isnan(thresholds).sum()),
                            "in_entropy_over_ln_k_min": float(finite.min() * scale) if len(finite) else None,
                            "in_entropy_over_ln_k_max": float(finite.max() * scale) if len(finite) else None,
                            "background_kept": kept / max(background, 1),
                            "mean_lambda": sum(weights) / max(len(weights), 1)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
