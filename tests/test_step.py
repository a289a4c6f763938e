"""The optimisation step and its speed-ups: each follows the plain trajectory."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from _toys import blobs, make_head, make_mlp, state_of
from heatup_lib.data.batches import TensorBatches
from heatup_lib.schedules import Constant, StepHeatUp
from heatup_lib.step import make_optimizer
from heatup_lib.train import TrainConfig, fit

@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_fused_optimiser_follows_the_plain_trajectory(optimizer):
    """The fused kernel is a speed-up only: same losses and weights as the plain optimiser, to float tolerance."""
    X, y = blobs(64)
    runs = []
    for fused in (False, True):
        net, head = make_mlp(), make_head()
        config = TrainConfig(optimizer=optimizer, lr=0.05, adam_eps=1e-3, fused=fused)
        result = fit(net, head, Constant(8.0, 3), TensorBatches(X, y, 16), config, progress=False)
        runs.append((result.history, state_of(net, head)))
    (plain_hist, plain), (fused_hist, fused_state) = runs
    assert [h["loss"] for h in fused_hist] == pytest.approx([h["loss"] for h in plain_hist], rel=1e-5)
    for k, v in plain.items():
        torch.testing.assert_close(fused_state[k], v, rtol=1e-5, atol=1e-6)
    assert plain_hist[-1]["loss"] < plain_hist[0]["loss"]  # it trained: the comparison is not between two no-ops
    opt = make_optimizer(list(make_mlp().parameters()), TrainConfig(optimizer=optimizer, fused=True))
    assert opt.defaults["fused"] is True


def _conv_runs(option_sets: list[dict], n: int, num_epochs: int, device: str = "cpu") -> list[tuple[list, dict]]:
    """A small conv + BN network and an LN head trained across a step heat-up, once per TrainConfig option set; (losses, final state) of each."""
    X, y = blobs(n)
    X = X.reshape(n, 2, 2, 2).repeat_interleave(4, -1).repeat_interleave(4, -2)  # (n, 2, 8, 8) images
    runs = []
    for options in option_sets:
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
        head = make_head()
        config = TrainConfig(optimizer="sgd", lr=0.1, device=device, **options)
        schedule = StepHeatUp(16.0, num_epochs, num_epochs - 1)
        result = fit(net, head, schedule, TensorBatches(X, y, 16), config, progress=False)
        runs.append(([h["loss"] for h in result.history], {k: v.cpu() for k, v in state_of(net, head).items()}))
    return runs


def test_compiled_network_follows_the_eager_trajectory():
    """torch.compile of the network (CPU inductor here) gives the eager run's losses; checkpoints keep plain keys."""
    (eager_losses, eager), (compiled_losses, compiled) = _conv_runs([{}, {"compile": "default"}], 48, 2)
    assert not any("_orig_mod" in k for k in compiled)
    assert compiled_losses == pytest.approx(eager_losses, rel=1e-4)
    for k, v in eager.items():
        torch.testing.assert_close(compiled[k], v, rtol=1e-4, atol=1e-5)


def test_cudnn_benchmark_is_set_for_the_run_and_restored(monkeypatch):
    """cudnn.benchmark is a process-wide flag: fit sets it during training only."""
    seen = []
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    X, y = blobs(32)
    fit(make_mlp(), make_head(), Constant(16.0, 1), TensorBatches(X, y, 16), TrainConfig(cudnn_benchmark=True),
        callbacks=[lambda *_: seen.append(torch.backends.cudnn.benchmark)], progress=False)
    assert seen == [True] and torch.backends.cudnn.benchmark is False


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("speedup", [{"fused": True}, {"cudnn_benchmark": True},
                                     {"fused": True, "cudnn_benchmark": True, "compile": "reduce-overhead"}],
                         ids=["fused", "cudnn", "cudagraphs"])
def test_cuda_speedups_follow_the_plain_trajectory(speedup):
    """On a GPU the fused optimiser and compile + CUDA graphs train like the plain path, across a heat-up."""
    (plain_losses, plain), (fast_losses, fast) = _conv_runs([{}, speedup], 96, 3, device="cuda")
    assert fast_losses == pytest.approx(plain_losses, rel=1e-3)
    for k, v in plain.items():
        torch.testing.assert_close(fast[k], v, rtol=1e-3, atol=1e-4)
