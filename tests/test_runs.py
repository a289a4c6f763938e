"""A run's identity and its folder: a finished run is loaded, a different one never reused."""

from __future__ import annotations

import pytest
import torch

from _toys import blobs, make_head, make_mlp, state_of
from heatup_lib import records
from heatup_lib.data.batches import TensorBatches
from heatup_lib.runs import RunDirConflictError
from heatup_lib.schedules import Constant, StepHeatUp
from heatup_lib.train import TrainConfig, fit

def test_record_written_and_identical_run_is_loaded_not_retrained(tmp_path):
    X, y = blobs(32)
    run = tmp_path / "run"
    config = TrainConfig()
    net, head = make_mlp(), make_head()
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
    net2, head2 = make_mlp(), make_head()
    second = fit(net2, head2, StepHeatUp(16.0, 3, 2), CountingBatches(X, y, 16), config, run_dir=run,
                 eval_fn=lambda n, h: counter.append("eval") or {"score": 2.0},
                 callbacks=[lambda *a: counter.append("epoch")], extra_params={"dataset": "blobs"}, progress=False)
    assert second.cached and counter == [] and CountingBatches.epochs_served == 0
    assert second.history == first.history and second.metrics == {"score": 1.0}
    for k, v in state_of(net, head).items():
        assert torch.equal(state_of(net2, head2)[k], v)
    assert head2.alpha == 4.0


@pytest.mark.parametrize("change", ["lr", "schedule", "extra", "data", "init", "head"])
def test_run_with_different_parameters_is_never_taken_for_cached(tmp_path, change):
    X, y = blobs(32)
    kwargs = dict(schedule=Constant(16.0, 2), config=TrainConfig(), extra={"dataset": "blobs"})
    fit(make_mlp(), make_head(), kwargs["schedule"], TensorBatches(X, y, 16), kwargs["config"], run_dir=tmp_path,
        extra_params=kwargs["extra"], progress=False)
    before = (tmp_path / "checkpoint.pt").read_bytes()
    net, head, data = make_mlp(), make_head(), TensorBatches(X, y, 16)
    if change == "lr":
        kwargs["config"] = TrainConfig(lr=2e-3)
    elif change == "schedule":
        kwargs["schedule"] = Constant(4.0, 2)
    elif change == "extra":
        kwargs["extra"] = {"dataset": "other"}
    elif change == "data":
        y2 = y.clone()
        y2[5] = (y2[5] + 1) % 4
        data = TensorBatches(X, y2, 16)
    elif change == "init":
        net = make_mlp(seed=123)
    elif change == "head":
        head = make_head(variant="sm")
    with pytest.raises(RunDirConflictError, match="different parameters") as info:
        fit(net, head, kwargs["schedule"], data, kwargs["config"], run_dir=tmp_path,
            extra_params=kwargs["extra"], progress=False)
    assert isinstance(info.value, ValueError)
    assert (tmp_path / "checkpoint.pt").read_bytes() == before  # the other run's record is untouched


def test_killed_between_last_checkpoint_and_metrics_finishes_without_training(tmp_path):
    X, y = blobs(32)
    fit(make_mlp(), make_head(), Constant(16.0, 2), TensorBatches(X, y, 16), TrainConfig(), run_dir=tmp_path,
        eval_fn=lambda n, h: {"score": 0.5}, progress=False)
    (tmp_path / "metrics.json").unlink()  # as if killed right after the last checkpoint
    calls = []
    result = fit(make_mlp(), make_head(), Constant(16.0, 2), TensorBatches(X, y, 16), TrainConfig(), run_dir=tmp_path,
                 eval_fn=lambda n, h: {"score": 0.5}, callbacks=[lambda *a: calls.append(a)], progress=False)
    assert not result.cached and result.resumed_from_epoch == 2 and calls == []
    assert result.metrics == {"score": 0.5} == records.read_metrics(tmp_path)
    assert len(result.history) == 2
