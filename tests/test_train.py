"""The training loop: schedule per step, exact optimisation, records, cache, resume after SIGKILL, NaN stop, DDP."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from heatup_lib import records, train
from heatup_lib.heads import NormalizedSoftmax
from heatup_lib.models import LeNet
from heatup_lib.schedules import Constant, SmoothHeatUp, StepHeatUp
from heatup_lib.train import (NonFiniteLossError, RunDirConflictError, TensorBatches, TrainConfig,
                              class_mean_init, epoch_generator, fit, settle_batch_norm, state_fingerprint)

REPO = Path(__file__).resolve().parent.parent


def _blobs(n: int = 96, num_classes: int = 4, dim: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian blobs: a learnable toy problem."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % num_classes
    centres = torch.randn(num_classes, dim, generator=g) * 3
    return centres[y] + torch.randn(n, dim, generator=g), y


def _mlp(seed: int = 0, dim: int = 8, emb: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(dim, 16), nn.ReLU(), nn.Linear(16, emb))


def _head(seed: int = 1, emb: int = 3, num_classes: int = 4, variant: str = "ln") -> NormalizedSoftmax:
    torch.manual_seed(seed)
    return NormalizedSoftmax(emb, num_classes, alpha=16.0, variant=variant)


def _state(net: nn.Module, head: nn.Module) -> dict[str, torch.Tensor]:
    return {**{f"net.{k}": v for k, v in net.state_dict().items()}, **{f"head.{k}": v for k, v in head.state_dict().items()}}


# --- batch sources and config ---------------------------------------------------------------------

def test_tensor_batches_order_depends_only_on_the_generator():
    X, y = torch.arange(10.0).unsqueeze(1), torch.arange(10)
    data = TensorBatches(X, y, batch_size=4)
    assert len(data) == 2 and len(TensorBatches(X, y, 4, drop_last=False)) == 3
    first = [b[1].tolist() for b in data.epoch(0, epoch_generator(0, 3))]
    again = [b[1].tolist() for b in data.epoch(0, epoch_generator(0, 3))]
    other = [b[1].tolist() for b in data.epoch(0, epoch_generator(0, 4))]
    assert first == again and first != other
    assert all(len(b) == 4 for b in first) and len(set(sum(first, []))) == 8
    unshuffled = TensorBatches(X, y, 4, shuffle=False, drop_last=False, transform=lambda x: 2 * x)
    batches = list(unshuffled.epoch(0, epoch_generator(0, 0)))
    assert [b[1].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert torch.equal(batches[2][0], torch.tensor([[16.0], [18.0]]))
    # the description (part of a run's parameters) changes when one label changes
    y2 = y.clone()
    y2[0] = 1
    assert data.describe()["sha256"] != TensorBatches(X, y2, 4).describe()["sha256"]
    # ... and so does the transform
    double = TensorBatches(X, y, 4, transform=lambda x: 2 * x).describe()
    triple = TensorBatches(X, y, 4, transform=lambda x: 3 * x).describe()
    assert double["transform"] != triple["transform"] and double["sha256"] == triple["sha256"]
    with pytest.raises(ValueError, match="batch_size=20"):
        TensorBatches(X, y, 20)


@pytest.mark.parametrize("kwargs,match", [
    ({"optimizer": "rmsprop"}, "optimizer must be one of"),
    ({"lr": -1.0}, "lr must be in"),
    ({"label_smoothing": 1.0}, "label_smoothing"),
    ({"num_epochs": 0}, "num_epochs"),
    ({"device": "gpu:x"}, "device"),
    ({"amp": 1}, "amp must be True or False"),
    ({"fused": "yes"}, "fused must be True or False, got 'yes'"),
    ({"cudnn_benchmark": None}, "cudnn_benchmark must be True or False, got None"),
    ({"compile": "fast"}, r"compile must be one of \('off', 'default', 'reduce-overhead', 'max-autotune'\), got 'fast'"),
])
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**{"num_epochs": 2, "batch_size": 4, **kwargs})


def test_fit_rejects_mismatched_schedule_and_batch_size():
    X, y = _blobs()
    with pytest.raises(ValueError, match="schedule.num_epochs=5"):
        fit(_mlp(), _head(), Constant(16.0, 5), TensorBatches(X, y, 8), TrainConfig(2, 8), progress=False)
    with pytest.raises(ValueError, match="train_data.batch_size=8"):
        fit(_mlp(), _head(), Constant(16.0, 2), TensorBatches(X, y, 8), TrainConfig(2, 16), progress=False)


# --- the optimisation itself ----------------------------------------------------------------------

@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_one_epoch_equals_a_hand_written_loop(optimizer):
    """Two steps of fit == two steps of a plain loop (same batches, mean loss, label smoothing, optimiser)."""
    X, y = _blobs(32)
    config = TrainConfig(num_epochs=1, batch_size=16, optimizer=optimizer, lr=0.05, adam_eps=1e-3,
                         momentum=0.8, label_smoothing=0.1, seed=7)
    data = TensorBatches(X, y, 16)
    net, head = _mlp(), _head()
    ref_net, ref_head = copy.deepcopy(net), copy.deepcopy(head)
    result = fit(net, head, Constant(8.0, 1), data, config, progress=False)

    ref_head.alpha = 8.0
    params = list(ref_net.parameters()) + list(ref_head.parameters())
    opt = (torch.optim.Adam(params, lr=0.05, eps=1e-3) if optimizer == "adam"
           else torch.optim.SGD(params, lr=0.05, momentum=0.8))
    losses, correct = [], 0
    for Xb, yb in data.epoch(0, epoch_generator(7, 0)):
        logits = ref_head(ref_net(Xb))
        loss = F.cross_entropy(logits, yb, label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        correct += (logits.argmax(1) == yb).sum().item()
    for k, v in _state(ref_net, ref_head).items():
        torch.testing.assert_close(_state(net, head)[k], v, rtol=1e-6, atol=1e-7)
    (record,) = result.history
    assert record["loss"] == pytest.approx(sum(losses) / 2, rel=1e-6)
    assert record["accuracy"] == correct / 32
    assert result.metrics == {} and not result.cached


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_fused_optimiser_follows_the_plain_trajectory(optimizer):
    """The fused kernel is a speed-up only: same losses and weights as the plain optimiser, to float tolerance."""
    X, y = _blobs(64)
    runs = []
    for fused in (False, True):
        net, head = _mlp(), _head()
        config = TrainConfig(3, 16, optimizer=optimizer, lr=0.05, adam_eps=1e-3, fused=fused)
        result = fit(net, head, Constant(8.0, 3), TensorBatches(X, y, 16), config, progress=False)
        runs.append((result.history, _state(net, head)))
    (plain_hist, plain), (fused_hist, fused_state) = runs
    assert [h["loss"] for h in fused_hist] == pytest.approx([h["loss"] for h in plain_hist], rel=1e-5)
    for k, v in plain.items():
        torch.testing.assert_close(fused_state[k], v, rtol=1e-5, atol=1e-6)
    assert plain_hist[-1]["loss"] < plain_hist[0]["loss"]  # it trained: the comparison is not between two no-ops
    opt = train.make_optimizer(list(_mlp().parameters()), TrainConfig(1, 4, optimizer=optimizer, fused=True))
    assert opt.defaults["fused"] is True


def _conv_runs(option_sets: list[dict], n: int, num_epochs: int, device: str = "cpu") -> list[tuple[list, dict]]:
    """A small conv + BN network and an LN head trained across a step heat-up, once per TrainConfig option set; (losses, final state) of each."""
    X, y = _blobs(n)
    X = X.reshape(n, 2, 2, 2).repeat_interleave(4, -1).repeat_interleave(4, -2)  # (n, 2, 8, 8) images
    runs = []
    for options in option_sets:
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
        head = _head()
        config = TrainConfig(num_epochs, 16, optimizer="sgd", lr=0.1, device=device, **options)
        schedule = StepHeatUp(16.0, num_epochs, num_epochs - 1)
        result = fit(net, head, schedule, TensorBatches(X, y, 16), config, progress=False)
        runs.append(([h["loss"] for h in result.history], {k: v.cpu() for k, v in _state(net, head).items()}))
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
    X, y = _blobs(32)
    fit(_mlp(), _head(), Constant(16.0, 1), TensorBatches(X, y, 16), TrainConfig(1, 16, cudnn_benchmark=True),
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


def test_step_heatup_changes_alpha_and_lr_at_the_right_epoch(monkeypatch):
    seen = []  # (alpha used in the forward pass, lr the optimiser steps with)
    real_step = torch.optim.Adam.step

    def spy_step(self, *args, **kwargs):
        seen.append((head.alpha, self.param_groups[0]["lr"]))
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", spy_step)
    X, y = _blobs(48)
    net, head = _mlp(), _head()
    schedule = StepHeatUp(alpha=16.0, num_epochs=3, heatup_epoch=2, alpha_factor=0.25, lr_factor=0.1)
    result = fit(net, head, schedule, TensorBatches(X, y, 16), TrainConfig(3, 16, lr=1e-2), progress=False)
    assert seen == [(16.0, 1e-2)] * 6 + [(4.0, pytest.approx(1e-3))] * 3
    assert [(h["epoch"], h["alpha"]) for h in result.history] == [(0, 16.0), (1, 16.0), (2, 4.0)]
    assert [h["lr"] for h in result.history] == pytest.approx([1e-2, 1e-2, 1e-3])
    assert head.alpha == 4.0


def test_smooth_schedule_moves_within_epochs(monkeypatch):
    seen = []
    real_step = torch.optim.SGD.step

    def spy_step(self, *args, **kwargs):
        seen.append((head.alpha, self.param_groups[0]["lr"]))
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", spy_step)
    X, y = _blobs(32)
    net, head = _mlp(), _head()
    schedule = SmoothHeatUp(alpha=16.0, num_epochs=2, start_epoch=0.5, end_epoch=2.0, shape="linear")
    fit(net, head, schedule, TensorBatches(X, y, 8), TrainConfig(2, 8, optimizer="sgd", lr=0.1), progress=False)
    times = [e + i / 4 for e in range(2) for i in range(4)]
    assert [a for a, _ in seen] == pytest.approx([schedule.alpha(t) for t in times])
    assert [lr for _, lr in seen] == pytest.approx([0.1 * schedule.lr_factor(t) for t in times])
    assert len(set(a for a, _ in seen)) == 6  # flat at steps 0, 0.25, 0.5; then a new value every step


def test_eval_every_callbacks_and_modes(tmp_path):
    X, y = _blobs(32)
    calls = []

    def eval_fn(net, head):
        calls.append((net.training, head.training))
        return {"recall@1": 0.25 * len(calls)}

    def callback(epoch, record, net, head):
        record["custom"] = epoch * 10

    net, head = _mlp(), _head()
    result = fit(net, head, Constant(16.0, 5), TensorBatches(X, y, 16), TrainConfig(5, 16, eval_every=2),
                 run_dir=tmp_path, eval_fn=eval_fn, callbacks=[callback], progress=False)
    assert calls == [(False, False)] * 3  # after epochs 1, 3 and the last (4), in eval mode
    assert [("recall@1" in h) for h in result.history] == [False, True, False, True, True]
    assert result.metrics == {"recall@1": 0.75} == records.read_metrics(tmp_path)
    assert [h["custom"] for h in records.read_history(tmp_path)] == [0, 10, 20, 30, 40]
    assert net.training and head.training


def test_bn_settle_pass_only_updates_running_statistics():
    X, y = _blobs(64)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 3), nn.BatchNorm1d(3, momentum=0.5))
    head = _head()
    before = copy.deepcopy(net.state_dict())
    data = TensorBatches(X, y, 16, shuffle=False)
    settle_batch_norm(net, head, data, "cpu")
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


# --- run records, cache and conflicts -------------------------------------------------------------

def test_record_written_and_identical_run_is_loaded_not_retrained(tmp_path):
    X, y = _blobs(32)
    run = tmp_path / "run"
    config = TrainConfig(3, 16)
    net, head = _mlp(), _head()
    first = fit(net, head, StepHeatUp(16.0, 3, 2), TensorBatches(X, y, 16), config, run_dir=run,
                eval_fn=lambda n, h: {"score": 1.0}, extra_params={"dataset": "blobs"}, progress=False)
    rec = records.load_record(run)
    assert rec.complete and len(rec.history) == 3 and rec.metrics == {"score": 1.0}
    assert rec.params["extra"] == {"dataset": "blobs"} and rec.params["config"]["lr"] == 1e-3
    assert rec.load_checkpoint()["epoch"] == 3

    class CountingBatches(TensorBatches):
        epochs_served = 0

        def epoch(self, epoch, generator):
            CountingBatches.epochs_served += 1
            return super().epoch(epoch, generator)

    counter = []
    net2, head2 = _mlp(), _head()
    second = fit(net2, head2, StepHeatUp(16.0, 3, 2), CountingBatches(X, y, 16), config, run_dir=run,
                 eval_fn=lambda n, h: counter.append("eval") or {"score": 2.0},
                 callbacks=[lambda *a: counter.append("epoch")], extra_params={"dataset": "blobs"}, progress=False)
    assert second.cached and counter == [] and CountingBatches.epochs_served == 0
    assert second.history == first.history and second.metrics == {"score": 1.0}
    for k, v in _state(net, head).items():
        assert torch.equal(_state(net2, head2)[k], v)
    assert head2.alpha == 4.0


@pytest.mark.parametrize("change", ["lr", "schedule", "extra", "data", "init", "head"])
def test_run_with_different_parameters_is_never_taken_for_cached(tmp_path, change):
    X, y = _blobs(32)
    kwargs = dict(schedule=Constant(16.0, 2), config=TrainConfig(2, 16), extra={"dataset": "blobs"})
    fit(_mlp(), _head(), kwargs["schedule"], TensorBatches(X, y, 16), kwargs["config"], run_dir=tmp_path,
        extra_params=kwargs["extra"], progress=False)
    before = (tmp_path / "checkpoint.pt").read_bytes()
    net, head, data = _mlp(), _head(), TensorBatches(X, y, 16)
    if change == "lr":
        kwargs["config"] = TrainConfig(2, 16, lr=2e-3)
    elif change == "schedule":
        kwargs["schedule"] = Constant(4.0, 2)
    elif change == "extra":
        kwargs["extra"] = {"dataset": "other"}
    elif change == "data":
        y2 = y.clone()
        y2[5] = (y2[5] + 1) % 4
        data = TensorBatches(X, y2, 16)
    elif change == "init":
        net = _mlp(seed=123)
    elif change == "head":
        head = _head(variant="sm")
    with pytest.raises(RunDirConflictError, match="different parameters") as info:
        fit(net, head, kwargs["schedule"], data, kwargs["config"], run_dir=tmp_path,
            extra_params=kwargs["extra"], progress=False)
    assert isinstance(info.value, ValueError)
    assert (tmp_path / "checkpoint.pt").read_bytes() == before  # the other run's record is untouched


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    X, y = _blobs(48)

    class PoisonedBatches(TensorBatches):
        def epoch(self, epoch, generator):
            for step, (Xb, yb) in enumerate(super().epoch(epoch, generator)):
                if epoch == 2 and step == 1:
                    Xb = Xb.clone()
                    Xb[0, 0] = float("nan")
                yield Xb, yb

    net, head = _mlp(), _head()
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, step 1") as info:
        fit(net, head, Constant(16.0, 4), PoisonedBatches(X, y, 16), TrainConfig(4, 16), run_dir=tmp_path,
            progress=False)
    assert "checkpoint" in str(info.value) and isinstance(info.value, FloatingPointError)
    ckpt = records.load_checkpoint(tmp_path)
    assert ckpt["epoch"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["net"].values())
    assert len(records.read_history(tmp_path)) == 2
    assert records.read_metrics(tmp_path) is None


# --- a real interruption -------------------------------------------------------------------------

_TRAIN_SCRIPT = textwrap.dedent("""
    import sys, time, torch
    torch.set_num_threads(1)
    from heatup_lib.heads import NormalizedSoftmax
    from heatup_lib.models import LeNet
    from heatup_lib.schedules import StepHeatUp
    from heatup_lib.train import TensorBatches, TrainConfig, fit

    run_dir, out, pause = sys.argv[1], sys.argv[2], float(sys.argv[3])
    g = torch.Generator().manual_seed(0)
    y = torch.arange(32) % 4
    X = torch.rand(32, 1, 28, 28, generator=g)
    X[torch.arange(32), 0, 4 * y, 4 * y] += 3.0
    torch.manual_seed(0)
    net, head = LeNet(2), NormalizedSoftmax(2, 4, alpha=16.0)
    result = fit(net, head, StepHeatUp(16.0, 6, 4), TensorBatches(X, y, 16), TrainConfig(6, 16, lr=3e-3),
                 run_dir=run_dir, progress=False, callbacks=[lambda *a: time.sleep(pause)])
    torch.save({"net": net.state_dict(), "head": head.state_dict(), "history": result.history,
                "resumed_from_epoch": result.resumed_from_epoch}, out)
""")


def _python_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return env


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_uninterrupted_weights(tmp_path):
    script = tmp_path / "train_script.py"
    script.write_text(_TRAIN_SCRIPT)
    env = _python_env()
    # uninterrupted
    subprocess.run([sys.executable, str(script), str(tmp_path / "full"), str(tmp_path / "full.pt"), "0"],
                   env=env, check=True, timeout=300)
    # interrupted: SIGKILL once the checkpoint of epoch 2 exists (the callback pauses 0.7 s per epoch)
    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(script), str(run), str(tmp_path / "unused.pt"), "0.7"], env=env)
    deadline = time.monotonic() + 240
    while len(records.read_history(run)) < 2:
        assert proc.poll() is None, "the training process ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    killed_at = records.load_checkpoint(run)["epoch"]
    assert 2 <= killed_at < 6 and records.read_metrics(run) is None
    # resume in a fresh process
    subprocess.run([sys.executable, str(script), str(run), str(tmp_path / "resumed.pt"), "0"],
                   env=env, check=True, timeout=300)
    full, resumed = torch.load(tmp_path / "full.pt"), torch.load(tmp_path / "resumed.pt")
    assert resumed["resumed_from_epoch"] == killed_at and full["resumed_from_epoch"] == 0
    for part in ("net", "head"):
        for k, v in full[part].items():
            assert torch.equal(resumed[part][k], v), f"{part}.{k} differs after resume"
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(resumed["history"]) == strip(full["history"])
    assert records.load_record(run).complete


# --- several processes ---------------------------------------------------------------------------

_DDP_SCRIPT = textwrap.dedent("""
    import sys, torch
    torch.set_num_threads(1)
    from torch import nn
    from heatup_lib.heads import NormalizedSoftmax
    from heatup_lib.schedules import StepHeatUp
    from heatup_lib.train import TensorBatches, TrainConfig, fit, init_distributed

    rank, world_size, device = init_distributed()
    out, run_dir = sys.argv[1], sys.argv[2]
    g = torch.Generator().manual_seed(0)
    y = torch.arange(99) % 5
    X = torch.randn(5, 10, generator=g)[y] * 2 + torch.randn(99, 10, generator=g)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 4))
    head = NormalizedSoftmax(4, 5, alpha=16.0)
    # 99 samples, batch 16, drop_last=False: the last global batch (3) splits unevenly over 2 ranks
    data = TensorBatches(X, y, 16, drop_last=False)
    result = fit(net, head, StepHeatUp(16.0, 4, 3), data, TrainConfig(4, 16, lr=1e-2, label_smoothing=0.1),
                 run_dir=run_dir, progress=False)
    if rank == 0:
        torch.save({"world_size": world_size, "losses": [h["loss"] for h in result.history],
                    "accuracy": [h["accuracy"] for h in result.history],
                    "net": net.state_dict(), "head": head.state_dict()}, out)
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes_match_one_process(tmp_path):
    script = tmp_path / "ddp_script.py"
    script.write_text(_DDP_SCRIPT)
    env = _python_env()
    subprocess.run([sys.executable, str(script), str(tmp_path / "one.pt"), str(tmp_path / "run1")],
                   env=env, check=True, timeout=300)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                    f"--master_port={_free_port()}", str(script), str(tmp_path / "two.pt"), str(tmp_path / "run2")],
                   env=env, check=True, timeout=300)
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert one["world_size"] == 1 and two["world_size"] == 2
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-5)
    assert two["accuracy"] == one["accuracy"]
    assert one["losses"][-1] < one["losses"][0]  # it learns
    for part in ("net", "head"):
        for k, v in one[part].items():
            torch.testing.assert_close(two[part][k], v, rtol=1e-4, atol=1e-5)
    # only rank 0 wrote the record, and it is complete
    rec = records.load_record(tmp_path / "run2")
    assert rec.complete and len(rec.history) == 4
    assert json.loads((tmp_path / "run2" / "environment.json").read_text())["world_size"] == 2


def test_lenet_trains_on_separable_digits_like_data():
    """A short real run: LeNet + LN head learns a trivially separable 4-class problem."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(64) % 4
    X = torch.rand(64, 1, 28, 28, generator=g) * 0.1
    for c in range(4):  # one bright quadrant per class
        X[y == c, 0, 14 * (c // 2):14 * (c // 2) + 14, 14 * (c % 2):14 * (c % 2) + 14] += 1.0
    torch.manual_seed(0)
    net, head = LeNet(2), NormalizedSoftmax(2, 4, alpha=16.0)
    result = fit(net, head, Constant(16.0, 4), TensorBatches(X, y, 16), TrainConfig(4, 16), progress=False)
    # (with a 2-d embedding two class weights can end up nearly parallel for a while: no 100% here)
    assert result.history[-1]["accuracy"] > 0.5
    assert result.history[-1]["loss"] < 0.3 * result.history[0]["loss"]


@pytest.mark.parametrize("variant", ["ln", "sm"])
def test_class_mean_init_sets_normalised_class_means(variant):
    X, y = _blobs(40, num_classes=4)
    y = y.clone()
    y[y == 3] = 2  # class 3 absent: its weight must stay
    net, head = _mlp(), _head(variant=variant)
    w3 = head.weight[3].detach().clone()
    counts = class_mean_init(net, head, TensorBatches(X, y, 8, shuffle=False, drop_last=False), "cpu")
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
    X, y = _blobs(48, num_classes=4)
    X = X + 5.0  # features far from zero mean: an unsettled BN head would standardise them wrongly
    data = TensorBatches(X, y, 16, shuffle=True)

    def build() -> tuple[nn.Module, NormalizedSoftmax]:
        return _mlp(), _head(variant="bn")

    net, head = build()
    # learning rate ~0: the weights after fit are the initial ones (but BN statistics move in training)
    config = TrainConfig(1, 16, optimizer="sgd", lr=1e-30, momentum=0.0, bn_settle=True, class_mean_init=True)
    result = fit(net, head, Constant(16.0, 1), data, config, progress=False)

    ref_net, ref_head = build()
    assert result.params == {} and torch.equal(ref_head.weight, _head(variant="bn").weight)
    settle_batch_norm(ref_net, ref_head, data, "cpu", seed=0)
    class_mean_init(ref_net, ref_head, data, "cpu", seed=0)
    torch.testing.assert_close(head.weight.detach(), ref_head.weight.detach(), rtol=0, atol=1e-6)

    wrong_net, wrong_head = build()  # class means before settling give other weights
    class_mean_init(wrong_net, wrong_head, data, "cpu", seed=0)
    assert (wrong_head.weight - ref_head.weight).abs().max() > 1e-2


def test_class_mean_init_is_fingerprinted_before_and_skipped_on_resume(tmp_path):
    """The record fingerprints the state before the init (reproducible), and a resumed run does not redo it."""
    X, y = _blobs(32)
    data = TensorBatches(X, y, 8)
    config = TrainConfig(2, 8, class_mean_init=True)
    net, head = _mlp(), _head()
    fresh_net, fresh_head = _mlp(), _head()
    result = fit(net, head, Constant(16.0, 2), data, config, run_dir=tmp_path / "run", progress=False)
    assert result.params["head"]["init_sha256"] == state_fingerprint(fresh_head)
    assert result.params["net"]["init_sha256"] == state_fingerprint(fresh_net)
    assert result.params["config"]["class_mean_init"] is True
    with pytest.raises(ValueError, match="class_mean_init must be True or False, got 1"):
        TrainConfig(2, 8, class_mean_init=1)


def test_tiny_inception_bn_head_with_settle_and_channels_last(tmp_path):
    """The chapter-3 configuration on CPU: GoogLeNet from scratch on 32 px inputs, BN head, settle pass, channels-last."""
    import warnings

    from heatup_lib.models import InceptionEmbedder

    g = torch.Generator().manual_seed(0)
    y = torch.arange(8) % 4
    X = torch.rand(8, 3, 32, 32, generator=g)

    def build():
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net = InceptionEmbedder(8, pretrained=False, bottleneck_bias=False)
        return net, NormalizedSoftmax(8, 4, alpha=16.0, variant="bn")

    net, head = build()
    config = TrainConfig(1, 8, optimizer="sgd", lr=0.004, bn_settle=True, channels_last=True)
    result = fit(net, head, Constant(16.0, 1), TensorBatches(X, y, 8), config, run_dir=tmp_path, progress=False)
    assert torch.isfinite(torch.tensor(result.history[0]["loss"]))
    assert net.backbone[0].conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert records.load_record(tmp_path).params["config"]["bn_settle"] is True
    # Settling only moves batch-norm running statistics (train-mode forward passes use batch
    # statistics): against the same run without it, the weights agree and the statistics differ.
    net2, head2 = build()
    fit(net2, head2, Constant(16.0, 1), TensorBatches(X, y, 8), dataclasses.replace(config, bn_settle=False),
        progress=False)
    state, state2 = _state(net, head), _state(net2, head2)
    for k, v in state.items():
        if "running" in k or "num_batches_tracked" in k:
            continue
        torch.testing.assert_close(state2[k], v, rtol=1e-5, atol=1e-6)
    assert not torch.equal(head.bn.running_mean, head2.bn.running_mean)
    assert int(head.bn.num_batches_tracked) == 2 and int(head2.bn.num_batches_tracked) == 1


def test_killed_between_last_checkpoint_and_metrics_finishes_without_training(tmp_path):
    X, y = _blobs(32)
    fit(_mlp(), _head(), Constant(16.0, 2), TensorBatches(X, y, 16), TrainConfig(2, 16), run_dir=tmp_path,
        eval_fn=lambda n, h: {"score": 0.5}, progress=False)
    (tmp_path / "metrics.json").unlink()  # as if killed right after the last checkpoint
    calls = []
    result = fit(_mlp(), _head(), Constant(16.0, 2), TensorBatches(X, y, 16), TrainConfig(2, 16), run_dir=tmp_path,
                 eval_fn=lambda n, h: {"score": 0.5}, callbacks=[lambda *a: calls.append(a)], progress=False)
    assert not result.cached and result.resumed_from_epoch == 2 and calls == []
    assert result.metrics == {"score": 0.5} == records.read_metrics(tmp_path)
    assert len(result.history) == 2


def test_torchrun_without_process_group_is_refused(monkeypatch, tmp_path):
    """Under torchrun every rank would otherwise train alone and write the same folder."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    X, y = _blobs(32)
    with pytest.raises(RuntimeError, match="init_distributed"):
        fit(_mlp(), _head(), Constant(16.0, 1), TensorBatches(X, y, 16), TrainConfig(1, 16), run_dir=tmp_path,
            progress=False)
    assert not (tmp_path / "params.json").exists()
