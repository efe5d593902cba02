"""The machinery of a step's data: the device, per-step seeding and the data loaders."""

from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from reminder.errors import ReminderError
from reminder.train.config import TrainConfig
from reminder.train.distributed import DistContext


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ReminderError(f"device {name} was asked for, but CUDA is not available here")
    return device


def seed_everything(seed: int, step: int) -> int:
    value = (seed * 1_000_003 + step) % (2 ** 31)
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)
    return value


def _seed_worker(worker_id: int) -> None:
    value = torch.initial_seed() % (2 ** 32)
    np.random.seed(value)
    random.seed(value)


def make_loader(dataset, *, batch_size: int, train: bool, seed: int, config: TrainConfig,
                dist: DistContext, device: torch.device) -> DataLoader:
    per_rank = max(1, batch_size // dist.world_size)
    sampler = None
    if dist.enabled:
        # evaluation shards without DistributedSampler's padding, so no image is counted twice
        sampler = (DistributedSampler(dataset, dist.world_size, dist.rank, shuffle=True, seed=seed, drop_last=True)
                   if train else range(dist.rank, len(dataset), dist.world_size))
    drop_last = train and len(dataset) >= per_rank * dist.world_size
    return DataLoader(dataset, batch_size=per_rank, shuffle=train and sampler is None, sampler=sampler,
                      num_workers=config.workers, drop_last=drop_last,
                      generator=torch.Generator().manual_seed(seed), worker_init_fn=_seed_worker,
                      pin_memory=device.type == "cuda", persistent_workers=False)
