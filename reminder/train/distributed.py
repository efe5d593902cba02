"""Multi-GPU and multi-node training through ``torchrun`` (DDP).

``torchrun --nproc-per-node 4 -m reminder.cli train ...`` sets RANK, WORLD_SIZE and
LOCAL_RANK; :func:`init_distributed` reads them. Rank 0 writes every file; statistics
(entropy histograms, prototypes, confusion matrices) are summed across ranks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum across ranks (returns the input unchanged on one process)."""
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    @property
    def reduce(self):
        return self.all_reduce_sum if self.enabled else None

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def init_distributed(device: torch.device) -> DistContext:
    """Join the process group when launched by torchrun; one process otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank)
