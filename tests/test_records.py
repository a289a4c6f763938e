"""Run records: JSON normalisation, parameter comparison, reading and finding records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from heatup_lib import records


def test_params_match_and_diff_after_json_normalisation():
    a = {"config": {"lr": 0.001, "betas": (0.9, 0.999), "root": Path("/x")}, "extra": {"dataset": "mnist"}}
    b = {"config": {"lr": 0.001, "betas": [0.9, 0.999], "root": "/x"}, "extra": {"dataset": "mnist"}}
    assert records.params_match(a, b)
    assert records.params_digest(a) == records.params_digest(b)
    c = {"config": {"lr": 0.0001, "betas": [0.9, 0.999], "root": "/x"}, "extra": {"dataset": "mnist", "k": 1}}
    assert not records.params_match(a, c)
    assert records.params_diff(a, c) == ["config.lr", "extra.k"]
    assert records.params_digest(a) != records.params_digest(c)
    # 1 and 1.0 and True are different parameters
    assert records.params_diff({"x": 1}, {"x": 1.0}) == ["x"]
    assert records.params_diff({"x": 1}, {"x": True}) == ["x"]


def test_non_finite_or_opaque_values_are_refused():
    with pytest.raises(ValueError, match="finite"):
        records.normalize_params({"loss": float("nan")})
    with pytest.raises(ValueError, match="cannot store"):
        records.normalize_params({"f": object()})
    assert records.normalize_params({"t": torch.tensor(2.5)}) == {"t": 2.5}
    # measured values (history, metrics) keep a NaN as null instead of failing a long run
    assert records.normalize_values({"nmi": float("nan"), "r": [1.0, float("inf")]}) == {"nmi": None, "r": [1.0, None]}


def test_write_and_load_record_roundtrip(tmp_path):
    run = tmp_path / "runs" / "a"
    records.write_params(run, {"config": {"lr": 1e-3}})
    rec = records.load_record(run)
    assert rec.params == {"config": {"lr": 1e-3}} and rec.history == [] and not rec.complete
    history = [{"epoch": 0, "loss": 1.5}, {"epoch": 1, "loss": 1.25}]
    records.write_history(run, history)
    assert (run / "history.jsonl").read_text().count("\n") == 2
    records.write_environment(run, "cpu")
    records.save_checkpoint(run, {"epoch": 2, "w": torch.arange(3.0)})
    records.write_metrics(run, {"recall@1": 0.5})
    rec = records.load_record(run)
    assert rec.complete and rec.metrics == {"recall@1": 0.5} and rec.history == history
    env = rec.environment
    assert {"python", "torch", "torchvision", "device_name", "git_commit", "hostname", "date"} <= set(env)
    assert env["torch"] == torch.__version__
    ckpt = rec.load_checkpoint()
    assert ckpt["epoch"] == 2 and torch.equal(ckpt["w"], torch.arange(3.0))
    # no temporary files left behind by the atomic writes
    assert sorted(p.name for p in run.iterdir()) == sorted(
        ["params.json", "history.jsonl", "environment.json", "checkpoint.pt", "metrics.json"])


def test_find_records_and_missing_record(tmp_path):
    for name, done in (("b", True), ("a", False), ("c/d", True)):
        records.write_params(tmp_path / name, {"name": name})
        if done:
            records.write_metrics(tmp_path / name, {})
    (tmp_path / "not_a_run").mkdir()
    found = records.find_records(tmp_path)
    assert [r.params["name"] for r in found] == ["a", "b", "c/d"]
    assert [r.params["name"] for r in records.find_records(tmp_path, complete_only=True)] == ["b", "c/d"]
    assert records.find_records(tmp_path / "nothing") == []
    with pytest.raises(FileNotFoundError, match="params.json"):
        records.load_record(tmp_path / "not_a_run")


def test_git_commit_tolerates_no_repository(tmp_path, monkeypatch):
    monkeypatch.delenv("HEATUP_GIT_COMMIT", raising=False)
    assert records.git_commit(tmp_path) is None
    monkeypatch.setenv("HEATUP_GIT_COMMIT", "0123abc")  # a copy of the tree made from that commit
    assert records.git_commit(tmp_path) == "0123abc"
    monkeypatch.delenv("HEATUP_GIT_COMMIT")
    commit = records.git_commit()
    assert commit is None or len(commit.removesuffix("-dirty")) == 40


def test_json_files_are_valid_and_sorted(tmp_path):
    records.write_params(tmp_path, {"b": 1, "a": {"d": 2, "c": 3}})
    text = (tmp_path / "params.json").read_text()
    assert json.loads(text) == {"a": {"c": 3, "d": 2}, "b": 1}
    assert text.index('"a"') < text.index('"b"')


# --- damaged records: named errors, and nothing is ever unpickled ----------------------------------

@pytest.mark.parametrize("file, text, message", [
    ("params.json", "{oops", r"params\.json is not valid JSON"),
    ("params.json", "[1, 2]", r"params\.json holds a JSON list, not an object"),
    ("metrics.json", "\x00garbage", r"metrics\.json is not valid JSON .*delete it to evaluate the run again"),
    ("metrics.json", '"0.5"', r"metrics\.json holds a JSON str, not an object"),
    ("environment.json", "null", r"environment\.json holds a JSON NoneType, not an object"),
    ("history.jsonl", '{"epoch": 0}\n{"epoch": 1', r"history\.jsonl:2 is not valid JSON"),
    ("history.jsonl", '{"epoch": 0}\n[1]\n', r"history\.jsonl:2 holds a JSON list, not an object"),
])
def test_a_damaged_record_file_is_named(tmp_path, file, text, message):
    records.write_params(tmp_path, {"config": {"lr": 1e-3}})
    (tmp_path / file).write_bytes(text.encode("utf-8", errors="surrogateescape"))
    with pytest.raises(records.RecordError, match=message) as info:
        records.load_record(tmp_path)
    assert str(tmp_path / file) in str(info.value) and isinstance(info.value, ValueError)


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_that_is_not_tensors_and_plain_data_is_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"epoch": 1, "net": _Payload(marker)}, tmp_path / "checkpoint.pt")
    with pytest.raises(records.CheckpointError) as info:
        records.load_checkpoint(tmp_path)
    message = str(info.value)
    assert "checkpoint.pt is not a checkpoint heatup will load: it asks to unpickle Python objects" in message
    assert "posix.system" in message and "weights_only=False" not in message and not marker.exists()


@pytest.mark.parametrize("damage, message", [
    (lambda b: b"", "damaged or truncated (EOFError"),
    (lambda b: b[: len(b) // 2], "damaged or truncated"),
    (lambda b: b"PK\x03\x04" + b"\x00" * 64, "damaged or truncated"),
    (lambda b: b"plain text, not a checkpoint", "damaged or truncated"),
])
def test_a_truncated_or_garbage_checkpoint_is_named(tmp_path, damage, message):
    records.save_checkpoint(tmp_path, {"epoch": 2, "w": torch.arange(1000.0)})
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(records.CheckpointError, match="is not a checkpoint heatup will load") as info:
        records.load_checkpoint(tmp_path)
    assert message in str(info.value) and str(path) in str(info.value)


def test_a_checkpoint_must_hold_a_dict(tmp_path):
    torch.save([1, 2], tmp_path / "checkpoint.pt")
    with pytest.raises(records.CheckpointError, match="it holds a list, not a dict"):
        records.load_checkpoint(tmp_path)
