"""Batch reproduction: the summary of executed chapters."""

from __future__ import annotations

from pathlib import Path

from heatup_lib.reproduce import ChapterRun, summary_table


def test_summary_table_lists_every_chapter(tmp_path: Path) -> None:
    text = summary_table([ChapterRun("01_a", "smoke", "ok", 1.25, tmp_path / "01_a.ipynb"),
                          ChapterRun("02_b", "smoke", "failed", 2.0, tmp_path / "02_b.ipynb", "AssertionError: x")])
    assert "01_a" in text and "1.2 s" in text and "failed" in text and "02_b: AssertionError: x" in text
