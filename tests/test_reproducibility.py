"""The committed records still follow from the code: a smoke-scale record retrained from scratch gives its numbers again.

Every page of the book loads committed records instead of training. This test makes sure they
do not go stale silently: it rebuilds the jobs of committed smoke records from their parameters,
checks that the current code gives exactly those parameters, retrains them from scratch and
compares every recorded number. The retrain runs only on the CPU model the record was made on:
on another kind (here an AMD EPYC's records on an Intel Xeon with AMX) the float kernels differ
in their last bits and training drifts by 0.2-0.3 % in MAP@R and compactness.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from heatup_lib import mnist_recipe as R
from heatup_lib.presets import load_preset, project_root
from heatup_lib.recorded import load
from heatup_lib.records import _cpu_name

ROOT = project_root()
RECORDS = sorted((ROOT / "records" / "mnist" / "smoke").glob("*heat-up*"))
REGENERATE = ("heatup reproduce --preset smoke --only 02 && "
              "heatup export mnist --preset smoke --runs runs/smoke (then remove the weights.pt files)")


def _job(record) -> R.MnistJob:
    extra, config = record.params["extra"], record.params["config"]
    settings = R.MnistSettings.from_parameters(load_preset("smoke"))
    return R.MnistJob(settings, extra["setting"], extra["group"], config["seed"], extra["data_seed"],
                      extra["preset"], device=config["device"])


def _close(a, b, path=""):
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-4), f"{path}: {a} != {b}"
    else:
        assert a == b, path


@pytest.mark.parametrize("record_dir", RECORDS, ids=[p.name for p in RECORDS])
def test_a_committed_smoke_record_is_reproduced_from_scratch(record_dir: Path, tmp_path) -> None:
    record = load(record_dir)
    job = _job(record)
    assert R.job_params(job) == record.params, f"the code builds other parameters now; regenerate: {REGENERATE}"
    assert not record.stale, f"{record_dir.name} was made by other code; regenerate: {REGENERATE}"
    made_on, here = record.environment.get("device_name"), _cpu_name()
    if made_on != here:  # other CPU kinds run other float kernels, and training amplifies the last bits
        pytest.skip(f"recorded on a {made_on!r} CPU, this is a {here!r}: a retrain is exact only on the same kind")
    torch.set_num_threads(1)
    again = load(R.run_job(job, tmp_path))
    _close(again.metrics, record.metrics)
    drop = {"seconds"}
    _close([{k: v for k, v in h.items() if k not in drop} for h in again.history],
           [{k: v for k, v in h.items() if k not in drop} for h in record.history])
    for name, array in record.arrays.items():
        assert torch.allclose(torch.tensor(again.arrays[name]).double(), torch.tensor(array).double(),
                              rtol=1e-4, atol=1e-4), name


def test_there_are_smoke_records_to_reproduce() -> None:
    assert len(RECORDS) == 2, [p.name for p in RECORDS]
    assert all(json.loads((p / "params.json").read_text())["extra"]["preset"] == "smoke" for p in RECORDS)
