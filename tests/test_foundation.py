"""Atomic writes, notebook parameter checks, presets and the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from heatup_lib import io, params
from heatup_lib.reproduce import PRESETS, load_preset, summary_table, ChapterRun


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.json"
    io.atomic_write_json(target, {"b": 1, "a": [1, 2]})
    assert json.loads(target.read_text()) == {"a": [1, 2], "b": 1}
    io.atomic_write_text(target, "x")
    assert target.read_text() == "x"
    io.atomic_torch_save(tmp_path / "t.pt", {"w": torch.arange(3)})
    assert torch.equal(torch.load(tmp_path / "t.pt", weights_only=True)["w"], torch.arange(3))
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["a.json", "t.pt"]


def test_failed_atomic_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.write_text("old")

    def explode(f):
        f.write(b"half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        io._atomic(target, explode)
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["a.txt"]


@pytest.mark.parametrize("call, message", [
    (lambda: params.check_choice("dataset", "imagenet", ["cub200", "cars196"]), r"dataset='imagenet'.*\['cub200', 'cars196'\]"),
    (lambda: params.check_int("num_epochs", 2.5, 1), r"num_epochs=2.5 must be an integer"),
    (lambda: params.check_int("num_epochs", 0, 1), r"num_epochs=0 must be >= 1"),
    (lambda: params.check_float("alpha", 0.0, 0.0, strict_min=True), r"alpha=0.0 must be > 0.0"),
    (lambda: params.check_float("lr", float("nan")), r"lr=nan must be a finite number"),
    (lambda: params.check_bool("pretrained", "yes"), r"pretrained='yes' must be True or False"),
    (lambda: params.check_choices("variants", "hbn", ["sm", "hbn"]), r"must be a list"),
    (lambda: params.check_choices("variants", ["hbn", "xx"], ["sm", "hbn"]), r"holds 'xx'"),
])
def test_parameter_checks_name_value_and_accepted(call, message) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_parameter_checks_pass_good_values() -> None:
    assert params.check_choice("d", "a", "ab") == "a"
    assert params.check_int("n", 3, 1, 5) == 3
    assert params.check_float("x", 2, 0, strict_min=True) == 2.0
    assert params.check_choices("v", ("a",), "ab") == ["a"]


def test_presets_load_and_carry_their_name() -> None:
    for preset in PRESETS:
        p = load_preset(preset)
        assert p["preset"] == preset and "runs_dir" in p
    with pytest.raises(ValueError, match="preset must be one of"):
        load_preset("fast")


def test_summary_table_lists_every_chapter(tmp_path: Path) -> None:
    text = summary_table([ChapterRun("01_a", "smoke", "ok", 1.25, tmp_path / "01_a.ipynb"),
                          ChapterRun("02_b", "smoke", "failed", 2.0, tmp_path / "02_b.ipynb", "AssertionError: x")])
    assert "01_a" in text and "1.2 s" in text and "failed" in text and "02_b: AssertionError: x" in text


def _heatup(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "heatup_lib.cli", *args], capture_output=True, text=True, timeout=120)


def test_cli_prepare_mnist_writes_torchvision_layout(tmp_path: Path) -> None:
    proc = _heatup("prepare", "mnist", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte").stat().st_size == 16 + 60_000 * 784


def test_cli_rejects_unknown_preset() -> None:
    proc = _heatup("reproduce", "--preset", "fast")
    assert proc.returncode == 2 and "invalid choice: 'fast'" in proc.stderr
