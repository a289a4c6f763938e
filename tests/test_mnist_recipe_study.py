"""bench/mnist_recipe_study.py: the recipe options the library lacks (TF-slim init, even class weights, bottleneck BN, warm-ups, weight-decay groups) and the per-step diagnostics."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from heatup_lib.models import LeNet
from heatup_lib.seeding import epoch_generator

_PATH = Path(__file__).resolve().parent.parent / "bench" / "mnist_recipe_study.py"
_spec = importlib.util.spec_from_file_location("mnist_recipe_study", _PATH)
R = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = R  # dataclasses look their module up there
_spec.loader.exec_module(R)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("num_classes", [5, 10])
def test_even_class_weights_are_unit_and_evenly_spaced(num_classes):
    w = R.even_class_weights(num_classes, torch.Generator().manual_seed(3)).double()
    assert torch.allclose(w.norm(dim=1), torch.ones(num_classes, dtype=torch.float64), atol=1e-6)
    angles = torch.sort(torch.atan2(w[:, 1], w[:, 0]) % (2 * math.pi)).values
    gaps = torch.diff(torch.cat([angles, angles[:1] + 2 * math.pi]))
    assert torch.allclose(gaps, torch.full_like(gaps, 2 * math.pi / num_classes), atol=1e-6)
    assert R.min_pair_angle(w.float()) == pytest.approx(360.0 / num_classes, abs=1e-3)
    # the offset depends on the generator, the spacing does not
    other = R.even_class_weights(num_classes, torch.Generator().manual_seed(4))
    assert not torch.allclose(other, w.float())


def test_tf_slim_init_matches_variance_scaling():
    torch.manual_seed(0)
    net = LeNet(2)
    R.tf_slim_init_(net)
    layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == 4
    for m in layers:
        fan_in = m.weight[0].numel()
        std = math.sqrt(1.3 * 2.0 / fan_in)
        assert torch.count_nonzero(m.bias) == 0
        assert float(m.weight.detach().abs().max()) <= 2 * std + 1e-6  # truncated at two standard deviations
        if m.weight.numel() > 10_000:  # variance of a normal truncated at 2 sigma: 0.774 sigma^2 ~ 2 / fan_in
            assert float(m.weight.detach().double().var()) * fan_in == pytest.approx(2.0, rel=0.05)


def test_plan_warmups_and_heatup():
    p = R.Plan(alpha=16.0, images=1000, warmup_images=400, warmup_alpha=1.0)
    assert p.at(0) == (1.0, 1.0)
    assert p.at(200)[0] == pytest.approx(4.0)  # geometric: sqrt(1 * 16)
    assert p.at(400) == (16.0, 1.0)
    assert R.Plan(alpha=16.0, images=1000).at(0) == (16.0, 1.0)
    h = R.Plan(alpha=16.0, images=1000, heatup_at=0.8)
    assert h.at(799) == (16.0, 1.0)
    assert h.at(800) == (4.0, 0.1)
    lr = R.Plan(alpha=16.0, images=1000, lr_warmup_images=100)
    assert lr.at(49)[1] == pytest.approx(0.5)
    assert lr.at(100)[1] == 1.0


def test_weight_decay_only_on_conv_and_fc_weights():
    recipe = R.Recipe(weight_decay=0.1, bias=True)
    net, head = R.build(recipe, 10, 16.0, seed=0)
    opt = R.make_optimizer(net, head, recipe)
    before = {name: p.detach().clone() for name, p in [*net.named_parameters(), *head.named_parameters()]}
    for p in [*net.parameters(), *head.parameters()]:
        p.grad = torch.zeros_like(p)  # the only "gradient" left is the decay term
    opt.step()
    changed = {name for name, p in [*net.named_parameters(), *head.named_parameters()]
               if not torch.equal(p.detach(), before[name])}
    assert changed == {"features.0.weight", "features.3.weight", "fc.1.weight", "fc.3.weight"}


def test_bottleneck_bn_centres_features_and_has_no_scale():
    net, head = R.build(R.Recipe(bottleneck_bn=True), 10, 16.0, seed=0)
    assert isinstance(net, R.BottleneckBN) and not net.bn.weight.requires_grad
    assert net.bn.bias.requires_grad
    x = torch.rand(64, 1, 28, 28)
    f = net(x)
    assert torch.allclose(f.mean(0), torch.zeros(2), atol=1e-5)
    raw = net.net(x)
    expected = (raw - raw.mean(0)) / torch.sqrt(raw.var(0, unbiased=False) + 1e-3)
    assert torch.allclose(f, expected, atol=1e-4)


def test_recipe_differences_and_inputs():
    assert R.AUTHORS.differences() == {"init": "tf", "inputs": "signed", "bias": True}
    assert R.BASELINE.differences() == {}
    X = torch.tensor([[0, 255]], dtype=torch.uint8).expand(28, 2).reshape(1, 28, 2)
    assert R.input_transform(R.Recipe(inputs="signed"))(X).unique().tolist() == [-1.0, 1.0]
    assert R.input_transform(R.Recipe())(X).unique().tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="init"):
        R.Recipe(init="xavier")


def test_train_run_diagnostics_match_autograd_and_repeat():
    g = torch.Generator().manual_seed(0)
    X = torch.randint(0, 256, (96, 28, 28), dtype=torch.uint8, generator=g)
    y = torch.arange(96) % 10
    recipe = R.Recipe(batch_size=32)
    kwargs = dict(seed=5, eval_at=(1.0,), diag_every=1)
    a = R.train_run(recipe, R.Plan(16.0, 64), X, y, X[:40], y[:40], **kwargs)
    b = R.train_run(recipe, R.Plan(16.0, 64), X, y, X[:40], y[:40], **kwargs)
    assert a.weight_angles_final == b.weight_angles_final and a.final == b.final
    assert [t["step"] for t in a.trace] == [0, 1] and a.final["test_digits"] == 40

    # step 0 by hand: the same initial weights and the first batch of epoch 0
    net, head = R.build(recipe, 10, 16.0, seed=5)
    order = torch.randperm(96, generator=epoch_generator(5, 0))[:32]
    f = net(R.input_transform(recipe)(X[order])).detach()
    grads = []
    for i in range(32):  # per-sample dL_i/df_i, one sample at a time
        fi = f[i:i + 1].clone().requires_grad_(True)
        F.cross_entropy(head(fi), y[order][i:i + 1]).backward()
        grads.append(fi.grad[0])
    grads = torch.stack(grads)
    t0 = a.trace[0]
    assert t0["feature_norm_median"] == pytest.approx(float(f.norm(dim=1).median()), rel=1e-5)
    assert t0["grad_f_median"] == pytest.approx(float(grads.norm(dim=1).median()), rel=1e-4)
    # through the normalisation the gradient is tangential: ||dL/df|| * ||f|| = ||dL/df_hat (tangential)||
    assert float((grads * f).sum(1).abs().max()) < 1e-4 * float(grads.norm(dim=1).max() * f.norm(dim=1).max())
    assert t0["weight_angles"] == R.weight_angles(head)
