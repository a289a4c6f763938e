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
    with pytest.raises(ValueError, match=r"Unknown value 'xx' for argument variant. Valid values are \['sm', 'ln', 'bn'\]"):
        NormalizedSoftmax(D, C, variant="xx")
    with pytest.raises(ValueError, match="embedding_dim"):
        NormalizedSoftmax(0, C)
    with pytest.raises(ValueError, match="num_classes"):
        NormalizedSoftmax(D, 2.5)
    with pytest.raises(ValueError, match=r"shape \(N, 5\)"):
        NormalizedSoftmax(D, C)(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="Unknown value 'cold' for argument alpha_mode"):
        NormalizedSoftmax(D, C, alpha_mode="cold")
    with pytest.raises(ValueError, match="needs num_classes >= 2"):
        NormalizedSoftmax(D, 1, alpha_mode="adacos-fixed")


def test_table_rows() -> None:
    assert set(TABLE_ROWS) == {"sm", "ls", "ln", "bn", "hln", "hbn"}
    assert TABLE_ROWS["hln"] == ("ln", True) and TABLE_ROWS["hbn"] == ("bn", True)
    assert TABLE_ROWS["ls"] == ("sm", False)
    assert all(v in VARIANTS for v, _ in TABLE_ROWS.values())


# --- alpha that is learned or computed (the temperature study) ------------------------------------

def _batch(seed: int = 0, n: int = 6, classes: int = C):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, D, generator=g, dtype=torch.float64), torch.randint(classes, (n,), generator=g)


def test_learned_alpha_is_positive_and_its_gradient_is_the_hand_worked_one() -> None:
    """alpha = exp(log_alpha); dL/dlog_alpha = alpha * mean_i sum_m (p_im - q_im) z_im (L the mean cross-entropy)."""
    torch.manual_seed(0)
    head = NormalizedSoftmax(D, C, alpha=16.0, alpha_mode="learned").double()
    assert head.alpha == pytest.approx(16.0, rel=1e-6) and isinstance(head.log_alpha, torch.nn.Parameter)
    alpha = head.alpha
    X, y = _batch()
    loss = F.cross_entropy(head(X), y)
    loss.backward()
    z = (F.normalize(X, dim=1) @ F.normalize(head.weight.detach(), dim=1).T).numpy()
    p = np.exp(alpha * z - (alpha * z).max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    q = np.eye(C)[y.numpy()]
    by_hand = alpha * ((p - q) * z).sum(1).mean()
    assert head.log_alpha.grad.item() == pytest.approx(by_hand, rel=1e-10)
    with pytest.raises(ValueError, match="alpha cannot be set on a head with alpha_mode='learned'"):
        head.alpha = 4.0
    # an optimiser step moves alpha and keeps it positive, however large the step
    with torch.no_grad():
        head.log_alpha -= 100.0
    assert 0.0 < head.alpha < 1e-40


@pytest.mark.parametrize("C_, expected", [(2, 0.0), (10, 3.1073448), (100, 6.4984808), (1000, 9.7676263)])
def test_adacos_fixed_alpha_is_sqrt2_log_c_minus_1(C_, expected) -> None:
    from heatup_lib.schedules import adacos_fixed_alpha

    assert adacos_fixed_alpha(C_) == pytest.approx(expected, abs=1e-6)
    head = NormalizedSoftmax(D, C_, alpha_mode="adacos-fixed")
    assert head.alpha == pytest.approx(expected, abs=1e-6)
    X, y = _batch(classes=C_)
    before = head.alpha
    head.train()
    head(X.float(), y)
    assert head.alpha == before  # fixed: the batch changes nothing


def test_adacos_dynamic_alpha_on_a_hand_made_batch() -> None:
    """Two samples, three classes, cosines chosen by hand: B and theta_med worked out on paper."""
    from heatup_lib.schedules import adacos_dynamic_alpha

    z = torch.tensor([[0.8, 0.1, -0.2], [0.3, 0.6, 0.0]])
    y = torch.tensor([0, 1])
    s = 2.0
    # B = mean over samples of sum over the other classes of exp(s * z)
    b = ((math.exp(s * 0.1) + math.exp(-s * 0.2)) + (math.exp(s * 0.3) + math.exp(0.0))) / 2
    # the target angles are acos(0.8) = 0.6435 and acos(0.6) = 0.9273; torch's median of two is the lower
    theta_med = min(math.acos(0.8), math.acos(0.6))
    expected = math.log(b) / math.cos(min(math.pi / 4, theta_med))
    assert adacos_dynamic_alpha(z, y, s).item() == pytest.approx(expected, rel=1e-6)
    # a median beyond pi/4 is clipped there
    z2 = torch.tensor([[0.5, 0.1, 0.0], [0.2, 0.6, 0.1]])
    b2 = ((math.exp(s * 0.1) + 1.0) + (math.exp(s * 0.2) + math.exp(s * 0.1))) / 2
    assert adacos_dynamic_alpha(z2, y, s).item() == pytest.approx(math.log(b2) / math.cos(math.pi / 4), rel=1e-6)


def test_adacos_dynamic_head_adapts_in_training_only_and_keeps_it_in_state() -> None:
    from heatup_lib.schedules import adacos_dynamic_alpha, adacos_fixed_alpha

    torch.manual_seed(0)
    head = NormalizedSoftmax(D, C, alpha_mode="adacos-dynamic")
    assert head.alpha == pytest.approx(adacos_fixed_alpha(C))
    X, y = _batch()
    X = X.float()
    z = F.normalize(X, dim=1) @ F.normalize(head.weight.detach(), dim=1).T
    expected = adacos_dynamic_alpha(z, y, head.alpha).item()
    logits = head(X, y)
    assert head.alpha == pytest.approx(expected, rel=1e-6)
    torch.testing.assert_close(logits, expected * z, rtol=1e-5, atol=1e-6)  # the new scale is used at once
    head.eval()
    head(X, y)
    assert head.alpha == pytest.approx(expected, rel=1e-6)  # eval mode keeps it
    head.train()
    head(X)  # without labels nothing to adapt to
    assert head.alpha == pytest.approx(expected, rel=1e-6)
    restored = NormalizedSoftmax(D, C, alpha_mode="adacos-dynamic")
    restored.load_state_dict(head.state_dict())  # a checkpoint carries it
    assert restored.alpha == pytest.approx(expected, rel=1e-6)
