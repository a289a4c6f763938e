"""The one training loop of both chapters: a network, a head, a schedule of alpha and learning rate, a batch source.

``fit`` sets alpha and the learning rate from the schedule at every step (``epoch + step /
len(data)``, so a step heat-up changes exactly at its epoch boundary and a smooth one moves
within epochs), trains with Adam or SGD, keeps a per-epoch history, evaluates with ``eval_fn``
every ``eval_every`` epochs and at the end, and -- given a ``run_dir`` -- writes a run record
(:mod:`heatup_lib.records`) with a checkpoint after every epoch.

Repeatability: the shuffle order of epoch ``e`` comes from a generator seeded from ``(seed, e)``
and the global torch RNG (used e.g. by random transforms) is reseeded from ``(seed, e)`` at the
start of every epoch inside :func:`torch.random.fork_rng`, so the caller's RNG is untouched and a
run resumed from the checkpoint of epoch ``k`` continues exactly as an uninterrupted run.
Initialising the weights is the caller's job (``torch.manual_seed(seed)`` before building the
network); the initial weights are part of the run's parameters (their SHA-256), so a record is
only reused for the very same starting point.

Run folder policy: a folder whose ``params.json`` differs from this run's parameters is never
reused or overwritten -- ``fit`` raises :class:`RunDirConflictError` naming the differing keys.
A folder with identical parameters and a ``metrics.json`` is a finished run: its weights and
history are loaded (``cached=True``); with identical parameters and a checkpoint but no metrics
the run resumes from the checkpoint.

Several processes: under ``torchrun`` (see :func:`init_distributed`) the model is wrapped in
DistributedDataParallel; every rank draws the same global batch of ``config.batch_size`` and
trains on its slice, and the loss is scaled so that the averaged gradient equals the
single-process one. Batch norm is synchronised across GPUs (SyncBatchNorm); on CPU (gloo)
PyTorch has no SyncBatchNorm, so networks with batch norm see per-rank batch statistics there.
Only rank 0 writes the record.

Speed-ups (all off by default: the plain eager loop is the one to read and debug):
``config.fused`` (the optimiser's fused kernel), ``config.cudnn_benchmark`` (cuDNN autotuning, set
for the run and restored) and ``config.compile`` (``torch.compile`` of the network; with
``"reduce-overhead"`` its forward and backward replay as CUDA graphs). Each step is
:func:`train_step` on :func:`training_model`; ``bench/train_speed.py`` times each option.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import math
import numbers
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from heatup_lib import records
from heatup_lib.io import atomic_write_json

__all__ = [
    "OPTIMIZERS", "COMPILE_MODES", "BatchSource", "TensorBatches", "TrainConfig", "TrainResult",
    "NonFiniteLossError", "RunDirConflictError", "fit", "train_step", "make_optimizer", "training_model",
    "run_params", "settle_batch_norm", "class_mean_init", "epoch_generator", "init_distributed",
    "distributed_info", "state_fingerprint",
]

logger = logging.getLogger(__name__)

OPTIMIZERS: tuple[str, ...] = ("adam", "sgd")
# torch.compile modes for the backbone: "off" is the plain eager path; "reduce-overhead" also
# captures the compiled forward and backward in CUDA graphs on a GPU (one launch instead of hundreds).
COMPILE_MODES: tuple[str, ...] = ("off", "default", "reduce-overhead", "max-autotune")
_CHECKPOINT_FORMAT = 1
_HISTORY_KEYS = ("epoch", "alpha", "lr", "loss", "accuracy", "seconds")
_STREAM_SHUFFLE, _STREAM_GLOBAL, _STREAM_SETTLE, _STREAM_CLASS_MEANS = 0, 1, 2, 3


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss; the run's last good checkpoint is kept."""


class RunDirConflictError(ValueError):
    """The run folder holds a record of a run with different parameters."""


class BatchSource(Protocol):
    """What ``fit`` consumes: a number of batches per epoch and the batches of an epoch.

    Optionally a source has ``batch_size`` (checked against the config) and ``describe() ->
    dict`` (JSON data that identifies its data, e.g. a hash; it goes into the run's parameters).
    Without ``describe`` only the class and length identify the data: put the dataset's identity
    into ``fit(extra_params=...)``.
    """

    def __len__(self) -> int:
        """Batches per epoch."""
        ...

    def epoch(self, epoch: int, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
        """The batches ``(X, y)`` of ``epoch``; the order depends only on ``generator``."""
        ...


def _derived_seed(seed: int, epoch: int, stream: int) -> int:
    """A 63-bit seed that depends only on (seed, epoch, stream)."""
    state = np.random.SeedSequence([int(seed), int(epoch), int(stream)]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


@contextlib.contextmanager
def _seeded_global_rng(seed: int, epoch: int, stream: int, device: torch.device) -> Iterator[None]:
    """Run a block with the global torch RNG seeded from (seed, epoch, stream); restore the caller's RNG after."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(_derived_seed(seed, epoch, stream))
        yield


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The CPU generator that ``fit`` hands to ``BatchSource.epoch`` for ``epoch`` (depends only on ``(seed, epoch)``)."""
    return torch.Generator().manual_seed(_derived_seed(seed, epoch, _STREAM_SHUFFLE))


class TensorBatches:
    """Mini-batches of in-memory tensors ``X`` (N, ...) and ``y`` (N,), shuffled by the epoch's generator.

    ``transform`` (optional) maps a batch ``X`` to the network's input (e.g. uint8 -> float);
    it runs on ``X``'s device, so data kept on the GPU stays there.
    """

    def __init__(self, X: Tensor, y: Tensor, batch_size: int, shuffle: bool = True,
                 drop_last: bool = True, transform: Callable[[Tensor], Tensor] | None = None) -> None:
        if not isinstance(X, Tensor) or not isinstance(y, Tensor):
            raise ValueError(f"X and y must be tensors, got {type(X).__name__} and {type(y).__name__}")
        if y.dim() != 1 or X.shape[0] != y.shape[0]:
            raise ValueError(f"need X (N, ...) and y (N,) with the same N, got X {tuple(X.shape)} and y {tuple(y.shape)}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if drop_last and batch_size > X.shape[0]:
            raise ValueError(f"batch_size={batch_size} is larger than the {X.shape[0]} samples "
                             "(with drop_last=True there would be no batch)")
        if X.shape[0] == 0:
            raise ValueError("X and y hold no samples")
        self.X, self.y = X, y
        self.batch_size = int(batch_size)
        self.shuffle, self.drop_last, self.transform = bool(shuffle), bool(drop_last), transform
        self._description: dict[str, Any] | None = None

    def __len__(self) -> int:
        """Batches per epoch."""
        n = self.X.shape[0]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def epoch(self, epoch: int, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
        """The batches ``(X, y)`` of one epoch, in the order the generator draws."""
        n = self.X.shape[0]
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        order = order.to(self.X.device)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            X = self.X[idx]
            if self.transform is not None:
                X = self.transform(X)
            yield X, self.y[idx]

    def describe(self) -> dict[str, Any]:
        """What determines the batches (shapes, options, SHA-256 of the data): part of a run's parameters."""
        if self._description is None:
            digest = hashlib.sha256()
            for t in (self.X, self.y):
                digest.update(_tensor_bytes(t))
            self._description = {
                "class": "TensorBatches",
                "num_samples": int(self.X.shape[0]),
                "sample_shape": list(self.X.shape[1:]),
                "dtype": str(self.X.dtype),
                "batch_size": self.batch_size,
                "shuffle": self.shuffle,
                "drop_last": self.drop_last,
                "transform": _describe_callable(self.transform),
                "sha256": digest.hexdigest(),
            }
        return dict(self._description)


def _describe_callable(fn: Callable | None) -> dict[str, str] | None:
    """Name and, for Python functions, a hash of the code: enough to tell two transforms apart (not their closures)."""
    if fn is None:
        return None
    name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__qualname__)}"
    code = getattr(fn, "__code__", None)
    if code is None:
        return {"name": name, "repr": repr(fn) if "0x" not in repr(fn) else type(fn).__qualname__}
    digest = hashlib.sha256(code.co_code + repr(code.co_consts).encode() + repr(code.co_names).encode())
    return {"name": name, "code_sha256": digest.hexdigest()[:16]}


def _tensor_bytes(t: Tensor) -> bytes:
    """The raw bytes of a tensor (any dtype, any device), for hashing."""
    t = t.detach().to("cpu").contiguous()
    return t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""


@dataclass
class TrainConfig:
    """Everything about the optimisation that determines the result (serialised into the run record)."""

    num_epochs: int
    batch_size: int
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
        def integer(name: str, low: int) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")

        def real(name: str, low: float, high: float, low_open: bool, high_open: bool) -> None:
            v = getattr(self, name)
            ok = (not isinstance(v, bool) and isinstance(v, numbers.Real) and math.isfinite(v)
                  and (v > low if low_open else v >= low) and (v < high if high_open else v <= high))
            if not ok:
                lo, hi = "(" if low_open else "[", ")" if high_open else "]"
                raise ValueError(f"{name} must be in {lo}{low}, {high}{hi}, got {v!r}")

        integer("num_epochs", 1)
        integer("batch_size", 1)
        integer("seed", 0)
        integer("eval_every", 0)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        real("lr", 0.0, math.inf, True, True)
        real("momentum", 0.0, 1.0, False, True)
        real("adam_eps", 0.0, math.inf, True, True)
        real("weight_decay", 0.0, math.inf, False, True)
        real("label_smoothing", 0.0, 1.0, False, True)
        for name in ("amp", "channels_last", "bn_settle", "class_mean_init", "fused",
                     "cudnn_benchmark"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.compile not in COMPILE_MODES:
            raise ValueError(f"compile must be one of {COMPILE_MODES}, got {self.compile!r}")
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"device must be a torch device string such as 'cpu' or 'cuda', got {self.device!r}") from exc

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


def state_fingerprint(*modules: nn.Module) -> str:
    """SHA-256 of the modules' state dicts (names, dtypes, shapes and values)."""
    digest = hashlib.sha256()
    for module in modules:
        for name, t in module.state_dict().items():
            digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            digest.update(_tensor_bytes(t))
    return digest.hexdigest()


def _module_description(module: nn.Module) -> dict[str, Any]:
    cls = type(module)
    desc: dict[str, Any] = {
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "num_parameters": sum(p.numel() for p in module.parameters()),
        "init_sha256": state_fingerprint(module),
    }
    for name in ("embedding_dim", "num_classes", "variant", "activation"):
        value = getattr(module, name, None)
        if isinstance(value, (int, str)):
            desc[name] = value
    if hasattr(module, "bias") and not isinstance(module, nn.Linear):
        desc["bias"] = getattr(module, "bias") is not None
    if not hasattr(module, "alpha"):  # a head's repr holds its current alpha, which the schedule sets
        desc["architecture_sha256"] = hashlib.sha256(repr(module).encode()).hexdigest()
    return desc


def run_params(net: nn.Module, head: nn.Module, schedule: Any, train_data: BatchSource,
               config: TrainConfig, extra_params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything that determines a run's result, as written to ``params.json`` (call before training)."""
    if hasattr(train_data, "describe"):
        data = train_data.describe()
    else:
        cls = type(train_data)
        data = {"class": f"{cls.__module__}.{cls.__qualname__}", "num_batches": len(train_data)}
    return records.normalize_params({
        "config": config.to_dict(),
        "schedule": schedule.to_dict(),
        "net": _module_description(net),
        "head": _module_description(head),
        "data": data,
        "extra": dict(extra_params or {}),
    })


# --- several processes ---------------------------------------------------------------------------

def distributed_info() -> tuple[int, int]:
    """``(rank, world_size)`` of this process: ``(0, 1)`` unless a process group is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(backend: str | None = None) -> tuple[int, int, torch.device]:
    """Join the process group that ``torchrun`` describes (NCCL on GPUs, gloo on CPU); ``(0, 1, device)`` when not under torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if world_size <= 1:
        return 0, 1, torch.device("cuda" if cuda else "cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if cuda else "gloo"))
    return dist.get_rank(), dist.get_world_size(), device


class _NetWithHead(nn.Module):
    """net then head, as one module (so DDP sees one model)."""

    def __init__(self, net: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.net, self.head = net, head

    def forward(self, X: Tensor) -> Tensor:
        """Logits (N, C) of inputs X."""
        return self.head(self.net(X))


def _local_slice(X: Tensor, y: Tensor, rank: int, world_size: int) -> tuple[Tensor, Tensor]:
    """This rank's contiguous share of a global batch."""
    if world_size == 1:
        return X, y
    return X.tensor_split(world_size)[rank], y.tensor_split(world_size)[rank]


# --- the loop ------------------------------------------------------------------------------------

def make_optimizer(params: Sequence[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser of ``config`` (Adam or SGD with momentum), fused when ``config.fused``."""
    fused = {"fused": True} if config.fused else {}
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, eps=config.adam_eps, weight_decay=config.weight_decay, **fused)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
                           **fused)


def training_model(net: nn.Module, head: nn.Module, config: TrainConfig, device: torch.device) -> nn.Module:
    """``head(net(X))`` as one module for the training steps: the network compiled per ``config.compile``, then DDP when several processes run.

    Only the network is compiled: the head's alpha is a Python number that the schedule changes,
    which would make a compiled head recompile. ``net`` and ``head`` themselves stay the eager
    modules that share the parameters (checkpoints, settling, evaluation use them).
    """
    if config.compile != "off":
        net = torch.compile(net, mode=config.compile)
    model: nn.Module = _NetWithHead(net, head)
    if distributed_info()[1] > 1:
        if device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            logger.warning("batch norm is not synchronised across CPU processes: each rank normalises its slice")
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return model


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, X: Tensor, y: Tensor, *, amp: bool = False,
               label_smoothing: float = 0.0, loss_scale: float | None = None) -> tuple[Tensor, Tensor]:
    """One optimisation step on a batch already on the device; returns the summed cross-entropy and the logits (detached).

    The loss minimised is ``sum * loss_scale`` (default ``1 / len(y)``, the mean); autocast to
    bf16 on CUDA when ``amp``.
    """
    with torch.autocast(X.device.type, dtype=torch.bfloat16, enabled=amp):
        logits = model(X)
    loss_sum = F.cross_entropy(logits.float(), y, reduction="sum", label_smoothing=label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    (loss_sum * (1.0 / y.shape[0] if loss_scale is None else loss_scale)).backward()
    optimizer.step()
    return loss_sum.detach(), logits.detach()


def _prepare_input(X: Tensor, device: torch.device, channels_last: bool) -> Tensor:
    X = X.to(device, non_blocking=True)
    if channels_last and X.dim() == 4:
        X = X.contiguous(memory_format=torch.channels_last)
    return X


def settle_batch_norm(net: nn.Module, head: nn.Module, train_data: BatchSource, device: str | torch.device,
                      seed: int = 0, amp: bool = False, channels_last: bool = False,
                      progress: bool = False) -> None:
    """One pass over the training data in train mode without any optimiser step, to settle batch-norm running statistics (SPEC section 5).

    Train-mode forward passes normalise with batch statistics, so settling changes no training
    step: it changes the running statistics that eval mode (the test embeddings) uses.
    """
    device = torch.device(device)
    model = _NetWithHead(net, head)
    modes = [m.training for m in (net, head)]
    model.train()
    rank, world_size = distributed_info()
    amp = amp and device.type == "cuda"
    generator = torch.Generator().manual_seed(_derived_seed(seed, 0, _STREAM_SETTLE))
    with (_seeded_global_rng(seed, 0, _STREAM_SETTLE, device), torch.no_grad(),
          torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)):
        batches = tqdm(train_data.epoch(0, generator), total=len(train_data), desc="settle batch norm",
                       disable=not progress or rank != 0, leave=False)
        for X, y in batches:
            X, y = _local_slice(X, y, rank, world_size)
            model(_prepare_input(X, device, channels_last))
    for module, mode in zip((net, head), modes):
        module.train(mode)


def class_mean_init(net: nn.Module, head: nn.Module, train_data: BatchSource, device: str | torch.device,
                    seed: int = 0, amp: bool = False, channels_last: bool = False,
                    progress: bool = False) -> Tensor:
    """Set the head's class weights to the L2-normalised class means of the features it sees (SOP recipe, SPEC section 5); returns the counts per class.

    One pass over ``train_data`` in eval mode without gradients; the means are taken of
    ``head.normalize(net(X))`` (the feature the classifier scores), in float64. Classes absent
    from the data keep their weights. :func:`fit` calls it with ``config.class_mean_init`` after
    the batch-norm settling pass, so a BN head averages features standardised with the settled
    statistics. Under several processes each rank embeds its slice of every batch and the sums
    are all-reduced, so every rank sets the same weights.
    """
    device = torch.device(device)
    modes = [m.training for m in (net, head)]
    net.eval()
    head.eval()
    rank, world_size = distributed_info()
    amp = amp and device.type == "cuda"
    num_classes, dim = head.weight.shape
    sums = torch.zeros(num_classes, dim, dtype=torch.float64, device=device)
    counts = torch.zeros(num_classes, dtype=torch.float64, device=device)
    generator = torch.Generator().manual_seed(_derived_seed(seed, 0, _STREAM_CLASS_MEANS))
    try:
        with _seeded_global_rng(seed, 0, _STREAM_CLASS_MEANS, device), torch.no_grad():
            for X, y in tqdm(train_data.epoch(0, generator), total=len(train_data), desc="class means",
                             disable=not progress or rank != 0, leave=False):
                X, y = _local_slice(X, y, rank, world_size)
                y = y.to(device)
                if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
                    raise ValueError(f"labels must be in [0, {num_classes - 1}] for a head of {num_classes} "
                                     f"classes, got labels in [{int(y.min())}, {int(y.max())}]")
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    f = net(_prepare_input(X, device, channels_last))
                feats = head.normalize(f.float()).double()
                sums.index_add_(0, y, feats)
                counts.index_add_(0, y, torch.ones_like(y, dtype=torch.float64))
    finally:
        for module, mode in zip((net, head), modes):
            module.train(mode)
    if world_size > 1:
        dist.all_reduce(sums)
        dist.all_reduce(counts)
    seen = counts > 0
    means = F.normalize(sums[seen] / counts[seen].unsqueeze(1), dim=1)
    with torch.no_grad():
        head.weight[seen] = means.to(head.weight.dtype)
    return counts.cpu()


def _check_inputs(schedule: Any, train_data: BatchSource, config: TrainConfig, callbacks: Sequence[Callable]) -> None:
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig, got {type(config).__name__}")
    for name in ("alpha", "lr_factor", "to_dict"):
        if not callable(getattr(schedule, name, None)):
            raise ValueError(f"schedule must be a heatup_lib.schedules.Schedule (needs .{name}()), got {schedule!r}")
    if getattr(schedule, "num_epochs", config.num_epochs) != config.num_epochs:
        raise ValueError(f"schedule.num_epochs={schedule.num_epochs} differs from "
                         f"config.num_epochs={config.num_epochs}; build both with the same number of epochs")
    if not callable(getattr(train_data, "epoch", None)) or not hasattr(train_data, "__len__"):
        raise ValueError(f"train_data must be a batch source (len() and .epoch(epoch, generator)), got {train_data!r}")
    if len(train_data) < 1:
        raise ValueError(f"train_data yields no batch per epoch (len {len(train_data)})")
    batch_size = getattr(train_data, "batch_size", config.batch_size)
    if batch_size != config.batch_size:
        raise ValueError(f"train_data.batch_size={batch_size} differs from config.batch_size={config.batch_size}")
    for cb in callbacks:
        if not callable(cb):
            raise ValueError(f"callbacks must be callables callback(epoch, record, net, head), got {cb!r}")


def _rng_state(device: torch.device) -> dict[str, Tensor]:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _evaluate(eval_fn: Callable, net: nn.Module, head: nn.Module, rank: int, world_size: int) -> dict[str, Any]:
    """``eval_fn(net, head)`` in eval mode on rank 0, its result shared with every rank."""
    result: list[Any] = [None]
    if rank == 0:
        modes = [m.training for m in (net, head)]
        net.eval()
        head.eval()
        try:
            metrics = eval_fn(net, head)
        finally:
            for module, mode in zip((net, head), modes):
                module.train(mode)
        if not isinstance(metrics, dict):
            raise ValueError(f"eval_fn must return a dict of metric name -> value, got {type(metrics).__name__}")
        clash = sorted(set(metrics) & set(_HISTORY_KEYS))
        if clash:
            raise ValueError(f"eval_fn returned reserved key(s) {clash}; rename them (reserved: {_HISTORY_KEYS})")
        result[0] = records.normalize_values(metrics)
    if world_size > 1:
        dist.broadcast_object_list(result, src=0)
    return result[0]


def _step_time(epoch: int, step: int, num_steps: int) -> float:
    return epoch + step / num_steps


def fit(net: nn.Module, head: nn.Module, schedule: Any, train_data: BatchSource, config: TrainConfig,
        run_dir: str | Path | None = None, eval_fn: Callable[[nn.Module, nn.Module], dict[str, float]] | None = None,
        callbacks: Sequence[Callable[[int, dict, nn.Module, nn.Module], None]] = (),
        extra_params: dict[str, Any] | None = None, progress: bool = True) -> TrainResult:
    """Train ``net`` + ``head`` on ``train_data`` under ``schedule`` (or load/resume the record in ``run_dir``); see the module docstring.

    ``schedule`` gives alpha and the learning-rate factor per (fractional) epoch and must have
    ``config.num_epochs`` epochs. ``eval_fn(net, head) -> dict`` runs in eval mode every
    ``config.eval_every`` epochs and after the last; its last result is ``metrics``.
    ``callbacks`` run as ``callback(epoch, record, net, head)`` after every epoch and may add
    JSON keys to ``record``. ``extra_params`` (JSON) join the run's parameters: put there
    everything else that decides the result (dataset, preset, evaluation protocol).
    Raises :class:`NonFiniteLossError` on a NaN/inf loss and :class:`RunDirConflictError` when
    ``run_dir`` holds a different run.
    """
    _check_inputs(schedule, train_data, config, callbacks)
    rank, world_size = distributed_info()
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and world_size == 1:
        raise RuntimeError(f"WORLD_SIZE={launched} (launched by torchrun) but no process group is initialised: "
                           "call heatup_lib.train.init_distributed() first and train on the device it returns")
    device = torch.device(config.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    amp = config.amp and device.type == "cuda"
    if config.amp and not amp:
        logger.info("amp=True is ignored on %s: training in float32", device)
    if world_size > 1 and config.batch_size < world_size:
        raise ValueError(f"batch_size={config.batch_size} is smaller than the {world_size} processes")

    net.to(device)
    head.to(device)
    if config.channels_last:
        net.to(memory_format=torch.channels_last)
    run_dir = Path(run_dir) if run_dir is not None else None
    params: dict[str, Any] = {}
    if run_dir is not None:  # (hashing the data and the initial weights costs time: only for records)
        if not hasattr(train_data, "describe") and not extra_params:
            logger.warning("%s has no describe(): only its class and length identify the data in the run's "
                           "parameters; pass the dataset's identity in extra_params", type(train_data).__name__)
        params = run_params(net, head, schedule, train_data, config, extra_params)
    digest = records.params_digest(params)
    num_steps = len(train_data)
    last_t = _step_time(config.num_epochs - 1, num_steps - 1, num_steps)

    trainable = [p for m in (net, head) for p in m.parameters() if p.requires_grad]
    optimizer = make_optimizer(trainable, config)
    start_epoch, history = 0, []

    # The run folder: refuse a different run's record, load a finished one, resume an unfinished one.
    if run_dir is not None:
        existing = records.read_params(run_dir)
        if existing is not None and not records.params_match(existing, params):
            diff = records.params_diff(existing, params)
            raise RunDirConflictError(
                f"{run_dir} holds a run with different parameters (differing: {', '.join(diff[:8])}"
                f"{', ...' if len(diff) > 8 else ''}); pass another run_dir or delete that folder")
        checkpoint = records.load_checkpoint(run_dir, map_location=device) if existing is not None else None
        if checkpoint is not None and (checkpoint.get("format") != _CHECKPOINT_FORMAT
                                       or checkpoint.get("params_digest") != digest):
            logger.warning("ignoring %s: it belongs to another run", run_dir / records.CHECKPOINT_FILE)
            checkpoint = None
        if checkpoint is not None:
            net.load_state_dict(checkpoint["net"])
            head.load_state_dict(checkpoint["head"])
            metrics = records.read_metrics(run_dir)
            if metrics is not None and checkpoint["epoch"] == config.num_epochs:  # finished: load, don't train
                head.alpha = schedule.alpha(last_t)
                logger.info("loaded the finished run in %s", run_dir)
                return TrainResult(history=checkpoint["history"], metrics=metrics, run_dir=run_dir,
                                   cached=True, resumed_from_epoch=config.num_epochs, params=params)
            optimizer.load_state_dict(checkpoint["optimizer"])
            start_epoch, history = int(checkpoint["epoch"]), list(checkpoint["history"])
            logger.info("resuming %s from epoch %d", run_dir, start_epoch)
        if world_size > 1:
            dist.barrier()  # every rank has read the folder before rank 0 writes to it
        if rank == 0:
            (run_dir / records.METRICS_FILE).unlink(missing_ok=True)
            records.write_params(run_dir, params)
            env = records.environment_info(device, world_size)
            env["started_at_epoch"] = start_epoch
            atomic_write_json(run_dir / records.ENVIRONMENT_FILE, env)
            if start_epoch == 0:
                records.write_history(run_dir, [])
                (run_dir / records.CHECKPOINT_FILE).unlink(missing_ok=True)

    # The module the steps run: net (compiled if asked) + head, in DDP under several processes.
    model = training_model(net, head, config, device)

    modes = [m.training for m in (net, head)]
    metrics: dict[str, Any] = {}
    bar = tqdm(total=config.num_epochs * num_steps, initial=start_epoch * num_steps, desc="train",
               unit="step", disable=not progress or rank != 0, dynamic_ncols=True)
    fork_devices = [device] if device.type == "cuda" else []
    cudnn_benchmark = torch.backends.cudnn.benchmark  # a global flag: set for this run, restored after
    torch.backends.cudnn.benchmark = config.cudnn_benchmark or cudnn_benchmark
    try:
        with torch.random.fork_rng(devices=fork_devices):
            if config.bn_settle and start_epoch == 0:
                settle_batch_norm(net, head, train_data, device, seed=config.seed, amp=amp,
                                  channels_last=config.channels_last, progress=progress)
            if config.class_mean_init and start_epoch == 0:
                class_mean_init(net, head, train_data, device, seed=config.seed, amp=amp,
                                channels_last=config.channels_last, progress=progress)
            for epoch in range(start_epoch, config.num_epochs):
                record = _train_epoch(model, net, head, optimizer, schedule, train_data, config, epoch,
                                      device, amp, rank, world_size, bar, run_dir)
                evaluate_now = eval_fn is not None and (
                    epoch == config.num_epochs - 1 or (config.eval_every and (epoch + 1) % config.eval_every == 0))
                if evaluate_now:
                    evaluation = _evaluate(eval_fn, net, head, rank, world_size)
                    record.update(evaluation)
                    if epoch == config.num_epochs - 1:
                        metrics = evaluation
                if rank == 0:
                    for cb in callbacks:
                        cb(epoch, record, net, head)
                history.append(records.normalize_values(record))
                if run_dir is not None and rank == 0:
                    records.save_checkpoint(run_dir, {
                        "format": _CHECKPOINT_FORMAT, "params_digest": digest, "epoch": epoch + 1,
                        "net": net.state_dict(), "head": head.state_dict(),
                        "optimizer": optimizer.state_dict(), "history": history, "rng": _rng_state(device),
                    })
                    records.write_history(run_dir, history)
                bar.set_postfix(loss=f"{record['loss']:.4f}", acc=f"{record['accuracy']:.3f}",
                                alpha=f"{record['alpha']:g}", refresh=False)
                logger.info("epoch %d: %s", epoch, {k: record[k] for k in _HISTORY_KEYS[1:5]})
            if start_epoch == config.num_epochs and eval_fn is not None:
                # killed after the last checkpoint but before metrics.json: evaluate again
                metrics = _evaluate(eval_fn, net, head, rank, world_size)
    finally:
        torch.backends.cudnn.benchmark = cudnn_benchmark
        bar.close()
        for module, mode in zip((net, head), modes):
            module.train(mode)
    head.alpha = schedule.alpha(last_t)
    if run_dir is not None and rank == 0:
        records.write_metrics(run_dir, metrics)
    if world_size > 1:
        dist.barrier()
    return TrainResult(history=history, metrics=metrics, run_dir=run_dir, cached=False,
                       resumed_from_epoch=start_epoch, params=params)


def _train_epoch(model: nn.Module, net: nn.Module, head: nn.Module, optimizer: torch.optim.Optimizer,
                 schedule: Any, train_data: BatchSource, config: TrainConfig, epoch: int,
                 device: torch.device, amp: bool, rank: int, world_size: int, bar: tqdm,
                 run_dir: Path | None) -> dict[str, Any]:
    """Train one epoch; the epoch's record (alpha, lr, loss, accuracy, seconds)."""
    start = time.perf_counter()
    num_steps = len(train_data)
    torch.manual_seed(_derived_seed(config.seed, epoch, _STREAM_GLOBAL))  # inside fit's fork_rng
    generator = epoch_generator(config.seed, epoch)
    # Per-step sums stay on the device: no host sync inside the epoch.
    sums = torch.zeros(3, num_steps, dtype=torch.float64, device=device)  # loss sum, correct, count
    model.train()
    step = -1
    for step, (X, y) in enumerate(train_data.epoch(epoch, generator)):
        if step >= num_steps:
            raise ValueError(f"train_data yielded more than len(train_data)={num_steps} batches in epoch {epoch}")
        t = _step_time(epoch, step, num_steps)
        head.alpha = schedule.alpha(t)
        lr = config.lr * schedule.lr_factor(t)
        for group in optimizer.param_groups:
            group["lr"] = lr
        global_n = y.shape[0]
        X, y = _local_slice(X, y, rank, world_size)
        X, y = _prepare_input(X, device, config.channels_last), y.to(device, non_blocking=True)
        # DDP averages gradients over ranks: scaling the summed loss by world_size / global_n makes
        # that average the gradient of the mean loss over the whole global batch, as in one process.
        loss_sum, logits = train_step(model, optimizer, X, y, amp=amp, label_smoothing=config.label_smoothing,
                                      loss_scale=world_size / global_n)
        with torch.no_grad():
            sums[0, step] = loss_sum
            sums[1, step] = (logits.argmax(dim=1) == y).sum()
            sums[2, step] = y.shape[0]
        bar.update(1)
    if step + 1 != num_steps:
        raise ValueError(f"train_data yielded {step + 1} batches in epoch {epoch}, but len(train_data)={num_steps}")
    if world_size > 1:
        dist.all_reduce(sums)
    sums = sums.cpu()
    finite = torch.isfinite(sums[0])
    if not bool(finite.all()):
        bad = int((~finite).nonzero()[0])
        kept = (f"the checkpoint of the last good epoch ({epoch - 1}) is kept in {run_dir / records.CHECKPOINT_FILE}"
                if run_dir is not None and epoch > 0 else "no checkpoint was written")
        raise NonFiniteLossError(
            f"non-finite loss ({float(sums[0, bad])}) at epoch {epoch}, step {bad} "
            f"(alpha={schedule.alpha(_step_time(epoch, bad, num_steps)):g}, "
            f"lr={config.lr * schedule.lr_factor(_step_time(epoch, bad, num_steps)):g}); "
            f"training stopped and {kept}. Try a smaller learning rate or check the data for NaNs.")
    count = float(sums[2].sum())
    return {
        "epoch": epoch,
        "alpha": schedule.alpha(epoch),
        "lr": config.lr * schedule.lr_factor(epoch),
        "loss": float(sums[0].sum()) / count,
        "accuracy": float(sums[1].sum()) / count,
        "seconds": time.perf_counter() - start,
    }
