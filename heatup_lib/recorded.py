"""The runs a page shows: run records with the arrays a chapter draws, committed without checkpoints, found by their parameters.

A chapter never needs a network to draw its figures: it needs the history, the final metrics
and a few arrays (test embeddings, class weights, snapshots). A *shown run* is a run record
(:mod:`heatup_lib.records`) plus ``arrays.npz`` and, where a page needs weights (the training
panel's starting network), a small ``weights.pt``. :func:`export` copies one into ``records/``
without its checkpoint; :func:`find` looks a run up by its parameters in the committed
records and the local runs, so that a chapter loads what exists and trains only what is
missing -- the UvA tutorials' "load the checkpoint if it exists, else train".

Every record says which code made it (``environment.json``: the code fingerprint of its
modules); :attr:`ShownRun.stale` is True when the current code has a different fingerprint,
and the pages say so.
"""

from __future__ import annotations

import io
import logging
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import records
from .atomic import atomic_torch_save, atomic_write_bytes
from .fingerprint import code_fingerprint

__all__ = ["ARRAYS_FILE", "WEIGHTS_FILE", "ShownRun", "write_arrays", "read_arrays", "write_weights",
           "read_weights", "export", "find", "load", "describe_origin", "RECIPES", "run_recipe_and_preset", "export_all"]

logger = logging.getLogger(__name__)

ARRAYS_FILE = "arrays.npz"
WEIGHTS_FILE = "weights.pt"
_EXPORTED = (records.PARAMS_FILE, records.HISTORY_FILE, records.METRICS_FILE, records.ENVIRONMENT_FILE,
             ARRAYS_FILE, WEIGHTS_FILE)


@dataclass
class ShownRun:
    """A complete run record with its arrays, and where it came from."""

    path: Path
    params: dict[str, Any]
    history: list[dict[str, Any]]
    metrics: dict[str, Any]
    environment: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    origin: str = "local"          # "committed" (records/), "local" (runs/, an earlier build) or "trained"

    @property
    def stale(self) -> bool:
        """True when the code that made the record differs from the current code (by fingerprint)."""
        modules = self.environment.get("code_modules")
        recorded = self.environment.get("code_fingerprint")
        if not modules or not recorded:
            return True
        try:
            return code_fingerprint(tuple(modules)) != recorded
        except ImportError:  # a module that no longer exists
            return True

    @property
    def seed(self) -> Any:
        """The seed of the run's config."""
        return self.params.get("config", {}).get("seed")


def write_arrays(run_dir: str | Path, **arrays: np.ndarray | torch.Tensor) -> Path:
    """Write ``arrays.npz`` (compressed) atomically; tensors are stored as numpy arrays."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{k: (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v))
                                   for k, v in arrays.items()})
    return atomic_write_bytes(Path(run_dir) / ARRAYS_FILE, buffer.getvalue())


def read_arrays(run_dir: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a shown run (empty when it has none); nothing is unpickled."""
    path = Path(run_dir) / ARRAYS_FILE
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def write_weights(run_dir: str | Path, state: dict[str, dict[str, torch.Tensor]]) -> Path:
    """Write ``weights.pt``: state dicts (e.g. ``{"net": ..., "head": ...}``) in float16 to keep it small."""
    small = {part: {k: (v.half() if v.is_floating_point() else v) for k, v in sd.items()}
             for part, sd in state.items()}
    return atomic_torch_save(Path(run_dir) / WEIGHTS_FILE, small)


def read_weights(run_dir: str | Path) -> dict[str, dict[str, torch.Tensor]] | None:
    """The weights of a shown run in float32 (loaded with ``weights_only=True``), or None."""
    path = Path(run_dir) / WEIGHTS_FILE
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {part: {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}
            for part, sd in state.items()}


def export(run_dir: str | Path, dest: str | Path) -> Path:
    """Copy a complete run record and its arrays to ``dest`` (e.g. under ``records/``), without the checkpoint."""
    run_dir, dest = Path(run_dir), Path(dest)
    if records.read_metrics(run_dir) is None:
        raise ValueError(f"{run_dir} is not a complete run record (no {records.METRICS_FILE}); nothing exported")
    tmp = dest.with_name(f".{dest.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for name in _EXPORTED:
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, tmp / name)
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    return dest


def load(run_dir: str | Path, origin: str = "local") -> ShownRun:
    """Read a complete shown run."""
    record = records.load_record(run_dir)
    if not record.complete:
        raise ValueError(f"{run_dir} is not a complete run record (no {records.METRICS_FILE})")
    return ShownRun(record.path, record.params, record.history, record.metrics or {}, record.environment or {},
                    read_arrays(run_dir), origin)


def find(params: dict[str, Any], roots: Iterable[tuple[str | Path, str]], need: Iterable[str] = ()
         ) -> ShownRun | None:
    """The first complete record with exactly these parameters (and the arrays named in ``need``) under the roots.

    ``roots`` are ``(folder, origin)`` pairs searched in order, e.g. ``[("records", "committed"),
    ("runs", "local")]``; a folder that does not exist is skipped.
    """
    wanted = records.normalize_params(params)
    need = tuple(need)
    for root, origin in roots:
        root = Path(root)
        if not root.is_dir():
            continue
        for path in sorted(root.rglob(records.PARAMS_FILE)):
            run_dir = path.parent
            if records.read_metrics(run_dir) is None or records.read_params(run_dir) != wanted:
                continue
            shown = load(run_dir, origin)
            if all(k in shown.arrays for k in need):
                return shown
    return None


def describe_origin(runs: Iterable[ShownRun]) -> str:
    """One line on where a set of shown runs came from: machine, dates, commits, how many were loaded or trained, stale ones."""
    runs = list(runs)
    if not runs:
        return "no runs"
    machines = sorted({r.environment.get("device_name") or r.environment.get("device") or "?" for r in runs})
    dates = sorted({str(r.environment.get("date", "?"))[:10] for r in runs})
    commits = sorted({str(r.environment.get("git_commit") or "?")[:10] for r in runs})
    origins = {o: sum(r.origin == o for r in runs) for o in ("committed", "local", "trained")}
    how = ", ".join(f"{n} {word}" for o, n in origins.items() if n
                    for word in [{"committed": "loaded from records/", "local": "loaded from runs/",
                                  "trained": "trained here"}[o]])
    stale = sum(r.stale for r in runs)
    text = (f"{len(runs)} runs on {', '.join(machines)}, {' to '.join([dates[0], dates[-1]][:len(set(dates))])}, "
            f"commit {', '.join(commits)}; {how}")
    return text + (f"; **{stale} made by code that has changed since** (rerun with RETRAIN=1)" if stale else "")


RECIPES = ("mnist", "benchmark")  # the recipes whose runs pages show (chapters 2 and 5; 3 and 5)


def run_recipe_and_preset(params: dict[str, Any]) -> tuple[str | None, str | None]:
    """The recipe ("mnist" or "benchmark") and the preset a run's parameters name."""
    extra = params.get("extra", {}) if isinstance(params, dict) else {}
    if "benchmark" in extra:
        return "benchmark", extra["benchmark"].get("preset")
    return extra.get("recipe"), extra.get("preset")


def export_all(runs_root: str | Path, records_root: str | Path, recipe: str, preset: str) -> list[Path]:
    """Export every complete run of ``recipe`` on ``preset`` under ``runs_root`` to ``records_root/<recipe>/<preset>/``.

    A record keeps its run folder's name (which ends in its parameters' digest); what is there
    already under that name is replaced.
    """
    out = []
    for path in sorted(Path(runs_root).rglob(records.METRICS_FILE)):
        params = records.read_params(path.parent)
        if params is not None and run_recipe_and_preset(params) == (recipe, preset):
            out.append(export(path.parent, Path(records_root) / recipe / preset / path.parent.name))
    return out
