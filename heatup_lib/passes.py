"""Passes over the data without gradients: eval mode for a block, and the two passes ``fit`` runs before training.

Before the first epoch of a new run (SPEC section 5) ``fit`` can run

1. :func:`settle_batch_norm`: one pass in train mode with no optimiser step, so that batch norm's
   running statistics (which eval mode and the test embeddings use) describe the starting network;
2. :func:`class_mean_init`: one pass in eval mode that sets the head's class weights to the
   normalised class means of the features the classifier sees (the SOP recipe).

Both draw their batches from their own random stream, so they change nothing in the training
batches that follow, and both work under several processes (each rank embeds its slice).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import seeding
from .data.batches import BatchSource, to_device
from .distributed import distributed_info, local_slice

__all__ = ["evaluating", "data_pass", "settle_batch_norm", "class_mean_init"]


@contextlib.contextmanager
def evaluating(*modules: nn.Module | None, train: bool = False) -> Iterator[None]:
    """Put ``modules`` in eval mode (train mode with ``train=True``) for a block; restore each one's mode after."""
    kept = [(m, m.training) for m in modules if m is not None]
    for m, _ in kept:
        m.train(train)
    try:
        yield
    finally:
        for m, mode in kept:
            m.train(mode)


def data_pass(net: nn.Module, data: BatchSource, config: Any, stream: int, *, train_mode: bool,
              desc: str, progress: bool = False) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield ``(net(X), y)`` for one epoch of ``data`` on this rank's slices, without gradients.

    The batches come from the random ``stream`` of ``config.seed`` (the global RNG too, restored
    after); ``config`` supplies ``device``, ``seed``, ``amp`` (bf16 autocast, CUDA only) and
    ``channels_last``. ``net`` runs in train mode with ``train_mode`` (batch norm then uses and
    updates batch statistics), else in eval mode.
    """
    device = torch.device(config.device)
    amp = config.amp and device.type == "cuda"
    generator = seeding.epoch_generator(config.seed, 0, stream)
    rank = distributed_info()[0]
    with (evaluating(net, train=train_mode), seeding.seeded_global_rng(config.seed, 0, stream, device),
          torch.no_grad()):
        batches = tqdm(data.epoch(0, generator), total=len(data), desc=desc, leave=False,
                       disable=not progress or rank != 0)
        for X, y in batches:
            X, y = local_slice(X, y)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                features = net(to_device(X, device, config.channels_last))
            yield features.float(), y.to(device)


def settle_batch_norm(net: nn.Module, head: nn.Module, data: BatchSource, config: Any,
                      progress: bool = False) -> None:
    """One pass in train mode with no optimiser step, to settle batch-norm running statistics (SPEC section 5).

    Train-mode forward passes normalise with batch statistics, so settling changes no training
    step: it changes the running statistics that eval mode (the test embeddings) uses.
    """
    with evaluating(head, train=True):
        for features, _ in data_pass(net, data, config, seeding.SETTLE, train_mode=True,
                                     desc="settle batch norm", progress=progress):
            head(features)


def class_mean_init(net: nn.Module, head: nn.Module, data: BatchSource, config: Any,
                    progress: bool = False) -> Tensor:
    """Set the head's class weights to the L2-normalised class means of the features it scores; return the counts per class.

    The means are taken of ``head.normalize(net(X))`` in eval mode, in float64; classes absent
    from the data keep their weights. Under several processes the sums are all-reduced, so every
    rank sets the same weights.
    """
    num_classes, dim = head.weight.shape
    device = torch.device(config.device)
    sums = torch.zeros(num_classes, dim, dtype=torch.float64, device=device)
    counts = torch.zeros(num_classes, dtype=torch.float64, device=device)
    with evaluating(head):
        for features, y in data_pass(net, data, config, seeding.CLASS_MEANS, train_mode=False,
                                     desc="class means", progress=progress):
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
                raise ValueError(f"labels must be in [0, {num_classes - 1}] for a head of {num_classes} "
                                 f"classes, got labels in [{int(y.min())}, {int(y.max())}]")
            with torch.no_grad():
                sums.index_add_(0, y, head.normalize(features).double())
            counts.index_add_(0, y, torch.ones_like(y, dtype=torch.float64))
    if distributed_info()[1] > 1:
        dist.all_reduce(sums)
        dist.all_reduce(counts)
    seen = counts > 0
    with torch.no_grad():
        head.weight[seen] = F.normalize(sums[seen] / counts[seen].unsqueeze(1), dim=1).to(head.weight.dtype)
    return counts.cpu()
