"""Shared by the bench scripts: append a run's text to its own section of bench/RESULTS.md."""

from __future__ import annotations

from pathlib import Path

from heatup_lib.atomic import atomic_write_text


def record_section(path: Path, section: str, text: str) -> None:
    """Append ``text`` at the end of ``section`` (a ``## ...`` line) of ``path``, creating either if missing."""
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    lines = old.splitlines(keepends=True)
    if section + "\n" not in lines:
        new = old.rstrip("\n") + "\n\n" + section + "\n\n" + text
    else:
        start = lines.index(section + "\n")
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        head, tail = "".join(lines[:end]).rstrip("\n"), "".join(lines[end:])
        new = head + "\n\n" + text + ("\n" + tail if tail else "")
    atomic_write_text(path, new)
