"""Atomic file writes: a reader never sees a half-written file, an interruption loses nothing.

A write goes to a temporary file ``.<name>.<pid>.<random>.tmp`` beside the target, which is then
renamed over it. A killed writer leaves its temporary file behind; the PID in the name lets
:func:`remove_stale_temps` tell it from the file of a writer that is still running.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_torch_save",
           "ensure_folder", "pid_running", "remove_stale_temps"]

logger = logging.getLogger(__name__)

_TEMP = re.compile(r"^\..+\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp$")


def pid_running(pid: int) -> bool:
    """True when a process with id ``pid`` exists on this machine (whoever owns it)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, but belongs to someone else
        return True
    return True


def ensure_folder(path: str | os.PathLike, what: str = "folder") -> Path:
    """Create ``path`` and its parents; ``NotADirectoryError`` names a file in the way."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocking = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
        if blocking is None:
            raise
        raise NotADirectoryError(f"{what} {str(path)!r} cannot be created: {str(blocking)!r} is a "
                                 "file, not a folder") from None
    return path


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that dead writers left in ``folder``; return what was deleted.

    Only files named as :func:`atomic_write_bytes` names them are touched, and only those whose
    writer's PID is no longer running (those of this process and of live processes are kept).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in folder.iterdir():
        match = _TEMP.match(entry.name)
        if match is None or not entry.is_file():
            continue
        pid = int(match["pid"])
        if pid == os.getpid() or pid_running(pid):
            continue
        try:
            entry.unlink()
        except FileNotFoundError:  # another process cleaned it first
            continue
        removed.append(entry)
        logger.info("removed %s, left by a writer (PID %d) that no longer runs", entry, pid)
    return removed


def _atomic(path: str | os.PathLike, write) -> Path:
    """Write through ``write(fileobj)`` into a temporary file beside ``path``, then rename it."""
    path = Path(path)
    ensure_folder(path.parent)
    prefix = f".{path.name}.{os.getpid()}."  # the PID tells a dead writer's file from a live one's
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return _atomic(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented, key-sorted JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> Path:
    """``torch.save`` ``obj`` to ``path`` atomically."""
    return _atomic(path, lambda f: torch.save(obj, f))
