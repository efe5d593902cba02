"""Data benchmarks: class-index build time, and images/s of the training pipeline.

The pipeline is what a training step waits on: JPEG + PNG decode, the step's label
table, random resized crop, flip and normalisation at ``--crop`` pixels, through a
DataLoader with 0 and ``--workers`` worker processes. Prints one JSON object.

    python benchmarks/data_pipeline.py --images 400 --size 512 --crop 512
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from reminder.data.index import build_class_index
from reminder.data.splits import load_scenario
from reminder.data.synthetic import write_synthvoc
from reminder.data.transforms import train_transform
from reminder.data.voc import voc_samples


def time_index(samples, workers: int, cache: Path) -> dict:
    start = time.perf_counter()
    build_class_index(samples, num_classes=21, cache_dir=cache / f"w{workers}", workers=workers)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    cached = build_class_index(samples, num_classes=21, cache_dir=cache / f"w{workers}", workers=workers)
    assert cached.from_cache
    return {"workers": workers, "masks": len(samples), "cold_s": round(cold, 3),
            "masks_per_s": round(len(samples) / cold, 1), "cached_s": round(time.perf_counter() - start, 4)}


def time_pipeline(dataset, workers: int, batch_size: int, batches: int) -> dict:
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True)
    iterator = iter(loader)
    next(iterator)  # start-up (worker spawn) is not throughput
    start = time.perf_counter()
    seen = 0
    for _ in range(batches):
        images, _ = next(iterator)
        seen += images.shape[0]
    elapsed = time.perf_counter() - start
    return {"workers": workers, "batch_size": batch_size, "images": seen,
            "images_per_s": round(seen / elapsed, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--size", type=int, default=512, help="SynthVOC image side")
    parser.add_argument("--crop", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--root", type=Path, default=None, help="existing SynthVOC/VOC root to reuse")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = args.root or tmp / "synthvoc"
        if args.root is None:
            start = time.perf_counter()
            write_synthvoc(root, images=args.images, size=args.size, seed=0)
            generate_s = time.perf_counter() - start
        else:
            generate_s = None
        samples = voc_samples(root, "train")
        index = [time_index(samples, w, tmp / "cache") for w in sorted({1, args.workers})]
        data = load_scenario("voc", root, "15-1", cache_dir=tmp / "cache" / "scenario")
        dataset = data.train_dataset(0, train_transform(args.crop))
        pipeline = [time_pipeline(dataset, w, args.batch_size, args.batches) for w in sorted({0, args.workers})]
    print(json.dumps({
        "benchmark": "data_pipeline", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch thread(s), "
                   f"{__import__('os').cpu_count()} cores",
        "image_size": args.size, "crop": args.crop,
        "synthvoc_generate_s": None if generate_s is None else round(generate_s, 2),
        "index": index, "pipeline": pipeline}, indent=2))


if __name__ == "__main__":
    main()
