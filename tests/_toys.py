"""Toy problems and small models shared by the training tests."""

from __future__ import annotations

import torch
from torch import nn

from heatup_lib.heads import NormalizedSoftmax


def blobs(n: int = 96, num_classes: int = 4, dim: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian blobs: a learnable toy problem."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % num_classes
    centres = torch.randn(num_classes, dim, generator=g) * 3
    return centres[y] + torch.randn(n, dim, generator=g), y


def make_mlp(seed: int = 0, dim: int = 8, emb: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(dim, 16), nn.ReLU(), nn.Linear(16, emb))


def make_head(seed: int = 1, emb: int = 3, num_classes: int = 4, variant: str = "ln") -> NormalizedSoftmax:
    torch.manual_seed(seed)
    return NormalizedSoftmax(emb, num_classes, alpha=16.0, variant=variant)


def state_of(net: nn.Module, head: nn.Module) -> dict[str, torch.Tensor]:
    return {**{f"net.{k}": v for k, v in net.state_dict().items()}, **{f"head.{k}": v for k, v in head.state_dict().items()}}
