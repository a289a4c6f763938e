"""Several processes (``torchrun``): which process this is, joining the group, each rank's slice of a batch.

Every rank draws the same global batch and trains on its contiguous slice; only rank 0 writes
records. Without a process group everything here is the single-process case: rank 0 of 1.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["distributed_info", "is_rank0", "launched_world_size", "init_distributed", "local_slice"]


def distributed_info() -> tuple[int, int]:
    """``(rank, world_size)`` of this process: ``(0, 1)`` unless a process group is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_rank0() -> bool:
    """True unless this process is a non-zero rank of an initialised process group."""
    return distributed_info()[0] == 0


def launched_world_size() -> int:
    """The number of processes ``torchrun`` started (its ``WORLD_SIZE``; 1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(backend: str | None = None) -> tuple[int, int, torch.device]:
    """Join the group ``torchrun`` describes (NCCL on GPUs, gloo on CPU); ``(0, 1, device)`` without torchrun."""
    cuda = torch.cuda.is_available()
    if launched_world_size() <= 1:
        return 0, 1, torch.device("cuda" if cuda else "cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if cuda else "gloo"))
    return dist.get_rank(), dist.get_world_size(), device


def local_slice(X: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """This rank's contiguous share of a global batch (the whole batch in one process)."""
    rank, world_size = distributed_info()
    if world_size == 1:
        return X, y
    return X.tensor_split(world_size)[rank], y.tensor_split(world_size)[rank]
