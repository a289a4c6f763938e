"""A run's identity and its folder: a finished run is loaded, a different one never reused."""

from __future__ import annotations

import os
import sys

import pytest
import torch

from _toys import blobs, make_head, make_mlp, state_of
from heatup_lib import records
from heatup_lib.data.batches import TensorBatches
from heatup_lib.runs import RunDirConflictError, RunLockedError, check_run_name, held_run_folders
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


# --- the run folder's lock -------------------------------------------------------------------------

_HOLDER = """
import sys, time
sys.path.insert(0, "tests")
from _toys import blobs, make_head, make_mlp
from heatup_lib.data.batches import TensorBatches
from heatup_lib.schedules import Constant
from heatup_lib.train import TrainConfig, fit
X, y = blobs(32)
fit(make_mlp(), make_head(), Constant(16.0, 3), TensorBatches(X, y, 16), TrainConfig(), run_dir=sys.argv[1],
    callbacks=[lambda epoch, *a: time.sleep(float(sys.argv[2]) if epoch == 1 else 0)], progress=False)
"""


def _fit(run, epochs=3, callbacks=()):
    X, y = blobs(32)
    return fit(make_mlp(), make_head(), Constant(16.0, epochs), TensorBatches(X, y, 16), TrainConfig(),
               run_dir=run, callbacks=callbacks, progress=False)


def test_a_second_process_is_refused_at_once_and_a_killed_ones_lock_is_taken_over(tmp_path, caplog):
    import signal
    import time

    from _cli import start, wait_for

    run = tmp_path / "run"
    holder = start(sys.executable, "-c", _HOLDER, str(run), "30")
    try:
        wait_for(lambda: (run / "checkpoint.pt").is_file(), 120, holder, "the holder's first epoch")
        began = time.monotonic()
        with pytest.raises(RunLockedError, match=rf"run folder {run} is in use: PID {holder.pid} on "):
            _fit(run)
        assert time.monotonic() - began < 5  # at once, not after waiting for the lock
        assert records.read_metrics(run) is None and len(records.read_history(run)) == 1  # untouched
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    with caplog.at_level("WARNING", logger="heatup_lib.runs"):
        result = _fit(run)
    assert f"taking over the lock of PID {holder.pid}" in caplog.text
    assert result.resumed_from_epoch == 1 and records.load_record(run).complete
    assert not (run / records.LOCK_FILE).exists()


def test_an_interrupted_run_resumes_in_the_same_process_and_another_thread_is_refused(tmp_path):
    import threading

    run = tmp_path / "run"

    def interrupt(epoch, *_):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as info:
        _fit(run, callbacks=[interrupt])
    assert held_run_folders() == [run]  # the traceback still holds the interrupted run's folder
    errors = []
    thread = threading.Thread(target=lambda: errors.append(pytest.raises(RunLockedError, _fit, run)))
    thread.start()
    thread.join()
    assert "in use by another thread of this process" in str(errors[0].value)
    result = _fit(run)  # this thread's own abandoned lock: taken over, the run resumes
    assert result.resumed_from_epoch == 1 and held_run_folders() == [] and info.value is not None
    assert not (run / records.LOCK_FILE).exists()


def test_the_lock_is_released_after_a_refusal_a_load_and_a_bad_checkpoint(tmp_path):
    run = tmp_path / "run"
    _fit(run)
    assert not (run / records.LOCK_FILE).exists()
    assert _fit(run).cached and not (run / records.LOCK_FILE).exists()
    X, y = blobs(32)
    with pytest.raises(RunDirConflictError):
        fit(make_mlp(), make_head(), Constant(4.0, 3), TensorBatches(X, y, 16), TrainConfig(), run_dir=run,
            progress=False)
    (run / "metrics.json").unlink()
    (run / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(records.CheckpointError, match="checkpoint.pt is not a checkpoint heatup will load.*"
                                                      "delete it to train this run again from epoch 0"):
        _fit(run)
    assert held_run_folders() == [] and not (run / records.LOCK_FILE).exists()


def test_stale_temporary_files_of_a_dead_writer_go_when_the_folder_is_opened(tmp_path):
    import subprocess

    run = tmp_path / "run"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    stale = run / f".checkpoint.pt.{int(dead.stdout)}.k2j4h5g6.tmp"
    live = run / f".checkpoint.pt.{os.getpid()}.aaaaaaaa.tmp"
    run.mkdir()
    stale.write_bytes(b"x" * 1000)
    live.write_bytes(b"y")
    _fit(run)
    assert not stale.exists() and live.exists()


@pytest.mark.parametrize("name", ["../x", "a/b", "..", ".", "", "a\\b"])
def test_run_name_must_stay_inside_the_runs_folder(name):
    with pytest.raises(ValueError, match="run_name must be"):
        check_run_name(name)
    assert check_run_name("cub200-hln-1") == "cub200-hln-1"
