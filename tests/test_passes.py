"""The passes without gradients: batch-norm settling and class-mean initialisation."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from _toys import blobs, make_head, make_mlp
from heatup_lib.data.batches import TensorBatches
from heatup_lib.fingerprint import state_fingerprint
from heatup_lib.heads import NormalizedSoftmax
from heatup_lib.passes import class_mean_init, settle_batch_norm
from heatup_lib.schedules import Constant
from heatup_lib.seeding import epoch_generator
from heatup_lib.train import TrainConfig, fit

def test_bn_settle_pass_only_updates_running_statistics():
    X, y = blobs(64)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 3), nn.BatchNorm1d(3, momentum=0.5))
    head = make_head()
    before = copy.deepcopy(net.state_dict())
    data = TensorBatches(X, y, 16, shuffle=False)
    settle_batch_norm(net, head, data, TrainConfig())
    # hand-computed exponential moving average of the batch statistics, batch by batch
    mean, var = torch.zeros(3), torch.ones(3)
    with torch.no_grad():
        for Xb, _ in data.epoch(0, epoch_generator(0, 0)):
            z = net[0](Xb)
            mean = 0.5 * mean + 0.5 * z.mean(0)
            var = 0.5 * var + 0.5 * z.var(0, unbiased=True)
    torch.testing.assert_close(net[1].running_mean, mean)
    torch.testing.assert_close(net[1].running_var, var)
    for k in ("0.weight", "0.bias", "1.weight", "1.bias"):
        assert torch.equal(net.state_dict()[k], before[k])
    assert int(net[1].num_batches_tracked) == 4


@pytest.mark.parametrize("variant", ["ln", "sm"])
def test_class_mean_init_sets_normalised_class_means(variant):
    X, y = blobs(40, num_classes=4)
    y = y.clone()
    y[y == 3] = 2  # class 3 absent: its weight must stay
    net, head = make_mlp(), make_head(variant=variant)
    w3 = head.weight[3].detach().clone()
    data = TensorBatches(X, y, 8, shuffle=False, drop_last=False)
    counts = class_mean_init(net, head, data, TrainConfig())
    assert counts.tolist() == [10.0, 10.0, 20.0, 0.0]
    with torch.no_grad():
        feats = net(X).double()
        if variant == "ln":
            feats = F.normalize(feats, dim=1)
    for c in range(3):
        expected = F.normalize(feats[y == c].mean(0), dim=0).float()
        torch.testing.assert_close(head.weight[c].detach(), expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(head.weight[3].detach(), w3)
    assert net.training and head.training


def test_fit_settles_batch_norm_then_takes_class_means():
    """SPEC order for SOP: settle batch norm, then class means of the settled features, then train."""
    X, y = blobs(48, num_classes=4)
    X = X + 5.0  # features far from zero mean: an unsettled BN head would standardise them wrongly
    data = TensorBatches(X, y, 16, shuffle=True)

    def build() -> tuple[nn.Module, NormalizedSoftmax]:
        return make_mlp(), make_head(variant="bn")

    net, head = build()
    # learning rate ~0: the weights after fit are the initial ones (but BN statistics move in training)
    config = TrainConfig(optimizer="sgd", lr=1e-30, momentum=0.0, bn_settle=True, class_mean_init=True)
    result = fit(net, head, Constant(16.0, 1), data, config, progress=False)

    ref_net, ref_head = build()
    assert result.params == {} and torch.equal(ref_head.weight, make_head(variant="bn").weight)
    settle_batch_norm(ref_net, ref_head, data, config)
    class_mean_init(ref_net, ref_head, data, config)
    torch.testing.assert_close(head.weight.detach(), ref_head.weight.detach(), rtol=0, atol=1e-6)

    wrong_net, wrong_head = build()  # class means before settling give other weights
    class_mean_init(wrong_net, wrong_head, data, config)
    assert (wrong_head.weight - ref_head.weight).abs().max() > 1e-2


def test_class_mean_init_is_fingerprinted_before_and_skipped_on_resume(tmp_path):
    """The record fingerprints the state before the init (reproducible), and a resumed run does not redo it."""
    X, y = blobs(32)
    data = TensorBatches(X, y, 8)
    config = TrainConfig(class_mean_init=True)
    net, head = make_mlp(), make_head()
    fresh_net, fresh_head = make_mlp(), make_head()
    result = fit(net, head, Constant(16.0, 2), data, config, run_dir=tmp_path / "run", progress=False)
    assert result.params["head"]["init_sha256"] == state_fingerprint(fresh_head)
    assert result.params["net"]["init_sha256"] == state_fingerprint(fresh_net)
    assert result.params["config"]["class_mean_init"] is True
    with pytest.raises(ValueError, match="class_mean_init must be True or False, got 1"):
        TrainConfig(class_mean_init=1)
