"""heatup_lib.reproduce.stage_book: the book's sources assembled with the executed chapters (no browser, no build)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from heatup_lib.reproduce import stage_book


def _mini_root(tmp_path: Path, toc_files: list[str]) -> Path:
    root = tmp_path / "root"
    (root / "book").mkdir(parents=True)
    (root / "book" / "intro.md").write_text("# Intro\n")
    (root / "_config.yml").write_text("title: t\n")
    chapters_yaml = "".join(f"      - file: {f}\n" for f in toc_files)
    (root / "_toc.yml").write_text(f"format: jb-book\nroot: book/intro\nparts:\n  - caption: C\n    chapters:\n{chapters_yaml}")
    (root / "notebooks").mkdir()
    (root / "notebooks" / "01_a.ipynb").write_text('{"clean": true}')
    return root


def test_stage_book_stages_the_executed_notebooks(tmp_path: Path) -> None:
    root = _mini_root(tmp_path, ["notebooks/01_a"])
    executed = tmp_path / "executed"
    executed.mkdir()
    executed_nb = {"cells": [], "metadata": {"executed": True}, "nbformat": 4, "nbformat_minor": 5}
    (executed / "01_a.ipynb").write_text(json.dumps(executed_nb))
    out = tmp_path / "site"
    (out / "stale").mkdir(parents=True)  # an earlier staging is replaced, not merged
    assert stage_book(executed, out, root) == out
    assert json.loads((out / "notebooks" / "01_a.ipynb").read_text()) == executed_nb
    assert (out / "book" / "intro.md").is_file() and (out / "_toc.yml").is_file() and (out / "_config.yml").is_file()
    assert not (out / "stale").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [], "a staging folder was left behind"


def test_stage_book_names_a_chapter_that_was_not_executed(tmp_path: Path) -> None:
    root = _mini_root(tmp_path, ["notebooks/01_a", "notebooks/02_b"])
    executed = tmp_path / "executed"
    executed.mkdir()
    (executed / "01_a.ipynb").write_text("{}")
    out = tmp_path / "site"
    with pytest.raises(FileNotFoundError, match=r"notebooks/02_b"):
        stage_book(executed, out, root)
    assert not out.exists(), "a failed staging must not leave a half-built site"
    with pytest.raises(FileNotFoundError, match="heatup reproduce"):
        stage_book(tmp_path / "nothing", out, root)
