"""Images/s of one training iteration per method and backbone, and REMINDER's step time
over PLOP's (the target is at most 1.05: CSW-KD should cost next to nothing).

Each iteration is the real one (the training engine, ``reminder.train.engine``): the frozen
teacher's forward under inference mode, the student's forward and backward, the
method's loss terms and an SGD step, on random images of ``--size`` pixels with labels
holding new-class pixels. Prints one JSON object.

    python benchmarks/train_speed.py --size 512 --batch-size 2 --backbones mobilenet_v3_large resnet101
    python benchmarks/train_speed.py --device cuda --amp bf16 --batch-size 16 --channels-last   # on a GPU
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time
from datetime import datetime, timezone

import torch

from reminder.models import build_segmenter
from reminder.train.config import resolve_config
from reminder.train.distributed import DistContext
from reminder.train.methods import build_method
from reminder.train.engine import Engine
from reminder.train.step import StepState, forward_terms, freeze, make_optimizer, set_train_mode

METHODS = ("finetune", "mib", "plop", "reminder")


def measure(backbone: str, method_name: str, args, device: torch.device) -> dict:
    torch.manual_seed(0)
    config = resolve_config(dataset="voc", root=".", setting="15-1", method=method_name, out=".",
                            amp=args.amp, channels_last=args.channels_last, backbone=backbone)
    teacher = freeze(build_segmenter(backbone, num_classes=16).to(device))
    student = copy.deepcopy(teacher).requires_grad_(True)
    student.add_classes(1)
    if args.channels_last:
        student = student.to(memory_format=torch.channels_last)
        teacher = teacher.to(memory_format=torch.channels_last)
    set_train_mode(student, freeze_bn=False)
    method = build_method(method_name, config)
    state = StepState(step=1, num_old=16, teacher=teacher, thresholds=torch.full((16,), 0.5, device=device),
                      old_prototypes=torch.rand(16, 256, device=device))
    images = torch.randn(args.batch_size, 3, args.size, args.size)
    labels = torch.zeros(args.batch_size, args.size, args.size, dtype=torch.long)
    labels[:, args.size // 4: args.size // 2, args.size // 4: args.size // 2] = 16
    optimizer = make_optimizer(student, 0.001, config)
    forward = torch.compile(student.forward_features) if args.compile else None  # as --compile trains
    engine = Engine(student, optimizer, lr=0.001, total=args.warmup + args.iterations, lr_power=0.9, step=1)

    def terms_of(batch):
        return forward_terms(student, method, *batch, state, config=config, device=device, dist=DistContext(),
                             forward=forward)

    times = []
    for iteration in range(args.warmup + args.iterations):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        engine.run([(images, labels)], terms_of)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if iteration >= args.warmup:
            times.append(time.perf_counter() - start)
    step_time = sorted(times)[len(times) // 2]
    return {"backbone": backbone, "method": method_name, "step_time_s": round(step_time, 4),
            "images_per_s": round(args.batch_size / step_time, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["mobilenet_v3_large", "resnet101"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile the student's forward.")
    args = parser.parse_args()
    device = torch.device(args.device)
    rows = [measure(b, m, args, device) for b in args.backbones for m in args.methods]
    ratios = {}
    for backbone in args.backbones:
        by_method = {r["method"]: r["step_time_s"] for r in rows if r["backbone"] == backbone}
        if "reminder" in by_method and "plop" in by_method:
            ratios[backbone] = round(by_method["reminder"] / by_method["plop"], 3)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(json.dumps({
        "benchmark": "train_speed", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": f"{device.type}: {name}, {os.cpu_count()} cores, {torch.get_num_threads()} threads",
        "torch": torch.__version__, "size": args.size, "batch_size": args.batch_size, "amp": args.amp,
        "channels_last": args.channels_last, "compile": args.compile, "results": rows,
        "reminder_over_plop_step_time": ratios}, indent=2))


if __name__ == "__main__":
    main()
