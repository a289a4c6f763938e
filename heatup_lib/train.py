"""The one training loop of every chapter: a network, a head, a schedule of alpha and learning rate, a batch source.

``fit`` sets alpha (for a head whose alpha is scheduled) and the learning rate from the schedule
at every step (``epoch + step / len(data)``, so a step heat-up changes exactly at its epoch
boundary and a smooth one moves within epochs), trains with Adam or SGD, keeps a per-epoch
history (with the alpha actually used at every step, whatever its source), evaluates with
``eval_fn`` every ``eval_every`` epochs and at the end, and -- given a ``run_dir`` -- keeps a run
record (:mod:`heatup_lib.runs`) with a checkpoint after every epoch.

Repeatability: the shuffle order of epoch ``e`` comes from a generator seeded from ``(seed, e)``
and the global torch RNG (used e.g. by random transforms) is reseeded from ``(seed, e)`` at the
start of every epoch inside :func:`torch.random.fork_rng`, so the caller's RNG is untouched and a
run resumed from the checkpoint of epoch ``k`` continues exactly as an uninterrupted run.
Initialising the weights is the caller's job (``torch.manual_seed(seed)`` before building the
network); the initial weights are part of the run's parameters, so a record is only reused for
the very same starting point. The number of epochs is the schedule's, the batch size the batch
source's: each is stored once.

Several processes (``torchrun``, :mod:`heatup_lib.distributed`): every rank draws the same global
batch and trains on its slice, and the loss is scaled so that the averaged gradient equals the
single-process one. Batch norm is synchronised across GPUs; on CPU (gloo) PyTorch has no
SyncBatchNorm, so networks with batch norm see per-rank batch statistics there.

Speed-ups, all off by default (the plain eager loop is the one to read and debug):
``config.fused`` (the optimiser's fused kernel), ``config.cudnn_benchmark`` (cuDNN autotuning, set
for the run and restored) and ``config.compile`` (``torch.compile`` of the network; with
``"reduce-overhead"`` its forward and backward replay as CUDA graphs). ``bench/train_speed.py``
times each one.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import records, seeding
from .checks import check_bool, check_choice, check_float, check_int
from .data.batches import BatchSource, to_device
from .distributed import distributed_info, launched_world_size, local_slice
from .passes import class_mean_init, evaluating, settle_batch_norm
from .runs import RunFolder, RunState, run_params
from .step import make_optimizer, train_step, training_model

__all__ = ["OPTIMIZERS", "COMPILE_MODES", "TrainConfig", "TrainResult", "NonFiniteLossError", "fit"]

logger = logging.getLogger(__name__)

OPTIMIZERS: tuple[str, ...] = ("adam", "sgd")
# torch.compile modes of the network: "off" is the plain eager path; "reduce-overhead" also captures
# the compiled forward and backward in CUDA graphs on a GPU (one launch instead of hundreds).
COMPILE_MODES: tuple[str, ...] = ("off", "default", "reduce-overhead", "max-autotune")
HISTORY_KEYS = ("epoch", "alpha", "lr", "loss", "accuracy", "seconds", "alpha_steps")


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss; the run's last good checkpoint is kept."""


@dataclass
class TrainConfig:
    """Everything about the optimisation that determines the result (serialised into the run record)."""

    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    seed: int = 0
    device: str = "cpu"
    amp: bool = False            # bf16 autocast, CUDA only (ignored on CPU)
    channels_last: bool = False  # channels-last memory format for 4-d inputs and the network
    eval_every: int = 0          # evaluate every k epochs (0: only at the end)
    bn_settle: bool = False      # one pass with learning rate 0 before training (SPEC section 5)
    class_mean_init: bool = False  # then the classifier weights := normalised class means (SOP recipe)
    # Speed-ups (off by default, so the plain path is the one to read and debug):
    fused: bool = False          # the optimiser's fused kernel (one launch for all parameters)
    cudnn_benchmark: bool = False  # let cuDNN time its convolution algorithms once per shape (CUDA)
    compile: str = "off"         # torch.compile mode of the network (COMPILE_MODES); the head stays eager

    def __post_init__(self) -> None:
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_float("lr", self.lr, 0.0, min_open=True)
        check_float("momentum", self.momentum, 0.0, 1.0, max_open=True)
        check_float("adam_eps", self.adam_eps, 0.0, min_open=True)
        check_float("weight_decay", self.weight_decay, 0.0)
        check_float("label_smoothing", self.label_smoothing, 0.0, 1.0, max_open=True)
        check_int("seed", self.seed, min_value=0)
        check_int("eval_every", self.eval_every, min_value=0)
        for name in ("amp", "channels_last", "bn_settle", "class_mean_init", "fused", "cudnn_benchmark"):
            check_bool(name, getattr(self, name))
        check_choice("compile", self.compile, COMPILE_MODES)
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"device must be a torch device string such as 'cpu' or 'cuda', "
                             f"got {self.device!r}") from exc

    def to_dict(self) -> dict[str, Any]:
        """The config as a plain dict."""
        return dataclasses.asdict(self)


@dataclass
class TrainResult:
    """What ``fit`` returns: the per-epoch history, the final metrics, the record folder, and whether it was loaded."""

    history: list[dict[str, Any]]
    metrics: dict[str, Any]
    run_dir: Path | None = None
    cached: bool = False
    resumed_from_epoch: int = 0
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Loop:
    """What every epoch of one ``fit`` call shares."""

    model: nn.Module
    head: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Any
    data: BatchSource
    config: TrainConfig
    device: torch.device
    bar: tqdm
    run_dir: Path | None = None


def _train_epoch(loop: _Loop, epoch: int) -> dict[str, Any]:
    """Train one epoch; its record: alpha (first step), lr, loss, accuracy, seconds and every step's alpha."""
    start = time.perf_counter()
    config, schedule, head = loop.config, loop.schedule, loop.head
    num_steps = len(loop.data)
    amp = config.amp and loop.device.type == "cuda"
    scheduled = getattr(head, "alpha_mode", "scheduled") == "scheduled"
    world_size = distributed_info()[1]
    torch.manual_seed(seeding.derived_seed(config.seed, epoch, seeding.GLOBAL))  # inside fit's fork_rng
    # Per-step sums stay on the device (no host sync inside the epoch): loss, correct, count, alpha.
    sums = torch.zeros(4, num_steps, dtype=torch.float64, device=loop.device)
    loop.model.train()
    step = -1
    for step, (X, y) in enumerate(loop.data.epoch(epoch, seeding.epoch_generator(config.seed, epoch))):
        if step >= num_steps:
            raise ValueError(f"train_data yielded more than len(train_data)={num_steps} batches in epoch {epoch}")
        t = epoch + step / num_steps
        if scheduled:
            head.alpha = schedule.alpha(t)
        for group in loop.optimizer.param_groups:
            group["lr"] = config.lr * schedule.lr_factor(t)
        global_n = y.shape[0]
        X, y = local_slice(X, y)
        X, y = to_device(X, loop.device, config.channels_last), y.to(loop.device, non_blocking=True)
        alpha = head.scale() if hasattr(head, "scale") else 1.0
        sums[3, step] = alpha.detach() if isinstance(alpha, Tensor) else alpha
        # DDP averages gradients over ranks: scaling the summed loss by world_size / global_n makes
        # that average the gradient of the mean loss over the whole global batch, as in one process.
        loss_sum, logits = train_step(loop.model, loop.optimizer, X, y, amp=amp,
                                      label_smoothing=config.label_smoothing,
                                      loss_scale=world_size / global_n)
        sums[0, step] = loss_sum
        sums[1, step] = (logits.argmax(dim=1) == y).sum()
        sums[2, step] = y.shape[0]
        loop.bar.update(1)
    if step + 1 != num_steps:
        raise ValueError(f"train_data yielded {step + 1} batches in epoch {epoch}, but len(train_data)={num_steps}")
    if world_size > 1:
        dist.all_reduce(sums[:3])
    sums = sums.cpu()
    if not bool(torch.isfinite(sums[0]).all()):
        bad = int((~torch.isfinite(sums[0])).nonzero()[0])
        kept = (f"the checkpoint of the last good epoch ({epoch - 1}) is kept in "
                f"{loop.run_dir / records.CHECKPOINT_FILE}" if loop.run_dir is not None and epoch > 0
                else "no checkpoint was written")
        raise NonFiniteLossError(
            f"non-finite loss ({float(sums[0, bad])}) at epoch {epoch}, step {bad} (alpha={float(sums[3, bad]):g}, "
            f"lr={config.lr * schedule.lr_factor(epoch + bad / num_steps):g}); training stopped and {kept}. "
            "Try a smaller learning rate or check the data for NaNs.")
    count = float(sums[2].sum())
    return {"epoch": epoch, "alpha": float(sums[3, 0]), "lr": config.lr * schedule.lr_factor(epoch),
            "loss": float(sums[0].sum()) / count, "accuracy": float(sums[1].sum()) / count,
            "seconds": time.perf_counter() - start, "alpha_steps": sums[3].tolist()}


def _evaluate(eval_fn: Callable, net: nn.Module, head: nn.Module) -> dict[str, Any]:
    """``eval_fn(net, head)`` in eval mode on rank 0, its result shared with every rank."""
    rank, world_size = distributed_info()
    result: list[Any] = [None]
    if rank == 0:
        with evaluating(net, head):
            metrics = eval_fn(net, head)
        if not isinstance(metrics, dict):
            raise ValueError(f"eval_fn must return a dict of metric name -> value, got {type(metrics).__name__}")
        clash = sorted(set(metrics) & set(HISTORY_KEYS))
        if clash:
            raise ValueError(f"eval_fn returned reserved key(s) {clash}; rename them (reserved: {HISTORY_KEYS})")
        result[0] = records.normalize_values(metrics)
    if world_size > 1:
        dist.broadcast_object_list(result, src=0)
    return result[0]


def _check_inputs(schedule: Any, data: Any, config: Any, callbacks: Sequence[Callable]) -> None:
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig, got {type(config).__name__}")
    for name in ("alpha", "lr_factor", "to_dict"):
        if not callable(getattr(schedule, name, None)):
            raise ValueError(f"schedule must be a heatup_lib.schedules.Schedule (needs .{name}()), got {schedule!r}")
    if not callable(getattr(data, "epoch", None)) or not hasattr(data, "__len__"):
        raise ValueError(f"train_data must be a batch source (len() and .epoch(epoch, generator)), got {data!r}")
    if len(data) < 1:
        raise ValueError(f"train_data yields no batch per epoch (len {len(data)})")
    for cb in callbacks:
        if not callable(cb):
            raise ValueError(f"callbacks must be callables callback(epoch, record, net, head), got {cb!r}")


def _resolve_device(config: TrainConfig) -> torch.device:
    device = torch.device(config.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if config.amp and device.type != "cuda":
        logger.info("amp=True is ignored on %s: training in float32", device)
    return device


def fit(net: nn.Module, head: nn.Module, schedule: Any, train_data: BatchSource, config: TrainConfig,
        run_dir: str | Path | None = None, eval_fn: Callable[[nn.Module, nn.Module], dict] | None = None,
        callbacks: Sequence[Callable[[int, dict, nn.Module, nn.Module], None]] = (),
        extra_params: dict[str, Any] | None = None, progress: bool = True,
        code_modules: tuple[str, ...] | None = None) -> TrainResult:
    """Train ``net`` + ``head`` for ``schedule.num_epochs`` epochs of ``train_data`` (or load / resume the record in ``run_dir``).

    ``eval_fn(net, head) -> dict`` runs in eval mode every ``config.eval_every`` epochs and after
    the last; its last result is ``metrics``. ``callbacks`` run as ``callback(epoch, record, net,
    head)`` after every epoch (rank 0) and may add JSON keys to ``record``. ``extra_params``
    (JSON) join the run's parameters: everything else that decides the result (dataset, preset,
    protocol); ``code_modules`` name the recipe's modules for the record's code fingerprint.
    Raises :class:`NonFiniteLossError` on a NaN/inf loss and
    :class:`heatup_lib.runs.RunDirConflictError` when ``run_dir`` holds a different run.
    """
    _check_inputs(schedule, train_data, config, callbacks)
    world_size = distributed_info()[1]
    if launched_world_size() > 1 and world_size == 1:
        raise RuntimeError(f"WORLD_SIZE={launched_world_size()} (launched by torchrun) but no process group is "
                           "initialised: call heatup_lib.distributed.init_distributed() first and train on "
                           "the device it returns")
    if world_size > 1 and train_data.batch_size < world_size:
        raise ValueError(f"batch_size={train_data.batch_size} is smaller than the {world_size} processes")
    if world_size > 1 and getattr(head, "alpha_mode", "") == "adacos-dynamic":
        raise ValueError("alpha_mode='adacos-dynamic' adapts alpha to each rank's slice: not supported "
                         "under several processes")
    device = _resolve_device(config)
    num_epochs = schedule.num_epochs
    net.to(device)
    head.to(device)
    if config.channels_last:
        net.to(memory_format=torch.channels_last)
    # Hashing the data and the initial weights costs time: only for runs that keep a record.
    params = run_params(net, head, schedule, train_data, config, extra_params) if run_dir is not None else {}
    folder = RunFolder(run_dir, params, **({"code_modules": code_modules} if code_modules else {}))
    trainable = [p for m in (net, head) for p in m.parameters() if p.requires_grad]
    optimizer = make_optimizer(trainable, config)

    state = folder.open(net, head, optimizer, num_epochs, device)
    if state.finished:  # the record exists: load it, don't train
        _set_final_alpha(head, schedule, len(train_data))
        return TrainResult(state.history, state.metrics or {}, folder.path, cached=True,
                           resumed_from_epoch=num_epochs, params=params)
    folder.start(state, device)
    metrics = _train(net, head, optimizer, schedule, train_data, config, device, folder, state, eval_fn,
                     callbacks, progress)
    _set_final_alpha(head, schedule, len(train_data))
    folder.finish(metrics)
    if world_size > 1:
        dist.barrier()
    return TrainResult(state.history, metrics, folder.path, cached=False,
                       resumed_from_epoch=state.start_epoch, params=params)


def _set_final_alpha(head: nn.Module, schedule: Any, num_steps: int) -> None:
    """Leave a scheduled head at the alpha of the last training step."""
    if getattr(head, "alpha_mode", "scheduled") == "scheduled":
        head.alpha = schedule.alpha(schedule.num_epochs - 1 + (num_steps - 1) / num_steps)


def _train(net: nn.Module, head: nn.Module, optimizer: torch.optim.Optimizer, schedule: Any,
           data: BatchSource, config: TrainConfig,
           device: torch.device, folder: RunFolder, state: RunState, eval_fn: Callable | None,
           callbacks: Sequence[Callable], progress: bool) -> dict[str, Any]:
    """The epochs from ``state.start_epoch`` on (after the pre-training passes of a new run); the final metrics."""
    num_epochs, num_steps = schedule.num_epochs, len(data)
    rank = distributed_info()[0]
    bar = tqdm(total=num_epochs * num_steps, initial=state.start_epoch * num_steps, desc="train",
               unit="step", disable=not progress or rank != 0, dynamic_ncols=True)
    loop = _Loop(training_model(net, head, config, device), head, optimizer, schedule, data, config,
                 device, bar, folder.path)
    metrics: dict[str, Any] = {}
    cudnn_benchmark = torch.backends.cudnn.benchmark  # a global flag: set for this run, restored after
    torch.backends.cudnn.benchmark = config.cudnn_benchmark or cudnn_benchmark
    try:
        with evaluating(net, head, train=True), \
                torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            if state.start_epoch == 0 and config.bn_settle:
                settle_batch_norm(net, head, data, config, progress=progress)
            if state.start_epoch == 0 and config.class_mean_init:
                class_mean_init(net, head, data, config, progress=progress)
            for epoch in range(state.start_epoch, num_epochs):
                record = _train_epoch(loop, epoch)
                last = epoch == num_epochs - 1
                if eval_fn is not None and (last or (config.eval_every and (epoch + 1) % config.eval_every == 0)):
                    evaluation = _evaluate(eval_fn, net, head)
                    record.update(evaluation)
                    metrics = evaluation if last else metrics
                if rank == 0:
                    for cb in callbacks:
                        cb(epoch, record, net, head)
                state.history.append(records.normalize_values(record))
                folder.save_epoch(epoch, net, head, optimizer, state.history, device)
                bar.set_postfix(loss=f"{record['loss']:.4f}", acc=f"{record['accuracy']:.3f}",
                                alpha=f"{record['alpha']:g}", refresh=False)
                logger.info("epoch %d: %s", epoch, {k: record[k] for k in HISTORY_KEYS[1:5]})
            if state.start_epoch == num_epochs and eval_fn is not None:
                # killed after the last checkpoint but before metrics.json: evaluate again
                metrics = _evaluate(eval_fn, net, head)
    finally:
        torch.backends.cudnn.benchmark = cudnn_benchmark
        bar.close()
    return metrics
