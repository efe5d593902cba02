"""Does the "class not learnt" rule match what a user sees? For every step-0 run of
``benchmarks/thin_classes.py``: each class's IoU on the val set, beside its object recall
(the share of labelled objects, connected components of the class, of which the model
labels at least 30% of the pixels, within 1 px), and whether the rule
(``reminder.contracts.quality.weak_classes``) flags it. A class the rule flags should find
few of its objects, and one it passes should find most. Prints one JSON object.

    python benchmarks/weak_rule.py --runs runs/thin
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def object_recall(prediction, truth, class_id: int) -> tuple[int, int]:
    """(objects found, objects) of ``class_id`` in one image."""
    import cv2
    import numpy as np

    count, components = cv2.connectedComponents((truth == class_id).astype(np.uint8), connectivity=8)
    near = cv2.dilate((prediction == class_id).astype(np.uint8), np.ones((3, 3), np.uint8))
    found = 0
    for index in range(1, count):
        pixels = components == index
        found += int(near[pixels].mean() >= 0.3)
    return found, count - 1


def measure(run: Path) -> dict:
    import numpy as np
    import torch

    from reminder.contracts.quality import weak_classes
    from reminder.data.transforms import eval_transform
    from reminder.train.checkpoint import load_model
    from reminder.train.config import load_config
    from reminder.train.metrics import ConfusionMatrix
    from reminder.train.run import load_run_data

    config = load_config(run)
    model, meta = load_model(run / "step0")
    model.eval()
    data = load_run_data(config, cache_dir=run / "cache")
    dataset = data.test_dataset(0, eval_transform(None))
    names = meta["classes"]
    matrix, found, objects = ConfusionMatrix(len(names)), np.zeros(len(names)), np.zeros(len(names))
    with torch.inference_mode():
        for index in range(len(dataset)):
            image, labels = dataset[index]
            prediction = model(image[None]).argmax(1)[0]
            matrix.update(prediction[None], labels[None])
            for c in range(1, len(names)):
                hit, total = object_recall(prediction.numpy(), labels.numpy(), c)
                found[c] += hit
                objects[c] += total
    iou = {name: float(v) for name, v in zip(names, matrix.iou())}
    weak = {w["name"] for w in weak_classes(iou)}
    return {name: {"iou": round(100 * iou[name], 1), "object_recall": round(100 * found[c] / max(objects[c], 1), 1),
                   "objects": int(objects[c]), "flagged": name in weak}
            for c, name in enumerate(names) if c > 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=Path("runs/thin"))
    args = parser.parse_args()
    results = {run.name: measure(run) for run in sorted(args.runs.glob("*-s[0-9]*"))
               if (run / "step0" / "metrics.json").is_file()}
    rows = [row for per_class in results.values() for row in per_class.values()]
    flagged = [r for r in rows if r["flagged"]]
    passed = [r for r in rows if not r["flagged"]]
    print(json.dumps({"runs": results, "flagged": len(flagged), "passed": len(passed),
                      "flagged_with_recall_over_50": int(sum(r["object_recall"] > 50 for r in flagged)),
                      "passed_with_recall_under_50": int(sum(r["object_recall"] < 50 for r in passed))},
                     indent=1, default=float))


if __name__ == "__main__":
    main()
