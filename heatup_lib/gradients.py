r"""How much gradient a sample gets as a function of alpha: the closed form of ||dL/d f_hat|| from its cosines, and an autograd check through :class:`NormalizedSoftmax`.

A sample is described by its cosines ``z`` (K,) to the unit class weights ``w_m`` and its label
``y``. With logits ``alpha * z``, ``p = softmax(alpha * z)`` and ``q`` the one-hot target, paper
eq. 3 gives ``g = dL/d f_hat = alpha * sum_m (p_m - q_m) w_m``, so

    ||g||^2 = alpha^2 (p - q)^T G (p - q),        G = W W^T  (the Gram matrix of the unit weights).

The cosines alone do not fix ``||g||``: the geometry of the class weights enters through ``G``.
``gram=None`` assumes orthonormal class weights (``G = I``, possible when K <= D), where
``||g|| = alpha ||p - q||``. Because ``p - q`` sums to 0, any ``G = a I + b 11^T`` (for example the
regular simplex, ``a = K/(K-1)``) gives the same curve times ``sqrt(a)``.

Through the normalisation ``f_hat = f / ||f||`` (eqs. 5-6), ``dL/df = (I - f_hat f_hat^T) g / ||f||``:
the projection removes the radial part ``f_hat . g = alpha (p - q) . z``, so

    ||dL/df||^2 = alpha^2 [(p - q)^T G (p - q) - ((p - q) . z)^2] / ||f||^2.

Two classes (label first): with margin ``m = z_y - z_other`` and ``c = <w_y, w_other>``,
``p - q = sigma(-alpha m) (-1, 1)`` and

    ||g|| = alpha sqrt(2 (1 - c)) / (1 + exp(alpha m)),

which grows without bound (slope ``sqrt(2(1-c))``) when ``m < 0``, with half that slope at ``m = 0``,
and for ``m > 0`` peaks at ``alpha* = x*/m`` with ``(x* - 1) e^{x*} = 1``, ``x* = 1 + W(1/e) ~ 1.2785``,
then decays like ``alpha e^{-alpha m}``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .heads import NormalizedSoftmax

__all__ = [
    "WRT", "REGIMES", "PEAK_X", "gradient_norm", "gradient_norm_autograd", "head_gradient_norm",
    "two_class_gradient_norm", "two_class_peak_alpha", "weights_and_features", "make_cosines",
    "sample_cosines", "margin", "regime", "gradient_share",
]

WRT: tuple[str, ...] = ("f_hat", "f")
REGIMES: tuple[str, ...] = ("misclassified", "boundary", "well-classified")

# x* = 1 + W(1/e), the root of (x - 1) e^x = 1 (W: Lambert's W function, principal branch).
PEAK_X: float = 1.2784645427610738

_CHUNK_ELEMENTS = 1 << 22  # samples are processed in chunks of about this many (sample, alpha, class) entries


def _as_float64(name: str, value, ndim: Sequence[int]) -> Tensor:
    t = torch.as_tensor(value, dtype=torch.float64).detach().cpu()
    if t.dim() not in ndim:
        raise ValueError(f"{name} must have {' or '.join(str(n) for n in ndim)} dimension(s), got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite, got {value!r}")
    return t


def _inputs(cosines, labels, alphas) -> tuple[Tensor, Tensor, Tensor, bool, bool]:
    """Cosines (N, K), labels (N,), alphas (A,) as float64/int64 tensors, plus whether to squeeze N and A."""
    z = _as_float64("cosines", cosines, (1, 2))
    single = z.dim() == 1
    z = z.reshape(1, -1) if single else z
    n, k = z.shape
    if k < 2:
        raise ValueError(f"cosines need at least 2 classes, got shape {tuple(z.shape)}")
    if (z.abs() > 1 + 1e-9).any():
        raise ValueError(f"cosines must lie in [-1, 1], got values up to {z.abs().max().item():.4g} in absolute value")
    y = torch.as_tensor(labels).detach().cpu().reshape(-1)
    if y.dtype.is_floating_point or y.dtype == torch.bool or y.numel() != n:
        raise ValueError(f"labels must be {n} integer class index(es), got {labels!r}")
    y = y.long()
    if ((y < 0) | (y >= k)).any():
        raise ValueError(f"labels must be in [0, {k - 1}], got {y.tolist()}")
    a = _as_float64("alphas", alphas, (0, 1))
    scalar_alpha = a.dim() == 0
    a = a.reshape(-1)
    if (a < 0).any():
        raise ValueError(f"alphas must be >= 0, got {a.min().item()}")
    return z, y, a, single, scalar_alpha


def _gram(gram, k: int) -> Tensor | None:
    if gram is None:
        return None
    G = _as_float64("gram", gram, (2,))
    if G.shape != (k, k):
        raise ValueError(f"gram must have shape ({k}, {k}) for {k} classes, got {tuple(G.shape)}")
    if not torch.allclose(G, G.t(), atol=1e-10) or not torch.allclose(G.diagonal(), torch.ones(k, dtype=G.dtype), atol=1e-10):
        raise ValueError("gram must be symmetric with unit diagonal (the Gram matrix of unit class weights)")
    return G


def _check_wrt(wrt: str) -> None:
    if wrt not in WRT:
        raise ValueError(f"wrt must be one of {WRT}, got {wrt!r}")


def _check_feature_norm(feature_norm: float) -> float:
    if isinstance(feature_norm, bool) or not isinstance(feature_norm, numbers.Real) or not 0 < feature_norm < math.inf:
        raise ValueError(f"feature_norm must be a finite number > 0, got {feature_norm!r}")
    return float(feature_norm)


def _shape_out(out: Tensor, single: bool, scalar_alpha: bool) -> Tensor:
    if scalar_alpha:
        out = out[:, 0]
    return out[0] if single else out


def gradient_norm(cosines, labels, alphas, gram=None, wrt: str = "f_hat", feature_norm: float = 1.0) -> Tensor:
    """Closed-form ||dL/d f_hat|| (or ||dL/df|| with ``wrt="f"``) for cosines (N, K) or (K,), labels (N,) or int, alphas (A,) -> (N, A) float64."""
    _check_wrt(wrt)
    feature_norm = _check_feature_norm(feature_norm)
    z, y, a, single, scalar_alpha = _inputs(cosines, labels, alphas)
    n, k = z.shape
    G = _gram(gram, k)
    out = torch.empty(n, a.numel(), dtype=torch.float64)
    step = max(1, _CHUNK_ELEMENTS // max(1, a.numel() * k))
    for lo in range(0, n, step):
        zc, yc = z[lo:lo + step], y[lo:lo + step]
        r = torch.softmax(a[None, :, None] * zc[:, None, :], dim=-1)        # p, (n, A, K)
        idx = torch.arange(len(yc))
        # p - q; p_y - 1 is written as -sum_{m != y} p_m, which keeps its precision when p_y ~ 1
        r[idx, :, yc] = 0.0
        r[idx, :, yc] = -r.sum(-1)[idx]
        sq = (r * r).sum(-1) if G is None else torch.einsum("nak,kl,nal->na", r, G, r)
        if wrt == "f":
            sq = sq - (r * zc[:, None, :]).sum(-1) ** 2                    # remove the radial part
        out[lo:lo + step] = a * sq.clamp_min(0.0).sqrt()
    if wrt == "f":
        out /= feature_norm
    return _shape_out(out, single, scalar_alpha)


def two_class_gradient_norm(cosine_own, cosine_other, alphas, weight_cosine: float = 0.0, wrt: str = "f_hat",
                            feature_norm: float = 1.0) -> Tensor:
    """Two-class closed form ``alpha sqrt(2(1-c)) / (1 + exp(alpha m))`` with margin m = own - other; broadcasts like torch."""
    _check_wrt(wrt)
    feature_norm = _check_feature_norm(feature_norm)
    c = float(weight_cosine)
    if not -1 <= c <= 1:
        raise ValueError(f"weight_cosine must be in [-1, 1], got {weight_cosine!r}")
    own = torch.as_tensor(cosine_own, dtype=torch.float64)
    other = torch.as_tensor(cosine_other, dtype=torch.float64)
    a = torch.as_tensor(alphas, dtype=torch.float64)
    m = own - other
    sq = 2.0 * (1.0 - c) - (m * m if wrt == "f" else 0.0)
    scale = torch.as_tensor(sq, dtype=torch.float64).clamp_min(0.0).sqrt()
    out = a * torch.sigmoid(-a * m) * scale
    return out / feature_norm if wrt == "f" else out


def two_class_peak_alpha(margin_value: float) -> float:
    """The alpha at which a two-class sample with margin ``z_y - z_other`` gets most gradient: ``PEAK_X / margin``, inf if the margin is <= 0."""
    m = float(margin_value)
    return PEAK_X / m if m > 0 else math.inf


def weights_and_features(cosines, gram=None, feature_norm: float = 1.0) -> tuple[Tensor, Tensor]:
    """Unit class weights (K, K+1) with Gram matrix ``gram`` (default I) and features (N, K+1) of norm ``feature_norm`` whose cosines to them are ``cosines`` (N, K)."""
    feature_norm = _check_feature_norm(feature_norm)
    z = _as_float64("cosines", cosines, (2,))
    n, k = z.shape
    G = _gram(gram, k)
    if G is None:
        L = torch.eye(k, dtype=torch.float64)
    else:
        L, info = torch.linalg.cholesky_ex(G)
        if info.item() != 0:
            raise ValueError("gram must be positive definite to build weights and features from cosines")
    # W = [L, 0]: row m is w_m, so W W^T = L L^T = G. A feature (a, b) has cosines W f = L a = z.
    weights = torch.cat([L, torch.zeros(k, 1, dtype=torch.float64)], dim=1)
    a = torch.linalg.solve_triangular(L, z.t(), upper=False).t()           # (N, K)
    rest = 1.0 - (a * a).sum(1)                                            # the squared part off the weights' span
    if (rest < -1e-9).any():
        worst = (1.0 - rest).max().item()
        raise ValueError(f"cosines are not realisable with these class weights: z^T G^-1 z must be <= 1, got {worst:.6g}")
    features = torch.cat([a, rest.clamp_min(0.0).sqrt()[:, None]], dim=1) * feature_norm
    return weights, features


def head_gradient_norm(head: NormalizedSoftmax, features: Tensor, labels, alphas, wrt: str = "f_hat") -> Tensor:
    """Autograd norms (N, A) of dL/d(head.normalize(f)) (``wrt="f_hat"``) or dL/df (``wrt="f"``) of the cross-entropy through ``head``, one backward per alpha."""
    _check_wrt(wrt)
    if wrt == "f" and head.variant == "bn" and head.training:
        raise ValueError("wrt='f' through a 'bn' head in training mode couples the samples of a batch; call head.eval() first")
    y = torch.as_tensor(labels, device=features.device).reshape(-1).long()
    a = torch.as_tensor(alphas, dtype=torch.float64).reshape(-1)
    old_alpha = head.alpha
    out = torch.empty(features.shape[0], a.numel(), dtype=torch.float64)
    try:
        for j, alpha in enumerate(a.tolist()):
            head.alpha = alpha
            if wrt == "f":
                x = features.detach().clone().requires_grad_(True)
                logits = head(x)
            else:
                x = head.normalize(features).detach().requires_grad_(True)
                logits = head.classify(x)
            # Samples are independent here, so the gradient of the summed loss holds each sample's own gradient.
            (grad,) = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), x)
            out[:, j] = grad.norm(dim=1).to(torch.float64).cpu()
    finally:
        head.alpha = old_alpha
    return out


def gradient_norm_autograd(cosines, labels, alphas, gram=None, wrt: str = "f_hat", feature_norm: float = 1.0) -> Tensor:
    """:func:`gradient_norm` by autograd: builds weights and features with the given cosines and differentiates a float64 "ln" :class:`NormalizedSoftmax`."""
    _check_wrt(wrt)
    z, y, a, single, scalar_alpha = _inputs(cosines, labels, alphas)
    if (a <= 0).any():
        raise ValueError(f"alphas must be > 0 for the head, got {a.min().item()}")
    weights, features = weights_and_features(z, gram, feature_norm)
    k = z.shape[1]
    head = NormalizedSoftmax(k + 1, k, variant="ln").double()
    with torch.no_grad():
        head.weight.copy_(weights)
    out = head_gradient_norm(head, features, y, a, wrt)
    return _shape_out(out, single, scalar_alpha)


def make_cosines(own: float, other: float, num_classes: int, rest: float = 0.0) -> Tensor:
    """Cosines (num_classes,) of a sample of class 0: ``own`` to its class, ``other`` to class 1, ``rest`` to the others."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    z = torch.full((num_classes,), float(rest), dtype=torch.float64)
    z[0], z[1] = float(own), float(other)
    return z


def sample_cosines(num_samples: int, num_classes: int, seed: int = 0,
                   noise: tuple[float, float] = (0.05, 0.5)) -> tuple[Tensor, Tensor]:
    """Cosines (N, K) and labels (N,) of features ``normalise(w_y + sigma n)`` around orthonormal class weights, n ~ N(0, I_{K+1}), sigma log-uniform in ``noise``."""
    for name, v, lo in (("num_samples", num_samples, 1), ("num_classes", num_classes, 2)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    lo_s, hi_s = (float(s) for s in noise)
    if not 0 < lo_s <= hi_s < math.inf:
        raise ValueError(f"noise must be (low, high) with 0 < low <= high, got {noise!r}")
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(num_classes, (num_samples,), generator=g)
    sigma = torch.exp(math.log(lo_s) + (math.log(hi_s) - math.log(lo_s)) * torch.rand(num_samples, generator=g, dtype=torch.float64))
    f = sigma[:, None] * torch.randn(num_samples, num_classes + 1, generator=g, dtype=torch.float64)
    f[torch.arange(num_samples), labels] += 1.0
    f = F.normalize(f, dim=1)
    return f[:, :num_classes].contiguous(), labels


def margin(cosines, labels) -> Tensor:
    """The cosine margin ``z_y - max_{m != y} z_m`` (N,) or scalar: negative for a misclassified sample."""
    z, y, _, single, _ = _inputs(cosines, labels, 1.0)
    own = z[torch.arange(len(y)), y]
    others = z.clone()
    others[torch.arange(len(y)), y] = -math.inf
    m = own - others.max(dim=1).values
    return m[0] if single else m


def regime(cosines, labels, boundary_margin: float = 0.1) -> str | list[str]:
    """The regime of each sample: misclassified (margin < 0), boundary (0 <= margin < boundary_margin) or well-classified."""
    if not 0 <= float(boundary_margin) <= 2:
        raise ValueError(f"boundary_margin must be in [0, 2], got {boundary_margin!r}")
    m = margin(cosines, labels)
    names = [REGIMES[0] if v < 0 else REGIMES[1] if v < boundary_margin else REGIMES[2] for v in m.reshape(-1).tolist()]
    return names[0] if m.dim() == 0 else names


def gradient_share(norms: Tensor) -> Tensor:
    """Each sample's share of the total gradient norm at each alpha: ``norms / norms.sum(0)`` for norms (N, A)."""
    norms = torch.as_tensor(norms, dtype=torch.float64)
    total = norms.sum(0, keepdim=True)
    if (total <= 0).any():
        raise ValueError("gradient_share needs a positive total norm at every alpha (alpha = 0 gives none)")
    return norms / total
