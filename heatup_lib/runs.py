"""A run's identity and its record folder: what determines the result, and refuse / load / resume.

A run is identified by its *parameters* (:func:`run_params`): the optimisation config, the
schedule, the networks (class, size, SHA-256 of the initial weights), the data (the batch
source's ``describe()``) and whatever the caller adds (dataset, preset, protocol). The folder
policy (:class:`RunFolder`) follows from it:

- a folder whose ``params.json`` differs from this run's parameters is never reused or
  overwritten: :class:`RunDirConflictError` names the differing keys;
- identical parameters and a ``metrics.json``: a finished run, loaded instead of trained;
- identical parameters and a checkpoint but no metrics: an interrupted run, resumed from its
  last finished epoch.

Only rank 0 writes (several processes read the same folder).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from . import records
from .atomic import atomic_write_json
from .data.batches import describe_batches
from .distributed import distributed_info
from .fingerprint import CORE_MODULES, code_fingerprint, state_fingerprint

__all__ = ["RunDirConflictError", "CHECKPOINT_FORMAT", "module_description", "run_params", "RunState",
           "RunFolder"]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1


class RunDirConflictError(ValueError):
    """The run folder holds a record of a run with different parameters."""


def module_description(module: nn.Module) -> dict[str, Any]:
    """Class, size, options and the SHA-256 of the current weights of a network or head."""
    cls = type(module)
    desc: dict[str, Any] = {
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "num_parameters": sum(p.numel() for p in module.parameters()),
        "init_sha256": state_fingerprint(module),
    }
    for name in ("embedding_dim", "num_classes", "variant", "activation", "alpha_mode"):
        value = getattr(module, name, None)
        if isinstance(value, (int, str)):
            desc[name] = value
    if hasattr(module, "bias") and not isinstance(module, nn.Linear):
        desc["bias"] = getattr(module, "bias") is not None
    if not hasattr(module, "alpha"):  # a head's repr holds its current alpha, which the schedule sets
        desc["architecture_sha256"] = hashlib.sha256(repr(module).encode()).hexdigest()
    return desc


def run_params(net: nn.Module, head: nn.Module, schedule: Any, data: Any, config: Any,
               extra_params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything that determines a run's result, as written to ``params.json`` (call before training)."""
    return records.normalize_params({
        "config": config.to_dict(),
        "schedule": schedule.to_dict(),
        "net": module_description(net),
        "head": module_description(head),
        "data": describe_batches(data),
        "extra": dict(extra_params or {}),
    })


@dataclass
class RunState:
    """What a run folder holds for this run: where to start, the history so far, and a finished run's metrics."""

    start_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] | None = None    # set when the run is finished
    finished: bool = False


class RunFolder:
    """The record folder of one run (``path=None``: no folder, nothing is read or written).

    ``code_modules`` are the modules whose code fingerprint goes into the record's environment
    (the core modules and the recipe's), so that a page can flag a record the current code would
    not reproduce.
    """

    def __init__(self, path: str | Path | None, params: dict[str, Any],
                 code_modules: tuple[str, ...] = CORE_MODULES) -> None:
        self.path = Path(path) if path is not None else None
        self.params = params
        self.digest = records.params_digest(params)
        self.code_modules = tuple(code_modules)

    def open(self, net: nn.Module, head: nn.Module, optimizer: torch.optim.Optimizer, num_epochs: int,
             device: torch.device) -> RunState:
        """Refuse a different run's record, load a finished one, resume an unfinished one (see the module docstring)."""
        if self.path is None:
            return RunState()
        existing = records.read_params(self.path)
        if existing is not None and not records.params_match(existing, self.params):
            diff = records.params_diff(existing, self.params)
            raise RunDirConflictError(
                f"{self.path} holds a run with different parameters (differing: {', '.join(diff[:8])}"
                f"{', ...' if len(diff) > 8 else ''}); pass another run_dir or delete that folder")
        checkpoint = records.load_checkpoint(self.path, map_location=device) if existing else None
        if checkpoint is not None and (checkpoint.get("format") != CHECKPOINT_FORMAT
                                       or checkpoint.get("params_digest") != self.digest):
            logger.warning("ignoring %s: it belongs to another run", self.path / records.CHECKPOINT_FILE)
            checkpoint = None
        if checkpoint is None:
            return RunState()
        net.load_state_dict(checkpoint["net"])
        head.load_state_dict(checkpoint["head"])
        history = list(checkpoint["history"])
        metrics = records.read_metrics(self.path)
        if metrics is not None and checkpoint["epoch"] == num_epochs:
            logger.info("loaded the finished run in %s", self.path)
            return RunState(num_epochs, history, metrics, finished=True)
        optimizer.load_state_dict(checkpoint["optimizer"])
        logger.info("resuming %s from epoch %d", self.path, checkpoint["epoch"])
        return RunState(int(checkpoint["epoch"]), history)

    def start(self, state: RunState, device: torch.device) -> None:
        """Write the parameters and environment before training; a new run clears an old history and checkpoint."""
        if self.path is None:
            return
        rank, world_size = distributed_info()
        if world_size > 1:
            dist.barrier()  # every rank has read the folder before rank 0 writes to it
        if rank != 0:
            return
        (self.path / records.METRICS_FILE).unlink(missing_ok=True)
        records.write_params(self.path, self.params)
        env = records.environment_info(device, world_size)
        env["started_at_epoch"] = state.start_epoch
        env["code_modules"] = list(self.code_modules)
        env["code_fingerprint"] = code_fingerprint(self.code_modules)
        atomic_write_json(self.path / records.ENVIRONMENT_FILE, env)
        if state.start_epoch == 0:
            records.write_history(self.path, [])
            (self.path / records.CHECKPOINT_FILE).unlink(missing_ok=True)

    def save_epoch(self, epoch: int, net: nn.Module, head: nn.Module, optimizer: torch.optim.Optimizer,
                   history: list[dict[str, Any]], device: torch.device) -> None:
        """Checkpoint after ``epoch`` (weights, optimiser, history, RNG states) and rewrite the history (rank 0)."""
        if self.path is None or distributed_info()[0] != 0:
            return
        rng = {"torch": torch.get_rng_state()}
        if device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(device)
        records.save_checkpoint(self.path, {
            "format": CHECKPOINT_FORMAT, "params_digest": self.digest, "epoch": epoch + 1,
            "net": net.state_dict(), "head": head.state_dict(), "optimizer": optimizer.state_dict(),
            "history": history, "rng": rng,
        })
        records.write_history(self.path, history)

    def finish(self, metrics: dict[str, Any]) -> None:
        """Write ``metrics.json``, which marks the run complete (rank 0)."""
        if self.path is not None and distributed_info()[0] == 0:
            records.write_metrics(self.path, metrics)
