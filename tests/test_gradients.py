"""Tests of heatup_lib.gradients: closed form against autograd and hand-worked cases, and its limits in alpha."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from heatup_lib.gradients import (
    PEAK_X, gradient_norm, gradient_norm_autograd, gradient_share, head_gradient_norm, make_cosines, margin,
    regime, sample_cosines, two_class_gradient_norm, two_class_peak_alpha, weights_and_features,
)
from heatup_lib.heads import NormalizedSoftmax

ALPHAS = torch.logspace(-2, 2.3, 25, dtype=torch.float64)  # 0.01 .. 200


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    # float64: relative 1e-10 on O(1) values; absolute 1e-12 where autograd's p_y - 1 rounds (p_y ~ 1)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("wrt", ["f_hat", "f"])
@pytest.mark.parametrize("num_classes", [2, 10, 98])
def test_closed_form_equals_autograd_for_given_cosines(num_classes: int, wrt: str) -> None:
    z, y = sample_cosines(40, num_classes, seed=num_classes)
    closed = gradient_norm(z, y, ALPHAS, wrt=wrt, feature_norm=2.5)
    assert closed.shape == (40, len(ALPHAS)) and closed.dtype == torch.float64
    _close(closed, gradient_norm_autograd(z, y, ALPHAS, wrt=wrt, feature_norm=2.5))


@pytest.mark.parametrize("wrt", ["f_hat", "f"])
@pytest.mark.parametrize("num_classes", [2, 10, 98])
def test_closed_form_with_gram_equals_autograd_on_random_weights(num_classes: int, wrt: str) -> None:
    """Random (non-orthogonal, D < K allowed) weights and features: cosines and Gram matrix in, autograd through the head out."""
    g = torch.Generator().manual_seed(100 + num_classes)
    dim = 16
    head = NormalizedSoftmax(dim, num_classes, variant="ln").double()
    with torch.no_grad():
        head.weight.copy_(torch.randn(num_classes, dim, generator=g, dtype=torch.float64))
    X = 3.0 * torch.randn(30, dim, generator=g, dtype=torch.float64)
    y = torch.randint(num_classes, (30,), generator=g)
    W_hat, X_hat = F.normalize(head.weight.detach(), dim=1), F.normalize(X, dim=1)
    cosines, gram = X_hat @ W_hat.T, W_hat @ W_hat.T
    by_autograd = head_gradient_norm(head, X, y, ALPHAS, wrt=wrt)
    norms = X.norm(dim=1)
    for n in range(len(X)):  # each sample has its own feature norm
        closed = gradient_norm(cosines[n], y[n], ALPHAS, gram=gram, wrt=wrt, feature_norm=norms[n].item())
        _close(closed, by_autograd[n])
    assert head.alpha == 16.0  # restored


def test_constructed_weights_and_features_have_the_given_cosines() -> None:
    z = 0.5 * sample_cosines(20, 7, seed=3)[0]  # realisable with the correlated weights below
    c = 0.3
    gram = torch.full((7, 7), c, dtype=torch.float64).fill_diagonal_(1.0)
    W, X = weights_and_features(z, gram, feature_norm=4.0)
    assert W.shape == (7, 8) and X.shape == (20, 8)
    torch.testing.assert_close(W @ W.T, gram, rtol=0, atol=1e-12)
    torch.testing.assert_close(X.norm(dim=1), torch.full((20,), 4.0, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(F.normalize(X, dim=1) @ W.T, z, rtol=0, atol=1e-12)


def test_hand_worked_three_class_case() -> None:
    z, alpha = np.array([0.6, 0.2, -0.1]), 2.0
    p = np.exp(alpha * z) / np.exp(alpha * z).sum()
    r = p - np.array([1.0, 0.0, 0.0])
    expected_hat = alpha * np.linalg.norm(r)                              # orthonormal weights
    expected_f = alpha * math.sqrt(r @ r - (r @ z) ** 2) / 3.0            # ||f|| = 3
    assert math.isclose(gradient_norm(z, 0, alpha).item(), expected_hat, rel_tol=1e-13)
    assert math.isclose(gradient_norm(z, 0, alpha, wrt="f", feature_norm=3.0).item(), expected_f, rel_tol=1e-13)


def test_two_class_formula_matches_general_form() -> None:
    own = torch.tensor([0.8, 0.5, 0.3, 0.1], dtype=torch.float64)
    other = torch.tensor([0.1, 0.5, 0.6, -0.2], dtype=torch.float64)
    for c in (0.0, -0.5, 0.4):
        gram = torch.tensor([[1.0, c], [c, 1.0]], dtype=torch.float64)
        z = torch.stack([own, other], dim=1)
        for wrt in ("f_hat", "f"):
            general = gradient_norm(z, torch.zeros(4, dtype=torch.long), ALPHAS, gram=gram, wrt=wrt)
            two = two_class_gradient_norm(own[:, None], other[:, None], ALPHAS[None, :], weight_cosine=c, wrt=wrt)
            torch.testing.assert_close(general, two, rtol=1e-12, atol=1e-300)


def test_two_class_peak() -> None:
    assert abs((PEAK_X - 1.0) * math.exp(PEAK_X) - 1.0) < 1e-14
    for m in (0.05, 0.16, 0.4):
        peak = two_class_peak_alpha(m)
        f = lambda a: two_class_gradient_norm(0.5 + m, 0.5, a).item()
        assert f(peak) > f(peak * 0.99) and f(peak) > f(peak * 1.01)
    assert math.isclose(two_class_peak_alpha(0.16), 7.99, rel_tol=1e-3)
    assert two_class_peak_alpha(0.0) == math.inf and two_class_peak_alpha(-0.1) == math.inf


@pytest.mark.parametrize("num_classes", [2, 10, 98])
def test_limits_in_alpha(num_classes: int) -> None:
    mis = make_cosines(0.3, 0.5, num_classes)
    well = make_cosines(0.5, 0.1, num_classes)
    # alpha -> 0: the gradient vanishes for every sample, linearly
    tiny = torch.tensor([1e-6, 1e-8], dtype=torch.float64)
    for z in (mis, well):
        n = gradient_norm(z, 0, tiny)
        assert n[0] < 1e-5 and math.isclose(n[0] / n[1], 100.0, rel_tol=1e-3)
    # misclassified: grows with alpha, towards the slope ||w_other - w_y|| = sqrt(2)
    a = torch.linspace(0.1, 500, 200, dtype=torch.float64)
    n_mis = gradient_norm(mis, 0, a)
    assert torch.all(torch.diff(n_mis) > 0)
    assert math.isclose(n_mis[-1].item() / 500.0, math.sqrt(2), rel_tol=1e-6)
    # well-classified: rises, peaks, then decays to 0
    n_well = gradient_norm(well, 0, a)
    k = int(n_well.argmax())
    assert 0 < k < len(a) - 1
    assert torch.all(torch.diff(n_well[k:]) < 0) and n_well[-1] < 1e-30


def test_well_classified_realistic_sample_peaks_near_8() -> None:
    a = torch.linspace(0.05, 64, 4000, dtype=torch.float64)
    n = gradient_norm(make_cosines(0.5, 0.1, 98), 0, a)
    assert 6.0 < a[n.argmax()].item() < 9.0


def test_gram_shift_only_rescales() -> None:
    """p - q sums to 0, so G = a I + b 11^T gives sqrt(a) times the orthonormal curve (e.g. the simplex)."""
    k = 10
    z, y = sample_cosines(15, k, seed=5)
    simplex = (k / (k - 1)) * torch.eye(k, dtype=torch.float64) - torch.ones(k, k, dtype=torch.float64) / (k - 1)
    torch.testing.assert_close(gradient_norm(z, y, ALPHAS, gram=simplex),
                               math.sqrt(k / (k - 1)) * gradient_norm(z, y, ALPHAS), rtol=1e-12, atol=1e-300)


def test_shapes_and_chunking() -> None:
    z, y = sample_cosines(300, 98, seed=0)
    many = torch.linspace(0.1, 100, 200, dtype=torch.float64)
    full = gradient_norm(z, y, many)  # 300 * 200 * 98 entries: several chunks
    assert full.shape == (300, 200)
    torch.testing.assert_close(full[17], gradient_norm(z[17], int(y[17]), many), rtol=0, atol=0)
    assert gradient_norm(z[0], int(y[0]), 4.0).dim() == 0
    assert gradient_norm(z, y, 4.0).shape == (300,)


def test_share_and_regimes() -> None:
    z = torch.stack([make_cosines(0.3, 0.5, 10), make_cosines(0.45, 0.4, 10), make_cosines(0.5, 0.1, 10)])
    y = torch.zeros(3, dtype=torch.long)
    assert regime(z, y) == ["misclassified", "boundary", "well-classified"]
    assert regime(z[1], 0, boundary_margin=0.01) == "well-classified"
    torch.testing.assert_close(margin(z, y), torch.tensor([-0.2, 0.05, 0.4], dtype=torch.float64))
    s = gradient_share(gradient_norm(z, y, torch.tensor([0.25, 64.0], dtype=torch.float64)))
    torch.testing.assert_close(s.sum(0), torch.ones(2, dtype=torch.float64))
    assert s[:, 0].max() / s[:, 0].min() < 1.1            # small alpha: about equal shares
    assert s[0, 1] > 0.95 and s[1, 1] > 1e6 * s[2, 1]     # large alpha: misclassified >> boundary >> well-classified


def test_sample_cosines_is_seeded_and_valid() -> None:
    z1, y1 = sample_cosines(100, 10, seed=4)
    z2, y2 = sample_cosines(100, 10, seed=4)
    assert torch.equal(z1, z2) and torch.equal(y1, y2)
    assert not torch.equal(z1, sample_cosines(100, 10, seed=5)[0])
    assert (z1.pow(2).sum(1) <= 1 + 1e-12).all()          # realisable with orthonormal weights
    assert (margin(z1, y1) < 0).any() and (margin(z1, y1) > 0.1).any()


@pytest.mark.parametrize("call, message", [
    (lambda: gradient_norm([0.5, 0.1], 2, 1.0), r"labels must be in \[0, 1\], got \[2\]"),
    (lambda: gradient_norm([0.5, 0.1], 0, -1.0), r"alphas must be >= 0"),
    (lambda: gradient_norm([1.5, 0.1], 0, 1.0), r"cosines must lie in \[-1, 1\]"),
    (lambda: gradient_norm([0.5, 0.1], 0, 1.0, wrt="w"), r"wrt must be one of \('f_hat', 'f'\), got 'w'"),
    (lambda: gradient_norm([0.5, 0.1], 0, 1.0, gram=torch.eye(3)), r"gram must have shape \(2, 2\)"),
    (lambda: gradient_norm([0.5, 0.1], 0, 1.0, feature_norm=0.0), r"feature_norm must be a finite number > 0, got 0.0"),
    (lambda: weights_and_features(torch.tensor([[0.9, 0.9]])), r"not realisable.*got 1.62"),
    (lambda: gradient_share(torch.zeros(3, 1)), r"positive total"),
])
def test_bad_inputs_raise(call, message) -> None:
    with pytest.raises(ValueError, match=message):
        call()
