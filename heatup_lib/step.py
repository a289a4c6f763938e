"""One optimisation step: the optimiser of a config, the module the steps run, and the step itself.

:func:`heatup_lib.train.fit` runs :func:`train_step` on :func:`training_model`; the benchmarks
(``bench/train_speed.py``) time the same step with each speed-up switched on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .distributed import distributed_info

__all__ = ["make_optimizer", "training_model", "train_step"]

logger = logging.getLogger(__name__)


def make_optimizer(params: Sequence[nn.Parameter], config: Any) -> torch.optim.Optimizer:
    """The optimiser of ``config`` (Adam or SGD with momentum), fused when ``config.fused``."""
    fused = {"fused": True} if config.fused else {}
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, eps=config.adam_eps,
                                weight_decay=config.weight_decay, **fused)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                           weight_decay=config.weight_decay, **fused)


class _NetWithHead(nn.Module):
    """net then head, as one module (so DDP sees one model)."""

    def __init__(self, net: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.net, self.head = net, head

    def forward(self, X: Tensor, y: Tensor | None = None) -> Tensor:
        """Logits (N, C) of inputs X (labels only for a head that adapts its alpha to the batch)."""
        return self.head(self.net(X), y)


def training_model(net: nn.Module, head: nn.Module, config: Any, device: torch.device) -> nn.Module:
    """``head(net(X))`` as one module for the steps: the network compiled per ``config.compile``, in DDP under several processes.

    Only the network is compiled: a scheduled alpha is a Python number that changes, which would
    make a compiled head recompile. ``net`` and ``head`` stay the eager modules that share the
    parameters (checkpoints, passes, evaluation use them).
    """
    if config.compile != "off":
        net = torch.compile(net, mode=config.compile)
    model: nn.Module = _NetWithHead(net, head)
    if distributed_info()[1] > 1:
        if device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            logger.warning("batch norm is not synchronised across CPU processes: each rank normalises its slice")
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    return model


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, X: Tensor, y: Tensor, *, amp: bool = False,
               label_smoothing: float = 0.0, loss_scale: float | None = None) -> tuple[Tensor, Tensor]:
    """One optimisation step on a batch on the device; returns the summed cross-entropy and the logits (detached).

    The loss minimised is ``sum * loss_scale`` (default ``1 / len(y)``, the mean); bf16 autocast
    on CUDA when ``amp``.
    """
    with torch.autocast(X.device.type, dtype=torch.bfloat16, enabled=amp):
        logits = model(X, y)
    loss_sum = F.cross_entropy(logits.float(), y, reduction="sum", label_smoothing=label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    (loss_sum * (1.0 / y.shape[0] if loss_scale is None else loss_scale)).backward()
    optimizer.step()
    return loss_sum.detach(), logits.detach()
