"""The embedding head and classifier of the paper: plain (SM), L2-normalised (LN) and batch-normalised (BN) softmax with temperature.

With ``alpha = 1/T`` the inverse temperature, the three variants compute logits (N, C) from
features ``f`` (N, D) and class weights ``W`` (C, D):

- ``"sm"``: ``alpha * f @ W.T`` -- a plain linear classifier; ``alpha = 1`` is ordinary softmax.
- ``"ln"``: ``alpha * f_hat @ W_hat.T`` with rows L2-normalised -- ``alpha`` times the cosine
  (paper eq. 1).
- ``"bn"``: ``alpha * (BN(f) / sqrt(D)) @ W_hat.T`` -- batch norm with a learnable shift
  ("centre") and no scale, divided by ``sqrt(D)`` (paper eq. 7). The feature is *not* L2-normalised
  during training. The authors' code folds the ``1/sqrt(D)`` into alpha (16 / sqrt(64) = 2); here
  ``alpha`` keeps the same meaning for every variant, so ``alpha=16`` reproduces their ``2`` at D = 64.

``bias=True`` adds a per-class bias *after* the alpha scaling (``alpha * cos + b``), as in the
authors' code; the paper writes ``softmax(alpha * (W^T f + b))``. The default is no bias: pure
cosine logits.

The test-time embedding is always L2-normalised: ``f_hat`` for ``"sm"`` and ``"ln"``, and the
L2-normalised batch-norm output for ``"bn"``.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["VARIANTS", "TABLE_ROWS", "NormalizedSoftmax", "test_embedding"]

VARIANTS: tuple[str, ...] = ("sm", "ln", "bn")

# A row of the paper's tables is a head variant plus whether alpha is heated up during training.
# "ls" is "sm" trained with label smoothing 0.1 in the loss (the head is the same).
TABLE_ROWS: dict[str, tuple[str, bool]] = {
    "sm": ("sm", False),
    "ls": ("sm", False),
    "ln": ("ln", False),
    "bn": ("bn", False),
    "hln": ("ln", True),
    "hbn": ("bn", True),
}


def _check_alpha(alpha: float) -> float:
    """Return ``alpha`` as a float if it is a finite number > 0, else raise ValueError."""
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
    value = float(alpha)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
    return value


class NormalizedSoftmax(nn.Module):
    """Classifier head with inverse temperature ``alpha``: features (N, D) -> logits (N, C)."""

    def __init__(self, embedding_dim: int, num_classes: int, alpha: float = 16.0,
                 variant: str = "ln", bias: bool = False) -> None:
        super().__init__()
        for name, value in (("embedding_dim", embedding_dim), ("num_classes", num_classes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if not isinstance(bias, bool):
            raise ValueError(f"bias must be True or False, got {bias!r}")
        self.embedding_dim = embedding_dim
        self.num_classes = num_classes
        self.variant = variant
        self.alpha = alpha  # validated by the setter
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Linear's default
        if bias:
            self.bias = nn.Parameter(torch.zeros(num_classes))
        else:
            self.register_parameter("bias", None)
        if variant == "bn":
            # Batch norm with a learnable shift and no scale: the scale stays 1 and is not trained.
            self.bn = nn.BatchNorm1d(embedding_dim, affine=True)
            self.bn.weight.requires_grad_(False)
        else:
            self.bn = None

    @property
    def alpha(self) -> float:
        """The inverse temperature multiplying the logits."""
        return self._alpha

    @alpha.setter
    def alpha(self, value: float) -> None:
        self._alpha = _check_alpha(value)

    def normalize(self, features: Tensor) -> Tensor:
        """The feature the classifier sees (N, D): ``f`` (sm), ``f/||f||`` (ln), ``BN(f)/sqrt(D)`` (bn)."""
        self._check_features(features)
        if self.variant == "ln":
            return F.normalize(features, dim=1)
        if self.variant == "bn":
            return self.bn(features) / math.sqrt(self.embedding_dim)
        return features

    def classify(self, normalized: Tensor) -> Tensor:
        """Logits (N, C) from the output of :meth:`normalize`: ``alpha * <x, w_m> (+ b_m)``."""
        weight = self.weight if self.variant == "sm" else F.normalize(self.weight, dim=1)
        logits = self.alpha * (normalized @ weight.t())
        if self.bias is not None:
            logits = logits + self.bias
        return logits

    def forward(self, features: Tensor) -> Tensor:
        """Logits (N, C) for features (N, D)."""
        return self.classify(self.normalize(features))

    def embed(self, features: Tensor) -> Tensor:
        """Test-time embedding (N, D), L2-normalised; for "bn" it uses batch statistics in train mode and running statistics in eval mode."""
        self._check_features(features)
        if self.variant == "bn":
            features = self.bn(features)
        return F.normalize(features, dim=1)

    def extra_repr(self) -> str:
        return (f"embedding_dim={self.embedding_dim}, num_classes={self.num_classes}, "
                f"alpha={self.alpha}, variant={self.variant!r}, bias={self.bias is not None}")

    def _check_features(self, features: Tensor) -> None:
        if features.dim() != 2 or features.shape[1] != self.embedding_dim:
            raise ValueError(f"features must have shape (N, {self.embedding_dim}), "
                             f"got {tuple(features.shape)}")


def test_embedding(head: NormalizedSoftmax, features: Tensor) -> Tensor:
    """The L2-normalised test-time embedding (N, D) of ``features`` under ``head``, computed in eval mode without gradients."""
    was_training = head.training
    head.eval()
    try:
        with torch.no_grad():
            return head.embed(features)
    finally:
        head.train(was_training)


test_embedding.__test__ = False  # not a pytest test, despite its name
