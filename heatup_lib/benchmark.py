"""The paper's Inception benchmarks (CUB-200-2011, Cars196, SOP): recipes as data, one run end to end, the results table.

A *row* of the paper's tables (``sm``, ``ls``, ``ln``, ``bn``, ``hln``, ``hbn``) is a head variant
plus a schedule (:data:`heatup_lib.heads.TABLE_ROWS`). :func:`settings_for` turns a dataset, a preset
and overrides into the flat :class:`Settings` of one run; :func:`validate_settings` rejects bad
values before anything is built; :func:`run_experiment` goes image cache -> device-side batches ->
:class:`~heatup_lib.models.InceptionEmbedder` + :class:`~heatup_lib.heads.NormalizedSoftmax` ->
:func:`heatup_lib.train.fit`, evaluating the test split with the dataset's metrics every few epochs.

Alpha convention: :class:`~heatup_lib.heads.NormalizedSoftmax` divides the batch-normalised
feature by ``sqrt(D)`` itself (paper eq. 7), so ``alpha = 16 -> 4`` is the schedule of both LN and
BN here; it is the authors' ``16/sqrt(64) = 2 -> 0.5`` for BN at ``D = 64``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .heads import TABLE_ROWS, NormalizedSoftmax
from .train import COMPILE_MODES

__all__ = [
    "DATASETS", "ROWS", "PAPER_ROWS", "Recipe", "RECIPES", "Settings", "PRESETS", "PAPER_RESULTS",
    "PAPER_BASELINES", "PAPER_R1_BY_DIM", "settings_for", "validate_settings", "row_alpha",
    "make_schedule", "eval_batches", "embed_split", "run_experiment", "evaluate_run",
    "load_runs", "results_table", "results_markdown", "run_label", "table_metrics", "SOURCE_FILE",
    "STANDIN_NOTE", "standin_cache", "load_trained", "run_cache",
]

log = logging.getLogger(__name__)

DATASETS: tuple[str, ...] = ("cub200", "cars196", "sop")
ROWS: tuple[str, ...] = tuple(TABLE_ROWS)            # ("sm", "ls", "ln", "bn", "hln", "hbn")
PAPER_ROWS: tuple[str, ...] = ("sm", "ln", "bn", "hln", "hbn")   # the rows the paper's tables report


@dataclass(frozen=True)
class Recipe:
    """What differs between the three benchmarks in the authors' setup (SPEC §5, §7)."""

    optimizer: str                      # "sgd" or "adam"
    lr: float
    momentum: float = 0.9
    adam_eps: float = 1e-8
    class_mean_init: bool = False       # classifier initialised to normalised class means (SOP)
    recall_ks: tuple[int, ...] = (1, 2, 4, 8)


RECIPES: dict[str, Recipe] = {
    "cub200": Recipe(optimizer="sgd", lr=0.004, momentum=0.9),
    "cars196": Recipe(optimizer="sgd", lr=0.004, momentum=0.9),
    "sop": Recipe(optimizer="adam", lr=0.01, adam_eps=0.01, class_mean_init=True,
                  recall_ks=(1, 10, 100, 1000)),
}


@dataclass(frozen=True)
class Settings:
    """Every knob of one benchmark run besides the dataset and the row; plain data, stored in the run record."""

    num_epochs: int = 80
    heatup_epoch: int = 60              # epochs >= heatup_epoch are heated (0-based)
    batch_size: int = 32
    embedding_dim: int = 64
    alpha: float = 16.0                 # LN and BN rows; SM and LS use 1
    alpha_factor: float = 0.25          # 16 -> 4 at the heat-up
    lr_factor: float = 0.1              # lr -> lr / 10 at the heat-up
    label_smoothing: float = 0.1        # LS row only
    optimizer: str = "sgd"
    lr: float = 0.004
    momentum: float = 0.9
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    class_mean_init: bool = False
    bn_settle: bool = True              # one pass at lr 0 to settle batch-norm statistics
    image_size: int = 256               # side of the cached images
    crop_size: int = 224                # random crop (train) and centre crop (test)
    eval_every: int = 10                # evaluate the test split every this many epochs (0: only at the end)
    eval_batch_size: int = 256
    pretrained: bool = True             # ImageNet weights for the backbone
    weights: str | None = None          # a weights file instead of torchvision's download
    bias: bool = False                  # classifier bias after the alpha scaling (authors' code)
    amp: bool | None = None             # bf16 autocast; None: on for CUDA, off on CPU
    channels_last: bool | None = None   # None: on for CUDA
    fused: bool | None = None           # fused optimiser kernel; None: on for CUDA
    cudnn_benchmark: bool | None = None  # cuDNN picks its fastest convolutions per shape; None: on for CUDA
    compile: str = "off"                # torch.compile mode of the network (train.COMPILE_MODES)
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-serialisable dict."""
        return dataclasses.asdict(self)


# Presets: overrides of the paper's settings. "paper" is the reproduction (GPU, ImageNet weights);
# "default" and "smoke" train from scratch on small crops so that a CPU finishes in minutes / seconds.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "default": dict(num_epochs=24, batch_size=32, image_size=40, crop_size=32, eval_every=6,
                    pretrained=False, optimizer="adam", lr=1e-3, adam_eps=1e-8),
    "smoke": dict(num_epochs=2, batch_size=16, image_size=32, crop_size=28, eval_every=1,
                  pretrained=False, optimizer="adam", lr=1e-3, adam_eps=1e-8, eval_batch_size=128),
}

_HEATUP_FRACTION = 60 / 80


# The paper's 64-d results (SPEC §8), in percent as printed in the paper.
def _rows(*values: Sequence[float], keys: Sequence[str]) -> dict[str, dict[str, float]]:
    return {row: dict(zip(keys, v)) for row, v in zip(PAPER_ROWS, values)}


_K4 = ("nmi", "recall@1", "recall@2", "recall@4")
_KSOP = ("nmi", "recall@1", "recall@10", "recall@100")
PAPER_RESULTS: dict[str, dict[str, dict[str, float]]] = {
    "cars196": _rows((59.52, 60.76, 73.58, 82.50), (62.40, 68.59, 78.55, 86.18),
                     (65.81, 71.12, 80.62, 87.82), (66.87, 71.93, 81.68, 88.34),
                     (68.10, 74.70, 83.90, 89.77), keys=_K4),
    "cub200": _rows((57.19, 44.02, 55.86, 68.18), (59.23, 46.86, 59.79, 71.56),
                    (59.20, 47.27, 59.67, 71.89), (60.34, 49.68, 61.85, 73.08),
                    (60.75, 50.68, 62.58, 73.82), keys=_K4),
    "sop": _rows((88.66, 63.94, 80.07, 90.28), (90.11, 69.51, 84.69, 92.97),
                 (90.45, 71.19, 85.89, 93.75), (90.39, 70.36, 85.41, 93.70),
                 (90.61, 72.04, 86.25, 93.80), keys=_KSOP),
}
PAPER_BASELINES: dict[str, dict[str, dict[str, float]]] = {
    "cars196": {"ProxyNCA": dict(zip(_K4, (64.90, 73.22, 82.42, 86.36)))},
}
# Cars196 Recall@1 by embedding size (64, 128, 256); "ln16" is the fixed alpha = 16 row.
PAPER_R1_BY_DIM: dict[str, dict[int, float]] = {
    "sm": {64: 60.8, 128: 65.2, 256: 67.3},
    "ln16": {64: 71.1, 128: 74.2, 256: 78.0},
    "hbn": {64: 74.0, 128: 77.5, 256: 80.1},
}


# --- settings -------------------------------------------------------------------------------------

def settings_for(dataset: str, preset: str = "paper", **overrides: Any) -> Settings:
    """The settings of a run on ``dataset``: the paper's recipe, then ``preset``, then ``overrides`` (None values ignored).

    When ``num_epochs`` changes and ``heatup_epoch`` is not given, the heat-up moves to the same
    fraction of training as the paper's (epoch 60 of 80), and stays at least one epoch before the end.
    """
    if dataset not in RECIPES:
        raise ValueError(f"dataset must be one of {list(DATASETS)}, got {dataset!r}")
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {list(PRESETS)}, got {preset!r}")
    fields = {f.name for f in dataclasses.fields(Settings)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown}; accepted: {sorted(fields)}")
    recipe = RECIPES[dataset]
    values: dict[str, Any] = dict(optimizer=recipe.optimizer, lr=recipe.lr, momentum=recipe.momentum,
                                  adam_eps=recipe.adam_eps, class_mean_init=recipe.class_mean_init)
    values.update(PRESETS[preset])
    values.update({k: v for k, v in overrides.items() if v is not None})
    if "heatup_epoch" not in values or ("num_epochs" in overrides and "heatup_epoch" not in overrides
                                        and overrides["num_epochs"] is not None):
        n = values.get("num_epochs", Settings.num_epochs)
        if isinstance(n, int) and not isinstance(n, bool) and n >= 1:
            values["heatup_epoch"] = _scaled_heatup(n)
    return Settings(**values)


def _scaled_heatup(num_epochs: int) -> int:
    """The heat-up epoch at 3/4 of ``num_epochs`` (60 of 80), at least 1 and at most num_epochs - 1."""
    if num_epochs < 2:
        return num_epochs
    return min(num_epochs - 1, max(1, int(num_epochs * _HEATUP_FRACTION)))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validate_settings(dataset: str, row: str, settings: Settings, *, device: str | torch.device = "cpu",
                      data_root: str | Path | None = None, cache_dir: str | Path | None = None,
                      num_train: int | None = None) -> Settings:
    """Return ``settings`` if a run of ``row`` on ``dataset`` can start, else raise ValueError/FileNotFoundError naming the bad value.

    Called before any data is prepared or any model built. ``num_train`` (images in the training
    split), when known, bounds the batch size.
    """
    if dataset not in RECIPES:
        raise ValueError(f"dataset must be one of {list(DATASETS)}, got {dataset!r}")
    if row not in TABLE_ROWS:
        raise ValueError(f"row/variant must be one of {list(ROWS)}, got {row!r}")
    s = settings
    for name in ("num_epochs", "batch_size", "embedding_dim", "image_size", "crop_size", "eval_batch_size"):
        value = getattr(s, name)
        if not _is_int(value) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if s.batch_size < 2:
        raise ValueError(f"batch_size must be >= 2 (batch norm needs two samples), got {s.batch_size!r}")
    for name in ("alpha", "alpha_factor", "lr", "lr_factor"):
        value = getattr(s, name)
        if not _is_number(value) or value <= 0:
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    for name in ("momentum", "weight_decay", "adam_eps"):
        value = getattr(s, name)
        if not _is_number(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if not _is_number(s.label_smoothing) or not 0 <= s.label_smoothing < 1:
        raise ValueError(f"label_smoothing must be in [0, 1), got {s.label_smoothing!r}")
    if not _is_int(s.heatup_epoch) or not 0 <= s.heatup_epoch <= s.num_epochs:
        raise ValueError(f"heatup_epoch must be an integer in [0, num_epochs={s.num_epochs}], got {s.heatup_epoch!r}")
    if TABLE_ROWS[row][1] and not 1 <= s.heatup_epoch <= s.num_epochs - 1:
        raise ValueError(f"row {row!r} heats up, so heatup_epoch must lie in [1, num_epochs - 1 = "
                         f"{s.num_epochs - 1}] (and num_epochs >= 2), got heatup_epoch={s.heatup_epoch!r}")
    if not _is_int(s.eval_every) or s.eval_every < 0:
        raise ValueError(f"eval_every must be an integer >= 0, got {s.eval_every!r}")
    if s.optimizer not in ("sgd", "adam"):
        raise ValueError(f"optimizer must be one of ['sgd', 'adam'], got {s.optimizer!r}")
    if s.crop_size > s.image_size:
        raise ValueError(f"crop_size must be <= image_size={s.image_size}, got {s.crop_size!r}")
    if s.crop_size < 16:
        raise ValueError(f"crop_size must be >= 16 for GoogLeNet's five poolings, got {s.crop_size!r}")
    for name in ("class_mean_init", "bn_settle", "pretrained", "bias"):
        if not isinstance(getattr(s, name), bool):
            raise ValueError(f"{name} must be True or False, got {getattr(s, name)!r}")
    if s.compile not in COMPILE_MODES:
        raise ValueError(f"compile must be one of {list(COMPILE_MODES)}, got {s.compile!r}")
    for name in ("amp", "channels_last", "fused", "cudnn_benchmark"):
        if getattr(s, name) is not None and not isinstance(getattr(s, name), bool):
            raise ValueError(f"{name} must be True, False or None (automatic), got {getattr(s, name)!r}")
    if not _is_int(s.seed):
        raise ValueError(f"seed must be an integer, got {s.seed!r}")
    if s.weights is not None and not Path(s.weights).is_file():
        raise FileNotFoundError(f"weights file {str(s.weights)!r} does not exist")
    dev = _check_device(device)
    if s.amp and dev.type == "cpu":
        log.warning("amp=True on CPU: bf16 autocast on a CPU is slow; the CPU presets use fp32")
    if cache_dir is None and data_root is None:
        raise ValueError("give a data root (the dataset's official folder) or a prepared cache; got neither")
    if cache_dir is not None and not Path(cache_dir).is_dir():
        raise FileNotFoundError(f"cache folder {str(cache_dir)!r} does not exist; make one with "
                                f"`heatup prepare {dataset} --root DATA --out CACHE`")
    if cache_dir is None and not Path(data_root).is_dir():
        raise FileNotFoundError(f"data root {str(data_root)!r} does not exist; it must hold {dataset} "
                                "in its official layout (see `heatup prepare --help`)")
    if num_train is not None and s.batch_size > num_train:
        raise ValueError(f"batch_size={s.batch_size} is larger than the training set ({num_train} images)")
    return s


def _check_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch.device if this machine has it, else ValueError."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but CUDA is not available on this machine; use 'cpu'")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return dev


def row_alpha(row: str, settings: Settings) -> float:
    """The starting alpha of a table row: 1 for the plain softmax rows (SM, LS), ``settings.alpha`` otherwise."""
    variant, _ = TABLE_ROWS[row]
    return 1.0 if variant == "sm" else float(settings.alpha)


def make_schedule(row: str, settings: Settings):
    """The alpha / learning-rate schedule of a table row: a step heat-up for HLN/HBN, constant otherwise."""
    from .schedules import Constant, StepHeatUp

    _, heat_up = TABLE_ROWS[row]
    alpha = row_alpha(row, settings)
    if heat_up:
        return StepHeatUp(alpha=alpha, num_epochs=settings.num_epochs, heatup_epoch=settings.heatup_epoch,
                          alpha_factor=settings.alpha_factor, lr_factor=settings.lr_factor)
    return Constant(alpha=alpha, num_epochs=settings.num_epochs)


# --- embeddings -----------------------------------------------------------------------------------

def _unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel / compiled wrapper, or the module itself."""
    module = getattr(module, "module", module)
    return getattr(module, "_orig_mod", module)


def eval_batches(cache: Any, net: nn.Module, crop_size: int, batch_size: int, device: str | torch.device):
    """Centre-crop batches of every image of ``cache`` in order, normalised the way ``net`` expects (built once, reused by every evaluation)."""
    from .data.augment import CachedBatches

    norm = dict(getattr(_unwrap(net), "input_normalization", None) or {})
    return CachedBatches(cache, batch_size, train=False, device=device, crop=crop_size, drop_last=False, **norm)


@torch.no_grad()
def embed_split(net: nn.Module, head: NormalizedSoftmax | None, data: Any, *, device: str | torch.device,
                crop_size: int | None = None, batch_size: int = 256, amp: bool = False,
                channels_last: bool = False, normalize: bool = True) -> tuple[Tensor, Tensor]:
    """Test-time embeddings of every image of ``data`` (centre crop, eval mode): (N, D) float32, L2-normalised, and labels (N,).

    ``data`` is an ``ImageCache`` split (then ``crop_size`` is needed) or the :func:`eval_batches`
    of one. With ``head=None`` the backbone features are returned, L2-normalised (the SM/LN
    embedding) unless ``normalize=False``.
    """
    device = torch.device(device)
    net_, head_ = _unwrap(net), (_unwrap(head) if head is not None else None)
    if not hasattr(data, "iter_eval"):
        if crop_size is None:
            raise ValueError("crop_size is needed to embed an ImageCache; got None")
        data = eval_batches(data, net_, crop_size, batch_size, device)
    modes = [(m, m.training) for m in (net_, head_) if m is not None]
    for m, _ in modes:
        m.eval()
    feats, labels = [], []
    try:
        for X, y in data.iter_eval():
            if channels_last:
                X = X.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
                f = net_(X)
            f = f.float()
            if head_ is not None:
                f = head_.embed(f)
            elif normalize:
                f = F.normalize(f, dim=1)
            feats.append(f)
            labels.append(y.to(device))
    finally:
        for m, was_training in modes:
            m.train(was_training)
    return torch.cat(feats), torch.cat(labels)


# --- one run --------------------------------------------------------------------------------------

def _cache_summary(cache: Any) -> dict[str, Any]:
    """What identifies the cached data of a split: counts, classes and the manifest's checksums."""
    info = dict(cache.manifest.get("splits", {}).get(cache.split, {}))
    return {"num_images": len(cache), "num_classes": cache.num_classes,
            "images_sha256": info.get("images_sha256"), "labels_sha256": info.get("labels_sha256")}


def _resolve_cache(dataset: str, settings: Settings, cache_dir: str | Path | None, data_root: str | Path | None,
                   runs_dir: Path, progress: bool) -> Path:
    """The prepared cache folder: ``cache_dir`` as given, or ``data_root`` decoded once into ``runs_dir/cache``."""
    if cache_dir is not None:
        return Path(cache_dir)
    from .data.cache import prepare_dataset

    out = runs_dir / "cache" / f"{dataset}-{settings.image_size}"
    return Path(prepare_dataset(dataset, data_root, out, size=settings.image_size, progress=progress))


def run_experiment(dataset: str, row: str, *, cache_dir: str | Path | None = None,
                   data_root: str | Path | None = None, runs_dir: str | Path = "runs",
                   preset: str = "paper", overrides: Mapping[str, Any] | None = None,
                   device: str | torch.device = "cpu", run_name: str | None = None,
                   callbacks: Iterable = (), standin: str | None = None, progress: bool = True):
    """Train one table row on a benchmark end to end and return :class:`heatup_lib.train.TrainResult` (cached when its record exists).

    ``cache_dir`` is a cache made by ``heatup prepare``; otherwise ``data_root`` (the dataset's
    official folder) is decoded once into ``runs_dir/cache``. ``overrides`` change single
    :class:`Settings` fields of the preset. The run folder is ``runs_dir/<dataset>-<row>-<digest>``
    unless ``run_name`` names it. ``standin`` describes data that is not the named dataset (e.g.
    "MNIST digits in the CUB layout"); it is stored in the record so that every table says so.
    """
    from . import metrics
    from .data.augment import CachedBatches
    from .data.cache import ImageCache
    from .models import InceptionEmbedder
    from .records import params_digest
    from .train import TrainConfig, fit

    settings = settings_for(dataset, preset, **dict(overrides or {}))
    validate_settings(dataset, row, settings, device=device, data_root=data_root, cache_dir=cache_dir)
    dev = torch.device(device)
    runs_dir = Path(runs_dir)
    if cache_dir is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError(f"data_root={str(data_root)!r} is not a prepared cache; with several processes, prepare it "
                         f"once first (`heatup prepare {dataset} --root {data_root} --out CACHE`) and pass cache_dir")
    cache_path = _resolve_cache(dataset, settings, cache_dir, data_root, runs_dir, progress)
    train_cache, test_cache = ImageCache.open(cache_path, "train"), ImageCache.open(cache_path, "test")
    validate_settings(dataset, row, settings, device=device, cache_dir=cache_path, num_train=len(train_cache.labels))
    side = int(train_cache.images.shape[1])
    if settings.crop_size > side:
        raise ValueError(f"crop_size={settings.crop_size} is larger than the cached images ({side} px) in {cache_path}")
    variant, heat_up = TABLE_ROWS[row]
    on_cuda = dev.type == "cuda"
    amp = on_cuda if settings.amp is None else settings.amp
    channels_last = on_cuda if settings.channels_last is None else settings.channels_last
    fused = on_cuda if settings.fused is None else settings.fused
    cudnn_benchmark = on_cuda if settings.cudnn_benchmark is None else settings.cudnn_benchmark

    num_classes = train_cache.num_classes  # cache labels are 0..C-1 within each split

    pretrained: bool | str = settings.weights if settings.weights is not None else settings.pretrained
    with torch.random.fork_rng(devices=[]):  # the seed decides the initial weights; the caller's RNG is untouched
        torch.manual_seed(settings.seed)
        net = InceptionEmbedder(settings.embedding_dim, pretrained=pretrained, bottleneck_bias=variant != "bn")
        head = NormalizedSoftmax(settings.embedding_dim, num_classes, alpha=row_alpha(row, settings),
                                 variant=variant, bias=settings.bias)
    net, head = net.to(dev), head.to(dev)
    norm = dict(net.input_normalization)
    batches = CachedBatches(train_cache, settings.batch_size, train=True, device=dev,
                            crop=settings.crop_size, channels_last=channels_last, **norm)

    test_data: list = []  # built at the first evaluation, then reused (a finished run loads without it)

    def eval_fn(net_: nn.Module, head_: NormalizedSoftmax) -> dict[str, float]:
        if not test_data:
            test_data.append(eval_batches(test_cache, net_, settings.crop_size, settings.eval_batch_size, dev))
        emb, y = embed_split(net_, head_, test_data[0], device=dev, amp=amp, channels_last=channels_last)
        return {k: float(v) for k, v in metrics.evaluate(emb, y, dataset=dataset).items()}

    config = TrainConfig(
        num_epochs=settings.num_epochs, batch_size=settings.batch_size, optimizer=settings.optimizer,
        lr=settings.lr, momentum=settings.momentum, adam_eps=settings.adam_eps,
        weight_decay=settings.weight_decay,
        label_smoothing=settings.label_smoothing if row == "ls" else 0.0, seed=settings.seed,
        device=str(dev), amp=amp, channels_last=channels_last, eval_every=settings.eval_every,
        bn_settle=settings.bn_settle, class_mean_init=settings.class_mean_init,
        fused=fused, cudnn_benchmark=cudnn_benchmark, compile=settings.compile,
    )
    data = {"dataset": dataset, "train": _cache_summary(train_cache), "test": _cache_summary(test_cache),
            "image_size": side, "standin": standin}
    extra = {
        "benchmark": {
            "dataset": dataset, "row": row, "variant": variant, "heat_up": heat_up, "preset": preset,
            "settings": settings.to_dict(), "data": data,
            "model": {"arch": "googlenet", "embedding_dim": settings.embedding_dim,
                      "pretrained": pretrained if isinstance(pretrained, bool) else Path(pretrained).name,
                      "bottleneck_bias": variant != "bn", "head_bias": settings.bias,
                      "num_classes": num_classes, "input_normalization": norm},
        }
    }
    name = run_name or f"{dataset}-{row}-{params_digest(extra)[:10]}"
    run_dir = runs_dir / name
    result = fit(net, head, make_schedule(row, settings), batches, config, run_dir=run_dir, eval_fn=eval_fn,
                 callbacks=tuple(callbacks), extra_params=extra, progress=progress)
    if _is_rank0():
        from .io import atomic_write_json
        atomic_write_json(run_dir / SOURCE_FILE, {"cache": str(Path(cache_path).resolve())})
    return result


SOURCE_FILE = "source.json"  # where the run's cache lies on this machine (not part of the parameters)


def _is_rank0() -> bool:
    """True unless this process is a non-zero rank of an initialised process group."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


# --- the stand-in dataset -------------------------------------------------------------------------

STANDIN_NOTE = "MNIST digits in the CUB layout, not the paper's data"


def standin_cache(out_dir: str | Path, images_per_class: int = 300, image_size: int = 64, seed: int = 0,
                  workers: int | None = 0, progress: bool = False, mnist_root: str | Path | None = None) -> Path:
    """A prepared cache of the stand-in (real MNIST digits written as a CUB-200-2011 tree, class-disjoint split) under ``out_dir``; built once, then reused.

    Ten digit classes: 0-4 train, 5-9 test (zero-shot, as in the benchmarks). The tree goes to
    ``out_dir/tree-<images_per_class>-<seed>`` and the cache to ``out_dir/cache-<images_per_class>-<seed>-<image_size>``.
    ``mnist_root`` is a torchvision MNIST root to read the digits from (default: the offline copy).
    """
    from .data.cache import prepare_dataset
    from .data.fixtures import write_digits_cub_tree

    if not _is_int(images_per_class) or images_per_class < 2:
        raise ValueError(f"images_per_class must be an integer >= 2, got {images_per_class!r}")
    out_dir = Path(out_dir)
    tree = out_dir / f"tree-{images_per_class}-{seed}"
    cache = out_dir / f"cache-{images_per_class}-{seed}-{image_size}"
    if not (cache / "manifest.json").is_file():
        if not (tree / "CUB_200_2011" / "train_test_split.txt").is_file():
            write_digits_cub_tree(tree, num_classes=10, images_per_class=images_per_class,
                                  size=max(image_size, 16), seed=seed, mnist_root=mnist_root)
        prepare_dataset("cub200", tree, cache, size=image_size, workers=workers, progress=progress)
    return cache


# --- evaluating a recorded run --------------------------------------------------------------------

def _benchmark_params(params: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``benchmark`` block that :func:`run_experiment` put into a record's parameters (``fit`` nests it under ``extra``)."""
    if not isinstance(params, Mapping):
        return None
    block = params.get("benchmark")
    if isinstance(block, Mapping) and "row" in block and "dataset" in block:
        return dict(block)
    for value in params.values():
        found = _benchmark_params(value) if isinstance(value, Mapping) else None
        if found is not None:
            return found
    return None


def load_trained(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, NormalizedSoftmax, dict[str, Any]]:
    """The trained network and head of a benchmark run (from its checkpoint, in eval mode) and the run's ``benchmark`` parameter block."""
    import warnings

    from .models import InceptionEmbedder
    from .records import load_checkpoint, load_record

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {str(run_dir)!r} does not exist")
    block = _benchmark_params(load_record(run_dir).params)
    if block is None:
        raise ValueError(f"{run_dir} is not a benchmark run (its params.json has no 'benchmark' block)")
    dev = _check_device(device)
    checkpoint = load_checkpoint(run_dir, map_location="cpu")
    if checkpoint is None:
        raise FileNotFoundError(f"run {run_dir} has no checkpoint.pt")
    if "net" not in checkpoint or "head" not in checkpoint:
        raise ValueError(f"{run_dir}/checkpoint.pt holds no 'net'/'head' weights; its keys are {sorted(checkpoint)}")
    model = block["model"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the weights come from the checkpoint, not ImageNet
        net = InceptionEmbedder(model["embedding_dim"], pretrained=False, bottleneck_bias=model["bottleneck_bias"])
    head = NormalizedSoftmax(model["embedding_dim"], model["num_classes"], variant=block["variant"],
                             bias=model["head_bias"])
    net.load_state_dict(checkpoint["net"])
    head.load_state_dict(checkpoint["head"])
    return net.to(dev).eval(), head.to(dev).eval(), block


def run_cache(run_dir: str | Path) -> Path:
    """The cache folder a run was trained on, as recorded in its ``source.json``."""
    source = Path(run_dir) / SOURCE_FILE
    if not source.is_file():
        raise ValueError(f"run {run_dir} does not say where its data lies (no {SOURCE_FILE}); pass cache_dir or data_root")
    return Path(json.loads(source.read_text())["cache"])


def evaluate_run(run_dir: str | Path, *, cache_dir: str | Path | None = None, data_root: str | Path | None = None,
                 device: str | torch.device = "cpu", batch_size: int | None = None,
                 progress: bool = False, return_embeddings: bool = False):
    """Evaluate a recorded benchmark run's checkpoint on its test split with the dataset's metrics (fractions).

    The data comes from ``cache_dir``, else ``data_root`` (prepared into ``<runs_dir>/cache``),
    else the cache the run was trained on (``source.json`` in the run folder). With
    ``return_embeddings`` the result is ``(metrics, embeddings (N, D), labels (N,), test cache)``.
    """
    from . import metrics
    from .data.cache import ImageCache

    net, head, block = load_trained(run_dir, device)
    dataset = block["dataset"]
    settings = Settings(**block["settings"])
    dev = _check_device(device)
    if cache_dir is None and data_root is not None:
        cache_dir = _resolve_cache(dataset, settings, None, data_root, Path(run_dir).parent, progress)
    if cache_dir is None:
        cache_dir = run_cache(run_dir)
    if not Path(cache_dir).is_dir():
        raise FileNotFoundError(f"cache folder {str(cache_dir)!r} does not exist")
    test_cache = ImageCache.open(cache_dir, "test")
    on_cuda = dev.type == "cuda"
    emb, y = embed_split(net, head, test_cache, device=dev, crop_size=settings.crop_size,
                         batch_size=batch_size or settings.eval_batch_size,
                         amp=on_cuda if settings.amp is None else settings.amp,
                         channels_last=on_cuda if settings.channels_last is None else settings.channels_last)
    scores = {k: float(v) for k, v in metrics.evaluate(emb, y, dataset=dataset).items()}
    return (scores, emb, y, test_cache) if return_embeddings else scores


# --- results tables -------------------------------------------------------------------------------

def load_runs(*roots: str | Path) -> list[dict[str, Any]]:
    """Every complete benchmark run record under ``roots``, summarised: dataset, row, metrics, history, environment, data, path."""
    from .records import find_records

    runs = []
    for root in roots:
        for record in find_records(root, complete_only=True):
            block = _benchmark_params(record.params)
            if block is None:
                continue
            runs.append({"dataset": block["dataset"], "row": block["row"], "preset": block.get("preset"),
                         "settings": block.get("settings", {}), "data": block.get("data", {}),
                         "metrics": dict(record.metrics or {}), "history": list(record.history),
                         "environment": dict(record.environment or {}), "path": str(record.path)})
    return runs


def run_label(run: Mapping[str, Any]) -> str:
    """Where a recorded result comes from: machine, date, commit and data."""
    env = run.get("environment") or {}
    data = run.get("data") or {}
    machine = env.get("device_name") or env.get("device") or "unknown machine"
    if (env.get("world_size") or 1) > 1:
        machine = f"{env['world_size']} x {machine}"
    date = str(env.get("date", "unknown date"))[:10]
    commit = str(env.get("git_commit") or "no commit")[:12]
    standin = data.get("standin")
    train = data.get("train", {}) or {}
    what = f"stand-in: {standin}" if standin else f"{data.get('dataset', run.get('dataset'))}"
    if train.get("num_images"):
        what += f", {train['num_images']} train images"
    if train.get("images_sha256"):
        what += f", data {str(train['images_sha256'])[:8]}"
    preset = run.get("preset")
    return f"{machine}, {date}, commit {commit}, {what}" + (f", preset {preset}" if preset else "")


def table_metrics(dataset: str) -> tuple[str, ...]:
    """The metrics of the paper's table for ``dataset``: NMI and Recall@K for its first three K."""
    if dataset not in RECIPES:
        raise ValueError(f"dataset must be one of {list(DATASETS)}, got {dataset!r}")
    return ("nmi",) + tuple(f"recall@{k}" for k in RECIPES[dataset].recall_ks[:3])


def results_table(runs: Iterable[Mapping[str, Any]], dataset: str, metrics: Sequence[str] | None = None,
                  include_paper: bool = True) -> list[dict[str, Any]]:
    """Rows of a results table in percent: for each table row, the paper's numbers, then every recorded run of it on ``dataset``.

    Each entry is ``{"row": "HBN", "source": "paper" or a run label, metric: value or None}``.
    """
    metrics = tuple(metrics or table_metrics(dataset))
    paper = PAPER_RESULTS.get(dataset, {})
    runs = [r for r in runs if r.get("dataset") == dataset]
    out: list[dict[str, Any]] = []
    for row in ROWS:
        if include_paper and row in paper:
            out.append({"row": row.upper(), "source": "paper", **{m: paper[row].get(m) for m in metrics}})
        for run in sorted((r for r in runs if r.get("row") == row), key=lambda r: r.get("path", "")):
            values = run.get("metrics", {})
            out.append({"row": row.upper(), "source": run_label(run),
                        **{m: (100.0 * values[m] if m in values else None) for m in metrics}})
    if include_paper:
        for name, values in PAPER_BASELINES.get(dataset, {}).items():
            out.append({"row": name, "source": "paper (best prior)", **{m: values.get(m) for m in metrics}})
    return out


def _metric_title(name: str) -> str:
    return {"nmi": "NMI", "map@r": "MAP@R", "r_precision": "R-Prec"}.get(name, name.replace("recall@", "R@"))


def results_markdown(table: Sequence[Mapping[str, Any]], metrics: Sequence[str] | None = None) -> str:
    """A Markdown table of :func:`results_table` rows (values in percent, two decimals, "-" when absent)."""
    if not table:
        return "_No results to show._"
    if metrics is None:
        metrics = [k for k in table[0] if k not in ("row", "source")]
    lines = ["| row | source | " + " | ".join(_metric_title(m) for m in metrics) + " |",
             "|---|---|" + "---:|" * len(metrics)]
    for entry in table:
        cells = ["-" if entry.get(m) is None else f"{entry[m]:.2f}" for m in metrics]
        lines.append(f"| {entry['row']} | {entry['source']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
