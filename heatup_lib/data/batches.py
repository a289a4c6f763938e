"""Batch sources, what the training loop consumes: the protocol, and mini-batches of in-memory tensors.

A batch source has a number of batches per epoch, a ``batch_size``, and the batches of an epoch in
an order that depends only on the generator ``train.fit`` seeds from ``(seed, epoch)``, so that a
resumed run sees exactly the batches an uninterrupted one would. :class:`TensorBatches` serves
tensors in memory (MNIST); :class:`heatup_lib.data.augment.CachedBatches` serves the image cache.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import torch
from torch import Tensor

from ..checks import check_bool, check_int
from ..fingerprint import describe_callable, tensor_bytes

__all__ = ["BatchSource", "TensorBatches", "describe_batches", "to_device"]


class BatchSource(Protocol):
    """What ``fit`` consumes. Optionally ``describe() -> dict``: JSON data that identifies the data."""

    batch_size: int

    def __len__(self) -> int:
        """Batches per epoch."""
        ...

    def epoch(self, epoch: int, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
        """The batches ``(X, y)`` of ``epoch``; the order depends only on ``generator``."""
        ...


def describe_batches(data: Any) -> dict[str, Any]:
    """What identifies a batch source in a run's parameters: its ``describe()``, else class and length."""
    if hasattr(data, "describe"):
        return data.describe()
    cls = type(data)
    return {"class": f"{cls.__module__}.{cls.__qualname__}", "num_batches": len(data),
            "batch_size": getattr(data, "batch_size", None)}


def to_device(X: Tensor, device: torch.device, channels_last: bool = False) -> Tensor:
    """A batch on ``device``, in channels-last memory format when asked and 4-d."""
    X = X.to(device, non_blocking=True)
    if channels_last and X.dim() == 4:
        X = X.contiguous(memory_format=torch.channels_last)
    return X


class TensorBatches:
    """Mini-batches of in-memory tensors ``X`` (N, ...) and ``y`` (N,), shuffled by the epoch's generator.

    ``transform`` (optional) maps a batch ``X`` to the network's input (e.g. uint8 -> float); it
    runs on ``X``'s device, so data kept on the GPU stays there.
    """

    def __init__(self, X: Tensor, y: Tensor, batch_size: int, shuffle: bool = True,
                 drop_last: bool = True, transform: Callable[[Tensor], Tensor] | None = None) -> None:
        if not isinstance(X, Tensor) or not isinstance(y, Tensor):
            raise ValueError(f"X and y must be tensors, got {type(X).__name__} and {type(y).__name__}")
        if y.dim() != 1 or X.shape[0] != y.shape[0]:
            raise ValueError(f"need X (N, ...) and y (N,) with the same N, got X {tuple(X.shape)} "
                             f"and y {tuple(y.shape)}")
        if X.shape[0] == 0:
            raise ValueError("X and y hold no samples")
        self.batch_size = check_int("batch_size", batch_size, min_value=1)
        self.shuffle, self.drop_last = check_bool("shuffle", shuffle), check_bool("drop_last", drop_last)
        if drop_last and batch_size > X.shape[0]:
            raise ValueError(f"batch_size={batch_size} is larger than the {X.shape[0]} samples "
                             "(with drop_last=True there would be no batch)")
        self.X, self.y, self.transform = X, y, transform
        self._description: dict[str, Any] | None = None

    def __len__(self) -> int:
        """Batches per epoch."""
        n = self.X.shape[0]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def epoch(self, epoch: int, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
        """The batches ``(X, y)`` of one epoch, in the order the generator draws."""
        n = self.X.shape[0]
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        order = order.to(self.X.device)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            X = self.X[idx]
            yield (self.transform(X) if self.transform is not None else X), self.y[idx]

    def describe(self) -> dict[str, Any]:
        """What determines the batches (shapes, options, SHA-256 of the data): part of a run's parameters."""
        if self._description is None:
            digest = hashlib.sha256()
            for t in (self.X, self.y):
                digest.update(tensor_bytes(t))
            self._description = {
                "class": "TensorBatches", "num_samples": int(self.X.shape[0]),
                "sample_shape": list(self.X.shape[1:]), "dtype": str(self.X.dtype),
                "batch_size": self.batch_size, "shuffle": self.shuffle, "drop_last": self.drop_last,
                "transform": describe_callable(self.transform), "sha256": digest.hexdigest(),
            }
        return dict(self._description)
