"""DDP on 2 CPU processes (gloo) gives the loss and gradients of one process on the
global batch. Batch norm is frozen here: SyncBatchNorm needs a GPU."""

import copy
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from reminder.models import build_segmenter
from reminder.train.config import resolve_config
from reminder.train.distributed import DistContext
from reminder.train.methods import StepInputs, build_method
from reminder.train.step import ForwardFeatures, compute_terms, freeze, set_train_mode

GLOBAL_BATCH = 4


def _setup():
    torch.manual_seed(0)
    teacher = freeze(build_segmenter("tiny", num_classes=16))
    student = copy.deepcopy(teacher).requires_grad_(True)
    student.add_classes(2)
    set_train_mode(student, freeze_bn=True)
    images = torch.randn(GLOBAL_BATCH, 3, 32, 32)
    labels = torch.zeros(GLOBAL_BATCH, 32, 32, dtype=torch.long)
    labels[0, 4:20, 4:20] = 16  # the first half holds many new pixels...
    labels[1, 0:10, 0:5] = 17
    labels[2, 30:, 30:] = 16    # ...the second half few
    labels[3, 0, :] = 255
    thresholds = torch.full((16,), 0.6)
    prototypes = torch.rand(16, 256)
    config = resolve_config(dataset="synthvoc", root=".", setting="15-5", method="reminder", out=".")
    return student, teacher, images, labels, thresholds, prototypes, build_method("reminder", config)


def _terms(model, core, teacher, images, labels, thresholds, prototypes, method, reduce):
    with torch.inference_mode():
        teacher_out = teacher.forward_features(images)
    inputs = StepInputs(images, labels, model(images), teacher_out, num_old=16, num_seen=18,
                        thresholds=thresholds, old_prototypes=prototypes, reduce=reduce)
    return compute_terms(method, inputs)


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    student, teacher, images, labels, thresholds, prototypes, method = _setup()
    half = slice(rank * GLOBAL_BATCH // 2, (rank + 1) * GLOBAL_BATCH // 2)
    model = torch.nn.parallel.DistributedDataParallel(ForwardFeatures(student))
    context = DistContext(rank, 2, 0)
    terms = _terms(model, student, teacher, images[half], labels[half], thresholds, prototypes, method,
                   context.reduce)
    terms["loss"].backward()
    values = {k: context.all_reduce_sum(v.detach().clone()) / 2 for k, v in terms.items()}
    if rank == 0:
        grads = {n: p.grad for n, p in student.named_parameters() if p.grad is not None}
        torch.save({"terms": values, "grads": grads}, out)
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(300)
def test_ddp_two_processes_match_one_process(tmp_path):
    out = tmp_path / "ddp.pt"
    mp.start_processes(_worker, args=(_free_port(), str(out)), nprocs=2, start_method="spawn", join=True)
    ddp = torch.load(out, weights_only=True)

    student, teacher, images, labels, thresholds, prototypes, method = _setup()
    single = _terms(student.forward_features, student, teacher, images, labels, thresholds, prototypes,
                    method, None)
    single["loss"].backward()
    assert set(ddp["terms"]) == {"loss", "ce", "pod", "csw_kd"}
    for name, value in single.items():
        torch.testing.assert_close(ddp["terms"][name], value.detach(), rtol=1e-4, atol=1e-6)
    assert single["csw_kd"].item() > 0
    for name, parameter in student.named_parameters():
        if parameter.grad is not None:
            torch.testing.assert_close(ddp["grads"][name], parameter.grad, rtol=1e-3, atol=1e-6)
