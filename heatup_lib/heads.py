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

Where alpha comes from (``alpha_mode``):

- ``"scheduled"`` (default): a number the training loop sets before every step from the schedule
  (:mod:`heatup_lib.schedules`): constant, the paper's step heat-up, or a smooth one.
- ``"learned"``: one trained scalar, ``alpha = exp(log_alpha)`` (positive by construction),
  initialised at ``alpha`` -- the authors' unused ``learn_norm`` flag, NormFace's learned scale.
- ``"adacos-fixed"``: AdaCos's fixed scale ``sqrt(2) * log(C - 1)`` from the number of classes.
- ``"adacos-dynamic"``: AdaCos's scale recomputed from every training batch, without gradient
  (:func:`heatup_lib.schedules.adacos_dynamic_alpha`), starting from the fixed scale; eval mode
  keeps the last value.
"""


from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checks import check_bool, check_choice, check_float, check_int
from .schedules import adacos_dynamic_alpha, adacos_fixed_alpha

__all__ = ["VARIANTS", "ALPHA_MODES", "TABLE_ROWS", "NormalizedSoftmax", "test_embedding"]

VARIANTS: tuple[str, ...] = ("sm", "ln", "bn")
ALPHA_MODES: tuple[str, ...] = ("scheduled", "learned", "adacos-fixed", "adacos-dynamic")

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
    return check_float("alpha", alpha, 0.0, min_open=True)


class NormalizedSoftmax(nn.Module):
    """Classifier head with inverse temperature ``alpha``: features (N, D) -> logits (N, C)."""

    def __init__(self, embedding_dim: int, num_classes: int, alpha: float = 16.0,
                 variant: str = "ln", bias: bool = False, alpha_mode: str = "scheduled") -> None:
        super().__init__()
        self.embedding_dim = check_int("embedding_dim", embedding_dim, min_value=1)
        self.num_classes = check_int("num_classes", num_classes, min_value=1)
        self.variant = check_choice("variant", variant, VARIANTS)
        self.alpha_mode = check_choice("alpha_mode", alpha_mode, ALPHA_MODES)
        check_bool("bias", bias)
        alpha = _check_alpha(alpha)
        self._alpha = alpha  # the scheduled value; the other modes keep alpha in a parameter or buffer
        if alpha_mode == "learned":
            self.log_alpha = nn.Parameter(torch.tensor(math.log(alpha)))
        elif alpha_mode.startswith("adacos"):
            if num_classes < 2:
                raise ValueError(f"alpha_mode={alpha_mode!r} needs num_classes >= 2, got {num_classes}")
            self.register_buffer("adaptive_alpha", torch.tensor(adacos_fixed_alpha(num_classes)))
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
        """The inverse temperature multiplying the logits now, as a number."""
        scale = self.scale()
        return float(scale.detach()) if isinstance(scale, Tensor) else scale

    @alpha.setter
    def alpha(self, value: float) -> None:
        if self.alpha_mode != "scheduled":
            raise ValueError(f"alpha cannot be set on a head with alpha_mode={self.alpha_mode!r}: "
                             "it is learned or computed; use alpha_mode='scheduled' to set it")
        self._alpha = _check_alpha(value)

    def scale(self) -> Tensor | float:
        """The alpha used in the logits: the scheduled number, ``exp(log_alpha)``, or AdaCos's buffer."""
        if self.alpha_mode == "scheduled":
            return self._alpha
        if self.alpha_mode == "learned":
            return self.log_alpha.exp()
        return self.adaptive_alpha

    def normalize(self, features: Tensor) -> Tensor:
        """The feature the classifier sees (N, D): ``f`` (sm), ``f/||f||`` (ln), ``BN(f)/sqrt(D)`` (bn)."""
        self._check_features(features)
        if self.variant == "ln":
            return F.normalize(features, dim=1)
        if self.variant == "bn":
            return self.bn(features) / math.sqrt(self.embedding_dim)
        return features

    def cosines(self, normalized: Tensor) -> Tensor:
        """``<x, w_m>`` (N, C) for the output ``x`` of :meth:`normalize` (weights normalised unless "sm")."""
        weight = self.weight if self.variant == "sm" else F.normalize(self.weight, dim=1)
        return normalized @ weight.t()

    def classify(self, normalized: Tensor, labels: Tensor | None = None) -> Tensor:
        """Logits (N, C) ``alpha * <x, w_m> (+ b_m)``; ``labels`` feed AdaCos's dynamic scale in training."""
        z = self.cosines(normalized)
        if self.alpha_mode == "adacos-dynamic" and self.training and labels is not None:
            with torch.no_grad():
                self.adaptive_alpha.fill_(adacos_dynamic_alpha(z.float(), labels, self.adaptive_alpha))
        logits = self.scale() * z
        if self.bias is not None:
            logits = logits + self.bias
        return logits

    def forward(self, features: Tensor, labels: Tensor | None = None) -> Tensor:
        """Logits (N, C) for features (N, D) (``labels``: only AdaCos's dynamic scale reads them)."""
        return self.classify(self.normalize(features), labels)

    def embed(self, features: Tensor) -> Tensor:
        """Test-time embedding (N, D), L2-normalised; "bn" normalises with batch statistics in train mode, running ones in eval."""
        self._check_features(features)
        if self.variant == "bn":
            features = self.bn(features)
        return F.normalize(features, dim=1)

    def extra_repr(self) -> str:
        return (f"embedding_dim={self.embedding_dim}, num_classes={self.num_classes}, "
                f"alpha={self.alpha}, variant={self.variant!r}, bias={self.bias is not None}, "
                f"alpha_mode={self.alpha_mode!r}")

    def _check_features(self, features: Tensor) -> None:
        if features.dim() != 2 or features.shape[1] != self.embedding_dim:
            raise ValueError(f"features must have shape (N, {self.embedding_dim}), "
                             f"got {tuple(features.shape)}")


def test_embedding(head: NormalizedSoftmax, features: Tensor) -> Tensor:
    """The L2-normalised test-time embedding (N, D) of ``features`` under ``head``, in eval mode without gradients."""
    was_training = head.training
    head.eval()
    try:
        with torch.no_grad():
            return head.embed(features)
    finally:
        head.train(was_training)


test_embedding.__test__ = False  # not a pytest test, despite its name
