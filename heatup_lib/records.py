"""Run records: one folder per training run, written atomically, read back by chapters and the CLI.

A record folder holds
``params.json``      everything that determines the result (written first),
``environment.json`` versions, device, git commit, host and date,
``checkpoint.pt``    the last finished epoch: weights, optimiser, history, RNG states,
``history.jsonl``    one JSON object per finished epoch,
``metrics.json``     the final evaluation -- written last, so its presence marks a complete run,
``run.lock``         while a process writes the run: its PID (see :class:`heatup_lib.runs.RunLock`).

Every file is checked as it is read: a file that is not what it should be raises
:class:`RecordError` (a :class:`CheckpointError` for ``checkpoint.pt``) naming it. A checkpoint is
only ever loaded with ``torch.load(weights_only=True)``: tensors and plain data, never arbitrary
Python objects.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import math
import os
import pickle
import platform
import re
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from heatup_lib.atomic import atomic_torch_save, atomic_write_json, atomic_write_text

__all__ = [
    "PARAMS_FILE", "HISTORY_FILE", "METRICS_FILE", "CHECKPOINT_FILE", "ENVIRONMENT_FILE",
    "LOCK_FILE", "RecordError", "CheckpointError", "load_torch_file",
    "RunRecord", "normalize_params", "normalize_values", "params_digest", "params_diff", "params_match",
    "write_params", "read_params", "write_history", "read_history", "write_metrics",
    "read_metrics", "write_environment", "environment_info", "git_commit",
    "save_checkpoint", "load_checkpoint", "load_record", "find_records",
]

logger = logging.getLogger(__name__)

PARAMS_FILE = "params.json"
HISTORY_FILE = "history.jsonl"
METRICS_FILE = "metrics.json"
CHECKPOINT_FILE = "checkpoint.pt"
ENVIRONMENT_FILE = "environment.json"
LOCK_FILE = "run.lock"


class RecordError(ValueError):
    """A file of a run record that is unreadable or not what it should be (the message names it)."""


class CheckpointError(RecordError):
    """A checkpoint heatup will not load: damaged, or not tensors and plain data."""


def _jsonable(obj: Any, nonfinite_to_null: bool = False) -> Any:
    """Turn tuples, paths, numpy and torch scalars into plain JSON types; refuse anything else.

    Non-finite floats are refused, or become ``None`` (JSON null) with ``nonfinite_to_null``.
    """
    def conv(x: Any) -> Any:
        if x is None or isinstance(x, (bool, int, str)):
            return x
        if isinstance(x, float):
            if math.isfinite(x):
                return float(x)
            if nonfinite_to_null:
                logger.warning("storing the non-finite value %r as null", x)
                return None
            raise ValueError(f"record values must be finite numbers, got {x!r}")
        if isinstance(x, dict):
            return {str(k): conv(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [conv(v) for v in x]
        if isinstance(x, os.PathLike):
            return os.fspath(x)
        if isinstance(x, torch.Tensor) and x.numel() == 1:
            return conv(x.item())
        if hasattr(x, "item") and getattr(x, "shape", None) == ():  # numpy scalar
            return conv(x.item())
        raise ValueError(f"cannot store {type(x).__name__} {x!r} in a run record; "
                         "accepted: None, bool, int, finite float, str, path, list, tuple, dict")

    return conv(obj)


def normalize_values(values: dict[str, Any]) -> dict[str, Any]:
    """The JSON form of measured values (history rows, metrics): like :func:`normalize_params`, but NaN/inf become null."""
    return json.loads(json.dumps(_jsonable(values, nonfinite_to_null=True), sort_keys=True))


def normalize_params(params: dict[str, Any]) -> dict[str, Any]:
    """The JSON form of ``params`` (tuples become lists, paths strings): what ``params.json`` holds."""
    return json.loads(json.dumps(_jsonable(params), sort_keys=True))


def params_digest(params: dict[str, Any]) -> str:
    """A short hex digest of the normalised parameters (e.g. to name a run folder)."""
    text = json.dumps(normalize_params(params), sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def params_diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two parameter dicts (after JSON normalisation)."""
    def walk(x: Any, y: Any, prefix: str) -> list[str]:
        if isinstance(x, dict) and isinstance(y, dict):
            out: list[str] = []
            for key in sorted(set(x) | set(y)):
                name = f"{prefix}.{key}" if prefix else key
                if key not in x or key not in y:
                    out.append(name)
                else:
                    out.extend(walk(x[key], y[key], name))
            return out
        return [] if x == y and type(x) is type(y) else [prefix or "<root>"]

    return walk(normalize_params(a), normalize_params(b), "")


def params_match(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """True when two parameter dicts are identical after JSON normalisation."""
    return not params_diff(a, b)


def _read_json(path: Path, hint: str = "restore it or delete the run folder") -> dict[str, Any]:
    """The JSON object in ``path`` (``RecordError`` naming the file when it is not one)."""
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RecordError(f"{path} is not valid JSON ({err}); {hint}") from None
    if not isinstance(value, dict):
        raise RecordError(f"{path} holds a JSON {type(value).__name__}, not an object; {hint}")
    return value


def write_params(run_dir: str | Path, params: dict[str, Any]) -> Path:
    """Write ``params.json`` atomically."""
    return atomic_write_json(Path(run_dir) / PARAMS_FILE, normalize_params(params))


def read_params(run_dir: str | Path) -> dict[str, Any] | None:
    """The record's parameters, or None when it has no ``params.json``."""
    path = Path(run_dir) / PARAMS_FILE
    return _read_json(path) if path.is_file() else None


def write_history(run_dir: str | Path, history: list[dict[str, Any]]) -> Path:
    """Rewrite ``history.jsonl`` atomically, one JSON object per epoch."""
    lines = "".join(json.dumps(normalize_values(h), sort_keys=True) + "\n" for h in history)
    return atomic_write_text(Path(run_dir) / HISTORY_FILE, lines)


def read_history(run_dir: str | Path) -> list[dict[str, Any]]:
    """The per-epoch history (empty when the file is missing)."""
    path = Path(run_dir) / HISTORY_FILE
    if not path.is_file():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise RecordError(f"{path} is not UTF-8 text ({err})") from None
    rows = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise RecordError(f"{path}:{line_no} is not valid JSON ({err})") from None
        if not isinstance(row, dict):
            raise RecordError(f"{path}:{line_no} holds a JSON {type(row).__name__}, not an object")
        rows.append(row)
    return rows


def write_metrics(run_dir: str | Path, metrics: dict[str, Any]) -> Path:
    """Write ``metrics.json`` atomically (this marks the run complete)."""
    return atomic_write_json(Path(run_dir) / METRICS_FILE, normalize_values(metrics))


def read_metrics(run_dir: str | Path) -> dict[str, Any] | None:
    """The final metrics, or None for an incomplete run."""
    path = Path(run_dir) / METRICS_FILE
    return _read_json(path, "delete it to evaluate the run again") if path.is_file() else None


def git_commit(path: str | Path | None = None) -> str | None:
    """The git commit of the repository holding ``path`` (this package by default), with "-dirty" if modified.

    Where there is no git checkout (a copy of the tree on another machine), the environment
    variable ``HEATUP_GIT_COMMIT`` names the commit the copy was made from; else None.
    """
    cwd = Path(path) if path is not None else Path(__file__).resolve().parent
    fallback = os.environ.get("HEATUP_GIT_COMMIT") or None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                                text=True, timeout=10)
        if commit.returncode != 0:
            return fallback
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return fallback
    dirty = "-dirty" if status.returncode == 0 and status.stdout.strip() else ""
    return commit.stdout.strip() + dirty


def _cpu_name() -> str:
    """The CPU model from /proc/cpuinfo where there is one, else what ``platform`` says."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def environment_info(device: str | torch.device = "cpu", world_size: int = 1) -> dict[str, Any]:
    """Versions, device name, git commit, host and date of this process, for ``environment.json``."""
    import torchvision

    device = torch.device(device)
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = _cpu_name()
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cuda": torch.version.cuda,
        "device": str(device),
        "device_name": device_name,
        "world_size": world_size,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "git_commit": git_commit(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def write_environment(run_dir: str | Path, device: str | torch.device = "cpu", world_size: int = 1) -> Path:
    """Write ``environment.json`` atomically."""
    return atomic_write_json(Path(run_dir) / ENVIRONMENT_FILE, environment_info(device, world_size))


def save_checkpoint(run_dir: str | Path, state: dict[str, Any]) -> Path:
    """Write ``checkpoint.pt`` atomically (the state must load with ``weights_only=True``)."""
    return atomic_torch_save(Path(run_dir) / CHECKPOINT_FILE, state)


def load_torch_file(path: str | Path, map_location: str | torch.device = "cpu",
                    what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)``; a file it cannot load is a :class:`CheckpointError`.

    The message says why (damaged, or it would need arbitrary Python objects unpickled) and never
    suggests loading it with ``weights_only=False``.
    """
    path = Path(path)
    refused = f"{path} is not a {what} heatup will load"
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        if found:
            raise CheckpointError(
                f"{refused}: it asks to unpickle Python objects ({found[1]}), and heatup only "
                "loads tensors and plain data (weights_only=True)") from None
        torch_advice = ("Weights only", "Please file", "Check the documentation")
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = next((line for line in lines if not line.startswith(torch_advice)), "")[:200]
        raise CheckpointError(f"{refused}: it is damaged or truncated, or not a file of tensors "
                              f"and plain data (UnpicklingError: {detail})") from None
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001 -- torch raises EOFError, OSError, KeyError, ...
        detail = (str(err).strip().splitlines() or [""])[0][:200]
        raise CheckpointError(f"{refused}: it is damaged or truncated "
                              f"({type(err).__name__}{': ' + detail if detail else ''})") from None


def load_checkpoint(run_dir: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
    """The checkpoint, loaded with ``torch.load(weights_only=True)``, or None when there is none.

    A file that does not load, or holds no dict, raises :class:`CheckpointError`.
    """
    path = Path(run_dir) / CHECKPOINT_FILE
    if not path.is_file():
        return None
    checkpoint = load_torch_file(path, map_location)
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path} is not a checkpoint heatup will load: it holds a "
                              f"{type(checkpoint).__name__}, not a dict")
    return checkpoint


@dataclass
class RunRecord:
    """A run record folder read back: parameters, history, final metrics and environment."""

    path: Path
    params: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] | None = None
    environment: dict[str, Any] | None = None

    @property
    def complete(self) -> bool:
        """True when the run finished (``metrics.json`` was written)."""
        return self.metrics is not None

    @property
    def checkpoint_path(self) -> Path:
        """Where the run's checkpoint lives (it may be absent, e.g. in committed records)."""
        return self.path / CHECKPOINT_FILE

    def load_checkpoint(self, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
        """The run's checkpoint (``weights_only=True``), or None when it has none."""
        return load_checkpoint(self.path, map_location)


def load_record(run_dir: str | Path) -> RunRecord:
    """Read the record in ``run_dir``; raises ``FileNotFoundError`` when it has no ``params.json``."""
    run_dir = Path(run_dir)
    params = read_params(run_dir)
    if params is None:
        raise FileNotFoundError(f"{run_dir} is not a run record: no {PARAMS_FILE} in it")
    env_path = run_dir / ENVIRONMENT_FILE
    return RunRecord(
        path=run_dir,
        params=params,
        history=read_history(run_dir),
        metrics=read_metrics(run_dir),
        environment=_read_json(env_path) if env_path.is_file() else None,
    )


def find_records(root: str | Path, complete_only: bool = False) -> list[RunRecord]:
    """Every run record under ``root`` (folders holding ``params.json``), sorted by path."""
    root = Path(root)
    if not root.is_dir():
        return []
    records = [load_record(p.parent) for p in sorted(root.rglob(PARAMS_FILE))]
    return [r for r in records if r.complete or not complete_only]
