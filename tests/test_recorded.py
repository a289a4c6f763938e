"""Shown runs: arrays beside a record, exported without the checkpoint, found by their parameters, flagged when stale."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from _toys import blobs, make_head, make_mlp
from heatup_lib import recorded, records
from heatup_lib.data.batches import TensorBatches
from heatup_lib.schedules import Constant
from heatup_lib.train import TrainConfig, fit


@pytest.fixture()
def run(tmp_path):
    X, y = blobs(32)
    result = fit(make_mlp(), make_head(), Constant(16.0, 1), TensorBatches(X, y, 16), TrainConfig(),
                 run_dir=tmp_path / "runs" / "a", extra_params={"recipe": "mnist", "preset": "smoke"},
                 eval_fn=lambda n, h: {"score": 0.5}, progress=False)
    recorded.write_arrays(result.run_dir, emb=torch.arange(6.0).reshape(3, 2), labels=np.array([0, 1, 1]))
    return result


def test_arrays_and_weights_round_trip_without_pickles(run, tmp_path):
    arrays = recorded.read_arrays(run.run_dir)
    assert np.array_equal(arrays["emb"], np.arange(6.0, dtype=np.float32).reshape(3, 2))
    assert arrays["labels"].tolist() == [0, 1, 1] and recorded.read_arrays(tmp_path) == {}
    net = make_mlp()
    recorded.write_weights(run.run_dir, {"net": net.state_dict()})
    back = recorded.read_weights(run.run_dir)["net"]
    for k, v in net.state_dict().items():
        assert back[k].dtype == torch.float32 and torch.allclose(back[k], v, rtol=1e-3, atol=1e-3)  # float16 copy
    # a pickled object array is refused, not unpickled
    np.savez(run.run_dir / recorded.ARRAYS_FILE, bad=np.array([object()], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle"):
        recorded.read_arrays(run.run_dir)


def test_export_leaves_the_checkpoint_and_find_matches_exact_parameters(run, tmp_path):
    dest = recorded.export(run.run_dir, tmp_path / "records" / "mnist" / "smoke" / "a")
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        ["params.json", "history.jsonl", "metrics.json", "environment.json", "arrays.npz"])
    roots = [(tmp_path / "records", "committed"), (tmp_path / "runs", "local")]
    found = recorded.find(run.params, roots, need=("emb",))
    assert found.origin == "committed" and found.path == dest and found.metrics == {"score": 0.5}
    assert recorded.find(run.params, roots, need=("other",)) is None  # a record without the arrays asked for
    other = json.loads(json.dumps(run.params))
    other["config"]["lr"] = 0.5
    assert recorded.find(other, roots) is None
    assert recorded.find(run.params, [(tmp_path / "runs", "local")]).origin == "local"
    assert recorded.export_all(tmp_path / "runs", tmp_path / "again", "mnist", "smoke")[0].name == "a"
    assert recorded.export_all(tmp_path / "runs", tmp_path / "again", "mnist", "default") == []
    (run.run_dir / records.METRICS_FILE).unlink()
    with pytest.raises(ValueError, match="not a complete run record"):
        recorded.export(run.run_dir, tmp_path / "x")


def test_a_record_made_by_other_code_is_stale(run):
    shown = recorded.load(run.run_dir)
    assert not shown.stale and shown.environment["code_fingerprint"]
    env_path = run.run_dir / records.ENVIRONMENT_FILE
    env = json.loads(env_path.read_text())
    env["code_fingerprint"] = "0" * 16
    env_path.write_text(json.dumps(env))
    assert recorded.load(run.run_dir).stale
    assert "made by code that has changed since" in recorded.describe_origin([recorded.load(run.run_dir)])


def test_the_code_fingerprint_ignores_prose_but_not_code(tmp_path):
    from heatup_lib.fingerprint import source_fingerprint

    a = tmp_path / "a.py"
    a.write_text('"""Doc."""\n\ndef f(x):\n    """One."""\n    return x + 1  # a comment\n')
    before = source_fingerprint(a)
    a.write_text('"""Other doc."""\n\n\ndef f(x):\n    """Two."""\n    return x + 1\n')
    assert source_fingerprint(a) == before
    a.write_text('"""Doc."""\n\ndef f(x):\n    return x + 2\n')
    assert source_fingerprint(a) != before
