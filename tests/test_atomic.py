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


_SLOW_WRITER = """
import sys, time
from heatup_lib import atomic
def write(f):
    f.write(b"x" * 4096)
    f.flush()
    print("writing", flush=True)
    time.sleep(120)
atomic._atomic(sys.argv[1], write)
"""


def test_a_killed_writers_temporary_file_is_removed_and_a_live_writers_kept(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    from _cli import ENV

    target = tmp_path / "checkpoint.pt"
    target.write_bytes(b"old")
    writers = [subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(target)], stdout=subprocess.PIPE,
                                text=True, env=ENV) for _ in range(2)]
    try:
        for w in writers:
            assert w.stdout.readline().strip() == "writing"
        temps = {w.pid: [p for p in tmp_path.iterdir() if f".{w.pid}." in p.name] for w in writers}
        assert all(len(t) == 1 and t[0].name.startswith(".checkpoint.pt.") for t in temps.values())
        writers[0].send_signal(signal.SIGKILL)
        writers[0].wait(timeout=30)
        assert temps[writers[0].pid][0].stat().st_size == 4096  # left behind by the kill
        assert atomic.remove_stale_temps(tmp_path) == temps[writers[0].pid]
        assert not temps[writers[0].pid][0].exists() and temps[writers[1].pid][0].exists()
        assert target.read_bytes() == b"old"
    finally:
        for w in writers:
            w.kill()
            w.wait(timeout=30)


def test_a_file_in_the_way_of_a_folder_is_named(tmp_path: Path) -> None:
    (tmp_path / "runs").write_text("a file")
    with pytest.raises(NotADirectoryError, match=r"folder '.*runs/a/b' cannot be created: '.*runs' is a file"):
        atomic.ensure_folder(tmp_path / "runs" / "a" / "b")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        atomic.atomic_write_text(tmp_path / "runs" / "x.json", "{}")
