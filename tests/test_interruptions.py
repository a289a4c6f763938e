"""Interruptions of the real command: Ctrl-C (SIGINT to the job) and SIGKILL of `prepare` and `train`,
and two `heatup train` processes on one run folder.

The interrupted process runs the real CLI with one library function slowed down (decoding an
image, or one epoch), so that the signal lands mid-work at a known point; the process that resumes
is the plain command.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from _cli import alive, children, heatup, start, wait_for
from heatup_lib.data.cache import prepare_dataset
from trees import write_cub_tree

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; flock")]

# Runs `heatup ARGS` with FUNCTION (module.name) slowed by DELAY seconds per call.
_SLOWED = """
import importlib, sys, time
target, delay = sys.argv[1], float(sys.argv[2])
module = importlib.import_module(target.rsplit(".", 1)[0])
real = getattr(module, target.rsplit(".", 1)[1])
def slowed(*args, **kwargs):
    time.sleep(delay)
    return real(*args, **kwargs)
setattr(module, target.rsplit(".", 1)[1], slowed)
from heatup_lib import cli
sys.exit(cli.main(sys.argv[3:]))
"""


def _start_slowed(target: str, delay: float, *args: str):
    return start(sys.executable, "-c", _SLOWED, target, str(delay), *args)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("interrupt")
    write_cub_tree(root / "tree", num_classes=8, images_per_class=6, seed=1)
    prepare_dataset("cub200", root / "tree", root / "reference", size=40, workers=0, progress=False)
    return root


def _train_args(cache: Path, runs: Path, epochs: int = 4) -> list[str]:
    return ["train", "--dataset", "cub200", "--row", "ln", "--data", str(cache), "--preset", "smoke",
            "--epochs", str(epochs), "--batch-size", "8", "--crop-size", "32", "--eval-every", "0",
            "--device", "cpu", "--no-pretrained", "--no-progress", "--runs-dir", str(runs), "--run-name", "r"]


def _prepare_args(tree: Path, out: Path) -> list[str]:
    return ["prepare", "cub200", "--root", str(tree / "tree"), "--out", str(out), "--size", "40",
            "--workers", "2"]


def _resume_command(stderr: str) -> list[str]:
    """The command between backticks in the interruption message, without its leading `heatup`."""
    command = shlex.split(stderr.split("`")[1])
    assert command[0] == "heatup"
    return command[1:]


def _same_cache(out: Path, reference: Path) -> None:
    for name in ("train_images.npy", "train_labels.npy", "test_images.npy", "test_labels.npy"):
        assert np.array_equal(np.load(out / name), np.load(reference / name)), name


def test_ctrl_c_during_prepare_exits_130_names_the_command_and_leaves_no_worker(tree, tmp_path):
    out = tmp_path / "cache"
    args = _prepare_args(tree, out)
    proc = _start_slowed("heatup_lib.data.cache.load_resized", 0.5, *args)
    wait_for(lambda: (out / "train.progress.json").is_file(), 120, proc, "the first decoded chunk")
    workers = children(proc.pid)
    assert workers, "no decoding workers to interrupt"
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole job gets SIGINT
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert f"heatup prepare: interrupted; the cache in {out} keeps every finished chunk" in err
    assert _resume_command(err) == args
    wait_for(lambda: not any(alive(w) for w in workers), 10, what="the workers to end")
    assert (out / "train_images.npy.partial").is_file() and not (out / "manifest.json").exists()
    again = heatup(*_resume_command(err))
    assert again.returncode == 0, again.stderr
    _same_cache(out, tree / "reference")


def test_sigkilled_prepare_leaves_no_worker_and_its_temporary_files_go(tree, tmp_path):
    out = tmp_path / "cache"
    proc = _start_slowed("heatup_lib.data.cache.load_resized", 0.15, *_prepare_args(tree, out))
    wait_for(lambda: (out / "train.progress.json").is_file(), 120, proc, "the first decoded chunk")
    workers = children(proc.pid)
    assert workers, "no decoding workers"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    wait_for(lambda: not any(alive(w) for w in workers), 10, what="the orphaned workers to end")
    stale = out / f".train.progress.json.{proc.pid}.abcd1234.tmp"  # what a kill mid-write leaves
    stale.write_text("{half")
    again = heatup(*_prepare_args(tree, out))
    assert again.returncode == 0, again.stderr
    assert not stale.exists() and not list(out.glob(".*.tmp")) and not list(out.glob("*.partial"))
    _same_cache(out, tree / "reference")


def test_ctrl_c_during_train_names_the_run_folder_and_the_command_that_resumes(tree, tmp_path):
    runs = tmp_path / "runs"
    args = _train_args(tree / "reference", runs)
    proc = _start_slowed("heatup_lib.train._train_epoch", 3.0, *args)
    run = runs / "r"
    wait_for(lambda: (run / "checkpoint.pt").is_file(), 180, proc, "the first checkpoint")
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert f"heatup train: interrupted; the run folder {run} keeps its last finished epoch" in err
    assert _resume_command(err) == args
    assert not (run / "run.lock").exists() and not (run / "metrics.json").exists()
    again = heatup(*_resume_command(err))
    assert again.returncode == 0, again.stderr
    assert f"run trained: {run}" in again.stdout
    assert json.loads((run / "environment.json").read_text())["started_at_epoch"] >= 1
    assert len((run / "history.jsonl").read_text().splitlines()) == 4


def test_two_trainings_of_one_run_folder_the_second_fails_at_once_a_killed_ones_lock_is_taken_over(
        tree, tmp_path):
    runs = tmp_path / "runs"
    args = _train_args(tree / "reference", runs)
    first = _start_slowed("heatup_lib.train._train_epoch", 3.0, *args)
    run = runs / "r"
    wait_for(lambda: (run / "checkpoint.pt").is_file(), 180, first, "the first checkpoint")
    assert json.loads((run / "run.lock").read_text())["pid"] == first.pid
    start_second = time.monotonic()
    second = heatup(*args)
    assert first.poll() is None, "the first training ended before the second was refused"
    assert second.returncode == 2, second.stderr
    assert "Traceback" not in second.stderr
    assert f"run folder {run} is in use: PID {first.pid}" in second.stderr
    assert time.monotonic() - start_second < 60
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    assert (run / "run.lock").is_file()  # a killed writer cannot clean up
    third = heatup(*args)
    assert third.returncode == 0, third.stderr
    assert f"taking over the lock of PID {first.pid}" in third.stderr
    assert json.loads((run / "environment.json").read_text())["started_at_epoch"] >= 1
    assert not (run / "run.lock").exists() and (run / "metrics.json").is_file()
