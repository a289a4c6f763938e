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

One writer at a time: from :meth:`RunFolder.open` to :meth:`RunFolder.finish` the folder is
locked (:class:`RunLock`, an advisory ``fcntl.flock`` on ``run.lock``, which holds the writer's
PID). A second writer fails at once with :class:`RunLockedError` naming that PID; the lock of a
killed writer is released by the operating system and taken over by the next one, which also
deletes the temporary files the killed writer left. Only rank 0 writes (several processes read
the same folder).
"""

from __future__ import annotations

import atexit
import datetime as _dt
import errno
import fcntl
import hashlib
import json
import logging
import os
import socket
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from . import records
from .atomic import atomic_write_json, ensure_folder, pid_running, remove_stale_temps
from .checks import check_str
from .data.batches import describe_batches
from .distributed import distributed_info
from .fingerprint import CORE_MODULES, code_fingerprint, state_fingerprint

__all__ = ["RunDirConflictError", "RunLockedError", "CHECKPOINT_FORMAT", "module_description",
           "run_params", "RunState", "RunFolder", "RunLock", "held_run_folders", "check_run_name"]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1


class RunDirConflictError(ValueError):
    """The run folder holds a record of a run with different parameters."""


class RunLockedError(RuntimeError):
    """Another process (or thread) is writing the run folder; the message names it."""


def check_run_name(name: str) -> str:
    """``name`` if it is one folder name (so it stays inside the runs folder), else ValueError."""
    check_str("run_name", name, empty=False)
    if name in (".", "..") or any(c in name for c in ("/", "\\", "\0")):
        raise ValueError(f"run_name must be one folder name inside the runs folder (no '/', '\\', "
                         f"'..'), got {name!r}")
    return name


# --- the lock ------------------------------------------------------------------------------------

# The locks this process holds, by folder. A flock belongs to an open file, so a second acquisition
# by this process must reuse it: a notebook that interrupted a run and starts it again takes over
# its own lock instead of being refused by itself.
_HELD: dict[str, RunLock] = {}


def _holder(fd: int) -> dict[str, Any]:
    """What the lock file says about its holder (empty when it says nothing readable)."""
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", errors="replace")
        info = json.loads(text) if text.strip() else {}
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) and isinstance(info.get("pid"), int) else {}


def _describe(info: dict[str, Any]) -> str:
    if not info:
        return "another process (it has not written its PID yet)"
    where = f" on {info['host']}" if info.get("host") else ""
    since = f" since {info['since']}" if info.get("since") else ""
    gone = ("" if info.get("host") not in (None, socket.gethostname()) or pid_running(info["pid"])
            else "; that PID no longer runs, so a process it started still holds the lock")
    return f"PID {info['pid']}{where}{since}{gone}"


class RunLock:
    """The advisory lock of one run folder (``fcntl.flock`` on its ``run.lock``): one writer."""

    def __init__(self, folder: Path, fd: int) -> None:
        self.folder = folder
        self.path = folder.resolve() / records.LOCK_FILE
        self._fd: int | None = fd
        self._pid = os.getpid()
        self._thread = threading.get_ident()

    @classmethod
    def acquire(cls, folder: str | Path) -> RunLock:
        """Lock ``folder`` (created if needed) for this thread, or raise :class:`RunLockedError`."""
        folder = ensure_folder(folder, "run folder")
        key = str(folder.resolve())
        held = _HELD.get(key)
        if held is not None and held._pid == os.getpid() and held._fd is not None:
            alive = {t.ident for t in threading.enumerate()}
            if held._thread != threading.get_ident() and held._thread in alive:
                raise RunLockedError(f"run folder {folder} is in use by another thread of this "
                                     f"process (PID {os.getpid()})")
            lock = cls(folder, held._fd)  # this thread's earlier, abandoned run: take its lock over
            held._fd = None
            _HELD[key] = lock
            return lock
        path = Path(key) / records.LOCK_FILE
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                info = _holder(fd)
                os.close(fd)
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                raise RunLockedError(f"run folder {folder} is in use: {_describe(info)} is writing "
                                     "this run; wait for it to finish, or stop it and start again "
                                     "to resume") from None
            try:  # a holder that released the lock deleted the file: lock the one now at ``path``
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        stale = _holder(fd)
        if stale and stale["pid"] != os.getpid():
            logger.warning("%s: taking over the lock of PID %d%s, which was stopped without "
                           "releasing it", folder, stale["pid"],
                           f" ({stale['host']})" if stale.get("host") else "")
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "since": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        lock = cls(folder, fd)
        _HELD[key] = lock
        return lock

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._fd is not None and self._pid == os.getpid()

    def release(self) -> None:
        """Delete the lock file and unlock (a no-op when this object no longer holds the lock)."""
        if not self.held:
            return
        fd, self._fd = self._fd, None
        try:
            if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                self.path.unlink()
        except FileNotFoundError:
            pass
        finally:
            os.close(fd)
        key = str(self.path.parent)
        if _HELD.get(key) is self:
            del _HELD[key]


def _release_all() -> None:
    """Release every lock this process still holds (at exit, e.g. after Ctrl-C)."""
    for lock in list(_HELD.values()):
        lock.release()


atexit.register(_release_all)


def held_run_folders() -> list[Path]:
    """The run folders this process holds the lock of (to say where an interrupted run resumes)."""
    return [lock.folder for lock in _HELD.values() if lock.held]


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
        self._lock: RunLock | None = None

    def open(self, net: nn.Module, head: nn.Module, optimizer: torch.optim.Optimizer, num_epochs: int,
             device: torch.device) -> RunState:
        """Lock the folder; refuse another run's record, load a finished run, resume another.

        The lock is held until :meth:`finish` (or :meth:`close`); a finished run is loaded and
        the lock released at once. Raises :class:`RunLockedError` when another process holds it.
        """
        if self.path is None:
            return RunState()
        self._acquire()
        try:
            state = self._read(net, head, optimizer, num_epochs, device)
        except BaseException:
            self.close()
            raise
        if state.finished:
            self.close()
        return state

    def close(self) -> None:
        """Release the folder's lock (nothing is written after this)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _acquire(self) -> None:
        """Rank 0 takes the lock and deletes dead writers' temporary files; all ranks learn how."""
        rank, world_size = distributed_info()
        failure: BaseException | None = None
        if rank == 0:
            try:
                self._lock = RunLock.acquire(self.path)
                weakref.finalize(self, self._lock.release)
                remove_stale_temps(self.path)
            except (RunLockedError, OSError) as err:
                failure = err
        if world_size > 1:
            shared = [None if failure is None else str(failure)]
            dist.broadcast_object_list(shared, src=0)
            if shared[0] is not None and failure is None:
                raise RunLockedError(f"rank 0 could not lock the run folder: {shared[0]}")
        if failure is not None:
            raise failure

    def _read(self, net: nn.Module, head: nn.Module, optimizer: torch.optim.Optimizer,
              num_epochs: int, device: torch.device) -> RunState:
        """What the locked folder holds for this run (loads the weights of a run it continues)."""
        existing = records.read_params(self.path)
        if existing is not None and not records.params_match(existing, self.params):
            diff = records.params_diff(existing, self.params)
            raise RunDirConflictError(
                f"{self.path} holds a run with different parameters (differing: {', '.join(diff[:8])}"
                f"{', ...' if len(diff) > 8 else ''}); pass another run_dir or delete that folder")
        again = "delete it to train this run again from epoch 0"
        try:
            checkpoint = records.load_checkpoint(self.path, device) if existing else None
        except records.CheckpointError as err:
            raise records.CheckpointError(f"{err}; {again}") from None
        if checkpoint is not None and (checkpoint.get("format") != CHECKPOINT_FORMAT
                                       or checkpoint.get("params_digest") != self.digest):
            logger.warning("ignoring %s: it belongs to another run", self.path / records.CHECKPOINT_FILE)
            checkpoint = None
        if checkpoint is None:
            return RunState()
        missing = sorted({"epoch", "net", "head", "optimizer", "history"} - set(checkpoint))
        if missing:
            raise records.CheckpointError(f"{self.path / records.CHECKPOINT_FILE} lacks {missing}; "
                                          f"{again}")
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
        """Write ``metrics.json``, which marks the run complete (rank 0), and release the lock."""
        if self.path is not None and distributed_info()[0] == 0:
            records.write_metrics(self.path, metrics)
        self.close()
