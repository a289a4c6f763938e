"""Tests of heatup_lib.heads against independent float64 computations in numpy and finite differences."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from heatup_lib.heads import TABLE_ROWS, VARIANTS, NormalizedSoftmax, test_embedding

N, D, C = 7, 5, 4


def _head(variant: str, alpha: float = 3.0, bias: bool = False, seed: int = 0) -> NormalizedSoftmax:
    torch.manual_seed(seed)
    head = NormalizedSoftmax(D, C, alpha=alpha, variant=variant, bias=bias).double()
    if bias:
        with torch.no_grad():
            head.bias.copy_(torch.randn(C, dtype=torch.float64))
    if variant == "bn":
        with torch.no_grad():
            head.bn.bias.copy_(torch.randn(D, dtype=torch.float64))
    return head


def _features(seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(N, D, generator=g, dtype=torch.float64) * 3 + 0.5)


def _unit_rows(a: np.ndarray) -> np.ndarray:
    return a / np.sqrt((a * a).sum(axis=1, keepdims=True))


def _reference_logits(head: NormalizedSoftmax, X: np.ndarray) -> np.ndarray:
    """Logits from the paper's formulas, written out in numpy (float64)."""
    W = head.weight.detach().numpy()
    if head.variant == "sm":
        z = X @ W.T
    elif head.variant == "ln":
        z = _unit_rows(X) @ _unit_rows(W).T
    else:  # eq. 7: (x - mean) / sqrt(var + eps) + shift, over the batch, divided by sqrt(D)
        mean = X.mean(axis=0)
        var = ((X - mean) ** 2).mean(axis=0)  # biased variance, as batch norm uses in training
        bn = (X - mean) / np.sqrt(var + head.bn.eps) + head.bn.bias.detach().numpy()
        z = (bn / math.sqrt(D)) @ _unit_rows(W).T
    logits = head.alpha * z
    if head.bias is not None:
        logits = logits + head.bias.detach().numpy()  # after the alpha scaling
    return logits


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("variant", VARIANTS)
def test_logits_match_plain_computation(variant: str, bias: bool) -> None:
    head = _head(variant, bias=bias)
    X = _features()
    out = head(X)
    assert out.shape == (N, C) and out.dtype == torch.float64
    np.testing.assert_allclose(out.detach().numpy(), _reference_logits(head, X.numpy()), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("variant", VARIANTS)
def test_gradients_match_finite_differences(variant: str, bias: bool) -> None:
    head = _head(variant, bias=bias)
    X = _features().requires_grad_(True)
    y = torch.arange(N) % C
    names = [n for n, p in head.named_parameters() if p.requires_grad]

    def loss(X, *ps):
        # the head run with the given parameters, so that gradcheck perturbs them too
        return F.cross_entropy(torch.func.functional_call(head, dict(zip(names, ps)), (X,)), y)

    params = [p.detach().clone().requires_grad_(True) for n, p in head.named_parameters() if n in names]
    assert torch.autograd.gradcheck(loss, (X, *params))


def test_ln_gradient_matches_eq_3_5_6() -> None:
    """dL/df = J^T alpha W_hat^T (p - q) with J = (I - f_hat f_hat^T)/||f||, worked out in numpy."""
    head = _head("ln", alpha=5.0)
    X = _features().requires_grad_(True)
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2])
    F.cross_entropy(head(X), y, reduction="sum").backward()
    Xn, Wn = X.detach().numpy(), head.weight.detach().numpy()
    What = _unit_rows(Wn)
    for n in range(N):
        norm = np.linalg.norm(Xn[n])
        fhat = Xn[n] / norm
        z = What @ fhat
        p = np.exp(head.alpha * z - (head.alpha * z).max())
        p /= p.sum()
        q = np.eye(C)[y[n]]
        g_hat = head.alpha * What.T @ (p - q)                         # eq. 3
        J = (np.eye(D) - np.outer(fhat, fhat)) / norm                 # eq. 5
        np.testing.assert_allclose(X.grad[n].numpy(), J.T @ g_hat, rtol=1e-10, atol=1e-13)  # eq. 6


def test_ln_loss_is_cross_entropy_of_alpha_cosine() -> None:
    head = _head("ln", alpha=16.0)
    X = _features()
    y = torch.tensor([3, 2, 1, 0, 3, 2, 1])
    cos = F.cosine_similarity(X[:, None, :], head.weight[None, :, :].detach(), dim=2)
    expected = -torch.log_softmax(16.0 * cos, dim=1)[torch.arange(N), y].mean()
    assert torch.allclose(F.cross_entropy(head(X), y), expected, rtol=1e-12, atol=0)


def test_bias_is_added_after_scaling() -> None:
    head = _head("ln", alpha=1.0, bias=True)
    X = _features()
    base = head(X).detach()
    head.alpha = 4.0
    # alpha * cos + b: changing alpha scales only the cosine part.
    assert torch.allclose(head(X).detach() - head.bias.detach(), 4.0 * (base - head.bias.detach()), atol=1e-12)


def test_sm_alpha_one_is_a_linear_layer() -> None:
    head = _head("sm", alpha=1.0, bias=True)
    X = _features()
    assert torch.allclose(head(X), F.linear(X, head.weight, head.bias), atol=1e-12)


def test_bn_scale_is_fixed_and_shift_is_learned() -> None:
    head = _head("bn")
    assert not head.bn.weight.requires_grad and head.bn.bias.requires_grad
    opt = torch.optim.SGD([p for p in head.parameters() if p.requires_grad], lr=0.5)
    before_w, before_b = head.bn.weight.clone(), head.bn.bias.clone()
    F.cross_entropy(head(_features()), torch.arange(N) % C).backward()
    opt.step()
    assert torch.equal(head.bn.weight, before_w) and torch.all(head.bn.weight == 1)
    assert not torch.equal(head.bn.bias, before_b)


def test_bn_eval_uses_running_statistics() -> None:
    head = _head("bn", alpha=2.0)
    X = _features()
    head(X)  # one training step of running statistics
    head.eval()
    mean, var = head.bn.running_mean.numpy(), head.bn.running_var.numpy()
    bn = (X.numpy() - mean) / np.sqrt(var + head.bn.eps) + head.bn.bias.detach().numpy()
    expected = 2.0 * (bn / math.sqrt(D)) @ _unit_rows(head.weight.detach().numpy()).T
    np.testing.assert_allclose(head(X).detach().numpy(), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(head.embed(X).detach().numpy(), _unit_rows(bn), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("variant", VARIANTS)
def test_test_embedding_is_unit_norm_and_restores_mode(variant: str) -> None:
    head = _head(variant)
    X = _features()
    head.train()
    emb = test_embedding(head, X)
    assert head.training and not emb.requires_grad
    assert emb.shape == (N, D)
    assert torch.allclose(emb.norm(dim=1), torch.ones(N, dtype=torch.float64), atol=1e-12)
    if variant != "bn":
        assert torch.allclose(emb, X / X.norm(dim=1, keepdim=True), atol=1e-12)
    # embeddings do not depend on alpha
    head.alpha = 0.25
    assert torch.allclose(test_embedding(head, X), emb, atol=0)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), "16", True, None])
def test_bad_alpha_raises(bad) -> None:
    with pytest.raises(ValueError, match="alpha must be"):
        NormalizedSoftmax(D, C, alpha=bad)
    head = NormalizedSoftmax(D, C)
    with pytest.raises(ValueError, match="alpha must be"):
        head.alpha = bad
    assert head.alpha == 16.0


def test_alpha_is_settable_between_steps() -> None:
    head = NormalizedSoftmax(D, C, alpha=16)
    assert isinstance(head.alpha, float) and head.alpha == 16.0
    head.alpha = 4
    assert head.alpha == 4.0 and "alpha=4.0" in repr(head)


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match=r"variant must be one of \('sm', 'ln', 'bn'\), got 'xx'"):
        NormalizedSoftmax(D, C, variant="xx")
    with pytest.raises(ValueError, match="embedding_dim"):
        NormalizedSoftmax(0, C)
    with pytest.raises(ValueError, match="num_classes"):
        NormalizedSoftmax(D, 2.5)
    with pytest.raises(ValueError, match=r"shape \(N, 5\)"):
        NormalizedSoftmax(D, C)(torch.zeros(3, 4))


def test_table_rows() -> None:
    assert set(TABLE_ROWS) == {"sm", "ls", "ln", "bn", "hln", "hbn"}
    assert TABLE_ROWS["hln"] == ("ln", True) and TABLE_ROWS["hbn"] == ("bn", True)
    assert TABLE_ROWS["ls"] == ("sm", False)
    assert all(v in VARIANTS for v, _ in TABLE_ROWS.values())
