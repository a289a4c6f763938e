"""The benchmark recipe (CUB-200-2011, Cars196, SOP): settings as data, and one run end to end.

A *row* of the paper's tables (``sm``, ``ls``, ``ln``, ``bn``, ``hln``, ``hbn``) is a head variant
plus a schedule (:data:`heatup_lib.heads.TABLE_ROWS`). :func:`settings_for` builds the
:class:`Settings` of a run: the authors' recipe for the dataset (:data:`RECIPES`), then the
preset's keys (``params/<preset>.yaml``), then overrides. :func:`run_experiment` goes image cache
-> device-side batches -> backbone + :class:`~heatup_lib.heads.NormalizedSoftmax` ->
:func:`heatup_lib.train.fit`, evaluating the test split with the dataset's metrics.

Alpha convention: the head divides the batch-normalised feature by ``sqrt(D)`` itself (paper
eq. 7), so ``alpha = 16 -> 4`` is the schedule of both LN and BN here; it is the authors'
``16/sqrt(64) = 2 -> 0.5`` for BN at ``D = 64``.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import metrics
from .atomic import atomic_write_json
from .checks import check_bool, check_choice, check_float, check_int, check_str
from .data.augment import CachedBatches
from .data.cache import ImageCache, prepare_dataset
from .distributed import is_rank0, launched_world_size
from .embedding import SOURCE_FILE, benchmark_block, cache_summary, embed_split, eval_batches, run_cache
from .fingerprint import CORE_MODULES
from .heads import TABLE_ROWS, NormalizedSoftmax
from .models import InceptionEmbedder, SmallConvEmbedder
from .presets import load_preset
from .records import load_checkpoint, load_record, params_digest
from .passes import evaluating
from .recorded import ARRAYS_FILE, write_arrays
from .runs import check_run_name, run_params
from .schedules import Constant, Schedule, StepHeatUp, named_schedule
from .train import TrainConfig, TrainResult, fit

__all__ = ["DATASETS", "ROWS", "PAPER_ROWS", "BACKBONES", "RECALL_KS", "RECIPES", "HeatUp", "Settings",
           "settings_for", "row_alpha", "make_schedule", "build_backbone", "check_device",
           "run_experiment", "run_params_of", "prepare_cache", "temperature_of", "CODE_MODULES", "SETTING_NAMES", "scaled_heatup", "load_trained",
           "check_same_data", "evaluate_run"]

log = logging.getLogger(__name__)

DATASETS: tuple[str, ...] = ("cub200", "cars196", "sop")
ROWS: tuple[str, ...] = tuple(TABLE_ROWS)            # ("sm", "ls", "ln", "bn", "hln", "hbn")
PAPER_ROWS: tuple[str, ...] = ("sm", "ln", "bn", "hln", "hbn")   # the rows the paper's tables report
# inception: the paper's Inception v1 (GoogLeNet); small: a convnet sized for a CPU. Both end in
# global pooling and a 1x1 conv bottleneck to the embedding, then the same head.
BACKBONES: tuple[str, ...] = ("inception", "small")
RECALL_KS: dict[str, tuple[int, ...]] = {"cub200": (1, 2, 4, 8), "cars196": (1, 2, 4, 8),
                                         "sop": (1, 10, 100, 1000)}
# The modules whose code decides a benchmark run's numbers (for the record's code fingerprint).
CODE_MODULES = CORE_MODULES + ("heatup_lib.models", "heatup_lib.benchmark", "heatup_lib.data.augment",
                                "heatup_lib.embedding")

# What differs between the three benchmarks in the authors' setup (SPEC section 5).
RECIPES: dict[str, dict[str, Any]] = {
    "cub200": {"optimizer": "sgd", "lr": 0.004, "momentum": 0.9},
    "cars196": {"optimizer": "sgd", "lr": 0.004, "momentum": 0.9},
    "sop": {"optimizer": "adam", "lr": 0.01, "adam_eps": 0.01, "class_mean_init": True},
}


@dataclass(frozen=True)
class HeatUp:
    """The schedule of the rows: alpha before the heat-up, and the step of the heated rows (SPEC section 4)."""

    alpha: float = 16.0           # LN and BN rows; SM and LS use 1
    heatup_epoch: int = 60        # epochs >= heatup_epoch are heated (0-based)
    alpha_factor: float = 0.25    # 16 -> 4 at the heat-up
    lr_factor: float = 0.1        # lr -> lr / 10 at the heat-up


@dataclass(frozen=True)
class Settings:
    """Every knob of one benchmark run besides the dataset and the row; plain data, stored in the run record."""

    train: TrainConfig = field(default_factory=lambda: TrainConfig(optimizer="sgd", lr=0.004, bn_settle=True,
                                                                   eval_every=10))
    heat_up: HeatUp = HeatUp()
    num_epochs: int = 80
    batch_size: int = 32
    embedding_dim: int = 64
    backbone: str = "inception"
    image_size: int = 256          # side of the cached images
    crop_size: int = 224           # random crop (train) and centre crop (test)
    eval_batch_size: int = 256
    pretrained: bool = True        # ImageNet weights for the backbone (inception only)
    weights: str | None = None     # a weights file instead of the torch hub cache
    bias: bool = False             # classifier bias after the alpha scaling (authors' code)
    ls_smoothing: float = 0.1      # the LS row's label smoothing

    def __post_init__(self) -> None:
        for name in ("num_epochs", "embedding_dim", "image_size", "eval_batch_size"):
            check_int(name, getattr(self, name), min_value=1)
        check_int("batch_size", self.batch_size, min_value=2)  # batch norm needs two samples
        check_int("crop_size", self.crop_size, min_value=16, max_value=self.image_size)
        check_int("heatup_epoch", self.heat_up.heatup_epoch, 0, self.num_epochs)
        check_choice("backbone", self.backbone, BACKBONES)
        check_bool("pretrained", self.pretrained)
        check_bool("bias", self.bias)
        if self.weights is not None:
            check_str("weights", self.weights)
            if not Path(self.weights).is_file():
                raise FileNotFoundError(f"weights file {self.weights!r} does not exist")
        check_float("alpha", self.heat_up.alpha, 0.0, min_open=True)
        check_float("alpha_factor", self.heat_up.alpha_factor, 0.0, 1.0, min_open=True)
        check_float("lr_factor", self.heat_up.lr_factor, 0.0, 1.0, min_open=True)
        check_float("ls_smoothing", self.ls_smoothing, 0.0, 1.0, max_open=True)

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-serialisable, nested dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Settings:
        """The settings :meth:`to_dict` described."""
        d = dict(d)
        return cls(train=TrainConfig(**d.pop("train")), heat_up=HeatUp(**d.pop("heat_up")), **d)


_TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)} - {"device"}
_HEATUP_FIELDS = {f.name for f in dataclasses.fields(HeatUp)}
_OWN_FIELDS = {f.name for f in dataclasses.fields(Settings)} - {"train", "heat_up"}
SETTING_NAMES: frozenset[str] = frozenset(_TRAIN_FIELDS | _HEATUP_FIELDS | _OWN_FIELDS)
_AUTO_ON_CUDA = ("amp", "channels_last", "fused", "cudnn_benchmark")


def settings_for(dataset: str, preset: str = "paper", device: str | torch.device = "cpu",
                 **overrides: Any) -> Settings:
    """The settings of a run on ``dataset``: the recipe, then ``params/<preset>.yaml``, then ``overrides`` (None: unset).

    Names are flat (``lr``, ``alpha``, ``num_epochs``, ...: :data:`SETTING_NAMES`). When
    ``num_epochs`` is set and ``heatup_epoch`` is not, the heat-up moves to the same fraction of
    training as the paper's (epoch 60 of 80). ``amp``, ``channels_last``, ``fused`` and
    ``cudnn_benchmark`` left unset are on for CUDA, off on a CPU.
    """
    check_choice("dataset", dataset, DATASETS)
    unknown = sorted(set(overrides) - SETTING_NAMES)
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown}; accepted: {sorted(SETTING_NAMES)}")
    from_preset = {k: v for k, v in load_preset(preset).items() if k in SETTING_NAMES and v is not None}
    values: dict[str, Any] = {"bn_settle": True, "eval_every": 10, **RECIPES[dataset], **from_preset,
                              **{k: v for k, v in overrides.items() if v is not None}}
    if "heatup_epoch" not in values and "num_epochs" in values:
        values["heatup_epoch"] = scaled_heatup(check_int("num_epochs", values["num_epochs"], min_value=1))
    on_cuda = check_device(device).type == "cuda"
    for name in _AUTO_ON_CUDA:
        values.setdefault(name, on_cuda)
    train = TrainConfig(device=str(device), **{k: v for k, v in values.items() if k in _TRAIN_FIELDS})
    heat_up = HeatUp(**{k: v for k, v in values.items() if k in _HEATUP_FIELDS})
    return Settings(train=train, heat_up=heat_up, **{k: v for k, v in values.items() if k in _OWN_FIELDS})


def scaled_heatup(num_epochs: int) -> int:
    """The heat-up epoch at 3/4 of ``num_epochs`` (60 of 80), at least 1 and at most ``num_epochs - 1``."""
    if num_epochs < 2:
        return num_epochs
    return min(num_epochs - 1, max(1, int(num_epochs * 60 / 80)))


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch.device if this machine has it, else ValueError."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}") from err
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} was asked for but CUDA is not available on this machine; "
                         "use 'cpu'")
    return dev


def row_alpha(row: str, settings: Settings) -> float:
    """The starting alpha of a table row: 1 for the plain softmax rows (SM, LS), ``heat_up.alpha`` otherwise."""
    return 1.0 if TABLE_ROWS[check_choice("row", row, ROWS)][0] == "sm" else float(settings.heat_up.alpha)


def make_schedule(row: str, settings: Settings) -> Schedule:
    """The alpha / learning-rate schedule of a table row: the paper's step heat-up for HLN/HBN, constant otherwise."""
    h, alpha = settings.heat_up, row_alpha(row, settings)
    if TABLE_ROWS[row][1]:
        return StepHeatUp(alpha, settings.num_epochs, h.heatup_epoch, h.alpha_factor, h.lr_factor)
    return Constant(alpha, settings.num_epochs)


def temperature_of(row: str, settings: Settings, temperature: str | None = None) -> tuple[str, float, Schedule]:
    """``(alpha_mode, initial alpha, schedule)`` of a row, or of a named temperature setting on the row's head variant.

    ``temperature`` names a setting of :func:`heatup_lib.schedules.named_schedule` (e.g.
    ``"learned alpha (from 16)"``, ``"alpha=16 smooth heat-up (cosine)"``); the heat-up epoch and
    factors come from ``settings.heat_up``. The plain softmax rows (SM, LS) take none.
    """
    if temperature is None:
        return "scheduled", row_alpha(row, settings), make_schedule(row, settings)
    if TABLE_ROWS[check_choice("row", row, ROWS)][0] == "sm":
        raise ValueError(f"row {row!r} is a plain softmax: a temperature setting needs an 'ln' or 'bn' row")
    h = settings.heat_up
    return named_schedule(temperature, settings.num_epochs, h.heatup_epoch, h.alpha_factor, h.lr_factor)


def build_backbone(settings: Settings, bottleneck_bias: bool) -> nn.Module:
    """The settings' backbone with its 1x1 bottleneck to ``embedding_dim``.

    ``inception``: Inception v1, ImageNet weights when asked; ``small``: :class:`SmallConvEmbedder`
    at its default widths, from scratch (``pretrained`` and ``weights`` must be unset).
    """
    if check_choice("backbone", settings.backbone, BACKBONES) == "small":
        if settings.pretrained or settings.weights is not None:  # no ImageNet weights for it
            raise ValueError("backbone 'small' is trained from scratch: set pretrained=False and "
                             f"weights=None (got pretrained={settings.pretrained!r}, "
                             f"weights={settings.weights!r})")
        return SmallConvEmbedder(settings.embedding_dim, bottleneck_bias=bottleneck_bias)
    pretrained: bool | str = settings.weights if settings.weights is not None else settings.pretrained
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"InceptionEmbedder\(pretrained=False\)")
        return InceptionEmbedder(settings.embedding_dim, pretrained=pretrained, bottleneck_bias=bottleneck_bias)


def _check_folder(what: str, path: str | Path, hint: str) -> None:
    """``FileNotFoundError`` when ``path`` is missing, ``NotADirectoryError`` when it is a file."""
    if Path(path).is_file():
        raise NotADirectoryError(f"{what} {str(path)!r} is a file, not a folder; {hint}")
    if not Path(path).is_dir():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist; {hint}")


def _resolve_cache(dataset: str, settings: Settings, cache_dir: str | Path | None,
                   data_root: str | Path | None, runs_dir: Path, progress: bool) -> Path:
    """The prepared cache folder: ``cache_dir`` as given, or ``data_root`` decoded once into ``runs_dir/cache``."""
    if cache_dir is not None:
        _check_folder("cache folder", cache_dir,
                      f"make one with `heatup prepare {dataset} --root DATA --out CACHE`")
        return Path(cache_dir)
    if data_root is None:
        raise ValueError("give a data root (the dataset's official folder) or a prepared cache; got neither")
    _check_folder("data root", data_root,
                  f"it must hold {dataset} in its official layout (see `heatup prepare --help`)")
    if launched_world_size() > 1:
        raise ValueError(f"data_root={str(data_root)!r} is not a prepared cache; with several processes, "
                         f"prepare it once first (`heatup prepare {dataset} --root {data_root} --out CACHE`)")
    out = runs_dir / "cache" / f"{dataset}-{settings.image_size}"
    return Path(prepare_dataset(dataset, data_root, out, size=settings.image_size, progress=progress))


def prepare_cache(dataset: str, settings: Settings, data_root: str | Path, runs_dir: str | Path,
                  progress: bool = False) -> Path:
    """The dataset's official folder decoded once into ``runs_dir/cache/<dataset>-<image_size>`` (reused after)."""
    return _resolve_cache(dataset, settings, None, data_root, Path(runs_dir), progress)


@dataclass
class _Prepared:
    """Everything one benchmark run needs before ``fit``."""

    net: nn.Module
    head: NormalizedSoftmax
    schedule: Schedule
    batches: CachedBatches
    config: TrainConfig
    extra: dict[str, Any]
    test_cache: ImageCache


def _prepare(dataset: str, row: str, settings: Settings, cache_path: Path, preset: str | None,
             standin: str | None, temperature: str | None) -> _Prepared:
    """The seeded network and head, schedule, batches, config and record parameters of one run on a prepared cache."""
    check_choice("dataset", dataset, DATASETS)
    variant, heat_up = TABLE_ROWS[check_choice("row", row, ROWS)]
    alpha_mode, alpha, schedule = temperature_of(row, settings, temperature)
    dev = check_device(settings.train.device)
    train_cache, test_cache = ImageCache.open(cache_path, "train"), ImageCache.open(cache_path, "test")
    side = int(train_cache.images.shape[1])
    if train_cache.dataset != dataset:
        raise ValueError(f"the cache {cache_path} holds {train_cache.dataset!r}, not {dataset!r}")
    if settings.image_size != side:
        size = settings.image_size
        raise ValueError(f"image_size={size} but the cache {cache_path} holds {side}-px images; "
                         f"pass image_size={side} (--image-size {side}) or prepare a {size}-px "
                         f"cache (heatup prepare {dataset} --size {size})")
    if settings.crop_size > side:
        raise ValueError(f"crop_size={settings.crop_size} is larger than the cached images ({side} px) "
                         f"in {cache_path}")
    if settings.batch_size > len(train_cache):
        raise ValueError(f"batch_size={settings.batch_size} is larger than the training set "
                         f"({len(train_cache)} images)")
    num_classes = train_cache.num_classes  # cache labels are 0..C-1 within each split
    with torch.random.fork_rng(devices=[]):  # the seed decides the initial weights; the caller's RNG is untouched
        torch.manual_seed(settings.train.seed)
        net = build_backbone(settings, bottleneck_bias=variant != "bn")
        head = NormalizedSoftmax(settings.embedding_dim, num_classes, alpha=alpha, variant=variant,
                                 bias=settings.bias, alpha_mode=alpha_mode)
    config = settings.train
    if row == "ls":
        config = dataclasses.replace(config, label_smoothing=settings.ls_smoothing)
    norm = dict(net.input_normalization)
    batches = CachedBatches(train_cache, settings.batch_size, train=True, device=dev,
                            crop=settings.crop_size, channels_last=config.channels_last, **norm)
    data = {"dataset": dataset, "train": cache_summary(train_cache), "test": cache_summary(test_cache),
            "image_size": side, "standin": standin}
    model = {"backbone": settings.backbone, "embedding_dim": settings.embedding_dim,
             "bottleneck_bias": variant != "bn", "head_bias": settings.bias, "num_classes": num_classes,
             "input_normalization": norm}
    extra = {"benchmark": {"dataset": dataset, "row": row, "variant": variant, "heat_up": heat_up,
                           "preset": preset, "settings": settings.to_dict(), "data": data, "model": model,
                           "temperature": temperature}}
    return _Prepared(net, head, schedule, batches, config, extra, test_cache)


def run_params_of(dataset: str, row: str, settings: Settings, cache_dir: str | Path, *, preset: str | None = None,
                  standin: str | None = None, temperature: str | None = None) -> dict[str, Any]:
    """The parameters (``params.json``) a run would have, without training it: what a committed record is looked up by."""
    p = _prepare(dataset, row, settings, Path(cache_dir), preset, standin, temperature)
    return run_params(p.net, p.head, p.schedule, p.batches, p.config, p.extra)


def run_experiment(dataset: str, row: str, settings: Settings, *, cache_dir: str | Path | None = None,
                   data_root: str | Path | None = None, runs_dir: str | Path = "runs",
                   preset: str | None = None, run_name: str | None = None, callbacks: Iterable = (),
                   standin: str | None = None, temperature: str | None = None,
                   progress: bool = True) -> TrainResult:
    """Train one table row on a benchmark end to end (or load its record) and return the :class:`TrainResult`.

    ``cache_dir`` is a cache made by ``heatup prepare``; otherwise ``data_root`` (the dataset's
    official folder) is decoded once into ``runs_dir/cache``. The run folder is
    ``runs_dir/<dataset>-<row>-<digest>`` unless ``run_name`` names it. ``standin`` describes data
    that is not the named dataset; it is stored in the record so that every table says so.
    ``temperature`` replaces the row's alpha schedule by a named setting (:func:`temperature_of`).
    Besides the record, the run folder gets ``arrays.npz`` (the test embeddings in float16 and the
    labels), what a page draws from a committed record without its checkpoint.
    """
    check_choice("dataset", dataset, DATASETS)
    check_choice("row", row, ROWS)
    temperature_of(row, settings, temperature)  # a bad name fails before any data is touched
    dev = check_device(settings.train.device)
    if run_name is not None:
        check_run_name(run_name)
    runs_dir = Path(runs_dir)
    if runs_dir.exists() and not runs_dir.is_dir():
        raise NotADirectoryError(f"runs_dir {str(runs_dir)!r} is a file, not a folder")
    cache_path = _resolve_cache(dataset, settings, cache_dir, data_root, runs_dir, progress)
    p = _prepare(dataset, row, settings, cache_path, preset, standin, temperature)
    test_data: list = []  # built at the first evaluation, then reused (a finished run loads without it)

    def embed(net_: nn.Module, head_: NormalizedSoftmax) -> tuple[Tensor, Tensor]:
        if not test_data:
            test_data.append(eval_batches(p.test_cache, net_, settings.crop_size, settings.eval_batch_size, dev))
        return embed_split(net_, head_, test_data[0], device=dev, amp=p.config.amp,
                           channels_last=p.config.channels_last)

    def eval_fn(net_: nn.Module, head_: NormalizedSoftmax) -> dict[str, float]:
        emb, y = embed(net_, head_)
        return {k: float(v) for k, v in metrics.evaluate(emb, y, dataset=dataset).items()}

    slug = temperature.replace("=", "").replace(" ", "-").replace("(", "").replace(")", "") if temperature else ""
    name = run_name or f"{dataset}-{row}{'-' + slug if slug else ''}-{params_digest(p.extra)[:10]}"
    run_dir = runs_dir / name
    result = fit(p.net, p.head, p.schedule, p.batches, p.config, run_dir=run_dir, eval_fn=eval_fn,
                 callbacks=tuple(callbacks), extra_params=p.extra, progress=progress, code_modules=CODE_MODULES)
    if is_rank0():
        atomic_write_json(run_dir / SOURCE_FILE, {"cache": str(Path(cache_path).resolve())})
        if not (run_dir / ARRAYS_FILE).is_file():
            with evaluating(p.net, p.head):
                emb, y = embed(p.net, p.head)
            write_arrays(run_dir, test_embeddings=emb.half(), test_labels=y.to(torch.int32))
    return result


# --- a recorded run, evaluated again --------------------------------------------------------------

def load_trained(run_dir: str | Path, device: str | torch.device = "cpu"
                 ) -> tuple[nn.Module, NormalizedSoftmax, dict[str, Any]]:
    """The trained network and head of a benchmark run (from its checkpoint, in eval mode) and the run's ``benchmark`` block."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {str(run_dir)!r} does not exist or is not a folder")
    block = benchmark_block(load_record(run_dir).params)
    if block is None:
        raise ValueError(f"{run_dir} is not a benchmark run (its params.json has no 'benchmark' block)")
    checkpoint = load_checkpoint(run_dir, map_location="cpu")
    if checkpoint is None:
        raise FileNotFoundError(f"run {run_dir} has no checkpoint.pt")
    if "net" not in checkpoint or "head" not in checkpoint:
        raise ValueError(f"{run_dir}/checkpoint.pt holds no 'net'/'head' weights; its keys are {sorted(checkpoint)}")
    settings, model = Settings.from_dict(block["settings"]), block["model"]
    net = build_backbone(dataclasses.replace(settings, pretrained=False, weights=None), model["bottleneck_bias"])
    alpha_mode = temperature_of(block["row"], settings, block.get("temperature"))[0]
    head = NormalizedSoftmax(model["embedding_dim"], model["num_classes"], variant=block["variant"],
                             bias=model["head_bias"], alpha_mode=alpha_mode)
    net.load_state_dict(checkpoint["net"])
    head.load_state_dict(checkpoint["head"])
    dev = check_device(device)
    return net.to(dev).eval(), head.to(dev).eval(), block


def check_same_data(block: Mapping[str, Any], cache: ImageCache) -> list[str]:
    """How ``cache`` (a test split) differs from the test data a run was trained for: dataset, classes, images, size."""
    trained = block.get("data", {})
    test = trained.get("test", {}) or {}
    now = cache_summary(cache)
    differences = []
    if cache.dataset != block["dataset"]:
        differences.append(f"dataset {cache.dataset!r} (the run: {block['dataset']!r})")
    for key in ("num_classes", "num_images", "images_sha256", "labels_sha256"):
        if test.get(key) is not None and now.get(key) != test[key]:
            differences.append(f"{key} {now.get(key)!r} (the run: {test[key]!r})")
    if trained.get("image_size") is not None and cache.size != trained["image_size"]:
        differences.append(f"image size {cache.size} (the run: {trained['image_size']})")
    return differences


def evaluate_run(run_dir: str | Path, *, cache_dir: str | Path | None = None, data_root: str | Path | None = None,
                 device: str | torch.device = "cpu", batch_size: int | None = None, other_data: bool = False,
                 progress: bool = False, return_embeddings: bool = False):
    """Evaluate a recorded benchmark run's checkpoint on its test split with the dataset's metrics (fractions).

    The data comes from ``cache_dir``, else ``data_root`` (prepared into ``<runs_dir>/cache``), else
    the cache the run was trained on (its ``source.json``). Data other than the run's (dataset,
    classes, images, size) is refused unless ``other_data``. With ``return_embeddings`` the result
    is ``(metrics, embeddings (N, D), labels (N,), test cache)``.
    """
    if batch_size is not None:
        check_int("batch_size", batch_size, min_value=1)
    check_bool("other_data", other_data)
    _check_folder("run folder", run_dir, "give the folder of a benchmark run (with params.json)")
    net, head, block = load_trained(run_dir, device)
    settings = Settings.from_dict(block["settings"])
    if cache_dir is None and data_root is not None:
        cache_dir = _resolve_cache(block["dataset"], settings, None, data_root, Path(run_dir).parent, progress)
    test_cache = ImageCache.open(cache_dir if cache_dir is not None else run_cache(run_dir), "test")
    differences = check_same_data(block, test_cache)
    if differences and not other_data:
        raise ValueError(f"{test_cache.path} is not the data run {run_dir} was trained for: "
                         f"{'; '.join(differences)}; pass other_data=True (--other-data) to evaluate anyway")
    if differences:
        log.warning("evaluating run %s on other data (%s): %s", run_dir, test_cache.path,
                    "; ".join(differences))
    dev = check_device(device)
    emb, y = embed_split(net, head, test_cache, device=dev, crop_size=settings.crop_size,
                         batch_size=batch_size or settings.eval_batch_size,
                         amp=settings.train.amp, channels_last=settings.train.channels_last)
    scores = {k: float(v) for k, v in metrics.evaluate(emb, y, dataset=block["dataset"]).items()}
    return (scores, emb, y, test_cache) if return_embeddings else scores
