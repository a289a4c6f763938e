"""Atomic writes: a reader never sees a half-written file, a failed write keeps the old one."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from heatup_lib import atomic


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.json"
    atomic.atomic_write_json(target, {"b": 1, "a": [1, 2]})
    assert json.loads(target.read_text()) == {"a": [1, 2], "b": 1}
    atomic.atomic_write_text(target, "x")
    assert target.read_text() == "x"
    atomic.atomic_torch_save(tmp_path / "t.pt", {"w": torch.arange(3)})
    assert torch.equal(torch.load(tmp_path / "t.pt", weights_only=True)["w"], torch.arange(3))
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["a.json", "t.pt"]


def test_failed_atomic_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.write_text("old")

    def explode(f):
        f.write(b"half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        atomic._atomic(target, explode)
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["a.txt"]
