"""The MNIST recipe of chapter 2, its panel and ``bench/mnist_speed.py``: LeNet with a 2-d embedding, the "ln" head, Adam.

:class:`MnistSettings` is the recipe as plain data (the chapter's ``mnist_*`` parameters, from
``params/<preset>.yaml``); :func:`build_lenet` makes the seeded network and head. A run of the
chapter is a :class:`MnistJob` (setting, group of digits, seed): :func:`run_job` trains it
through :func:`heatup_lib.train.fit` into a run folder named by its parameters and writes the
arrays the page draws; :func:`heatup_lib.mnist_runs.load_or_train` loads every job's committed or earlier record and
trains only the missing ones, in parallel processes (:mod:`heatup_lib.mnist_runs`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checks import check_choice, check_float, check_int
from .data.batches import TensorBatches
from .data.mnist import load_mnist
from .fingerprint import CORE_MODULES
from .geometry import angular_summary
from .heads import NormalizedSoftmax
from .metrics import map_at_r, nmi, recall_at_k
from .models import LeNet
from .passes import evaluating
from .recorded import write_arrays, write_weights
from .records import params_digest
from .runs import run_params
from .schedules import Schedule, named_schedule
from .train import TrainConfig, fit

__all__ = ["MnistSettings", "CODE_MODULES", "GROUPS", "MnistJob", "mnist_inputs", "build_lenet", "features_of",
           "schedules_of", "heatup_name", "setting_names", "setting_of", "embedding_numbers", "job_data", "job_params", "run_job",
           "even_directions", "CLASS_INITS"]

# The code that decides a chapter-2 run's numbers (its record's code fingerprint).
CODE_MODULES = CORE_MODULES + ("heatup_lib.models:LeNet", "heatup_lib.geometry", "heatup_lib.mnist_recipe")


@dataclass(frozen=True)
class MnistSettings:
    """Chapter 2's recipe: data sizes, schedule and optimiser (SPEC section 4: Adam 1e-3, batch 128)."""

    train_size: int = 60000
    test_size: int = 10000
    num_epochs: int = 100
    heatup_epoch: int = 80
    batch_size: int = 128
    lr: float = 1e-3
    alphas: tuple[float, ...] = (0.25, 4.0, 16.0, 64.0)
    heatup_alpha: float = 16.0
    alpha_factor: float = 0.25
    lr_factor: float = 0.1
    # Departures from the paper's MNIST code, chosen by how well alpha = 16 trains on a 2-d
    # embedding (records/02_mnist/recipe_study.json): class weights spread evenly over the circle
    # at the start, and alpha warmed up from 1 over the first images.
    class_init: str = "even"        # "even" or "random" (the head's default)
    warmup_images: int = 15000      # 0: no warm-up
    snapshot_size: int = 1000       # heat-up runs store these test digits' directions every epoch

    def __post_init__(self) -> None:
        check_int("mnist_train_size", self.train_size, 100, 60000)
        check_int("mnist_test_size", self.test_size, 100, 10000)
        check_int("mnist_num_epochs", self.num_epochs, min_value=2)
        check_int("mnist_heatup_epoch", self.heatup_epoch, 1, self.num_epochs - 1)
        # the zero-shot half of the training images must hold a batch
        check_int("mnist_batch_size", self.batch_size, 1, self.train_size // 4)
        check_float("mnist_lr", self.lr, 0.0, min_open=True)
        object.__setattr__(self, "alphas", tuple(check_float("mnist_alphas", a, 0.0, min_open=True)
                                                 for a in _sequence("mnist_alphas", self.alphas)))
        check_float("mnist_heatup_alpha", self.heatup_alpha, 0.0, min_open=True)
        check_float("mnist_alpha_factor", self.alpha_factor, 0.0, 1.0, min_open=True)
        check_float("mnist_lr_factor", self.lr_factor, 0.0, 1.0, min_open=True)
        check_choice("mnist_class_init", self.class_init, CLASS_INITS)
        check_int("mnist_warmup_images", self.warmup_images, min_value=0)
        check_int("mnist_snapshot_size", self.snapshot_size, 0, self.test_size)

    @classmethod
    def from_parameters(cls, params: Mapping[str, Any]) -> MnistSettings:
        """The settings named by a chapter's ``mnist_<field>`` parameters (other keys are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k[len("mnist_"):]: v for k, v in params.items()
                      if k.startswith("mnist_") and k[len("mnist_"):] in names})

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-serialisable dict."""
        return dataclasses.asdict(self)


def _sequence(name: str, value: Any) -> Sequence[Any]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        raise ValueError(f"{name} must be a non-empty list of numbers > 0, got {value!r}")
    return value


def mnist_inputs(images: Tensor) -> Tensor:
    """LeNet's input, float (N, 1, 28, 28) in [0, 1], from uint8 digits (N, 28, 28) (float input passes through)."""
    if images.dtype == torch.uint8:
        images = images.float().div_(255.0)
    if images.dim() == 3:
        images = images.unsqueeze(1)
    if images.dim() != 4 or tuple(images.shape[1:]) != (1, 28, 28):
        raise ValueError(f"images must have shape (N, 28, 28) or (N, 1, 28, 28), got {tuple(images.shape)}")
    return images


CLASS_INITS: tuple[str, ...] = ("even", "random")


def even_directions(num_classes: int, generator: torch.Generator) -> Tensor:
    """Unit vectors (C, 2) at angles ``offset + 2 pi k / C``, the offset drawn from ``generator``."""
    offset = float(torch.rand((), generator=generator)) * 2 * math.pi
    angles = offset + 2 * math.pi * torch.arange(num_classes, dtype=torch.float64) / num_classes
    return torch.stack([angles.cos(), angles.sin()], dim=1).float()


def build_lenet(num_classes: int, alpha: float, seed: int, device: str | torch.device = "cpu",
                class_init: str = "even", alpha_mode: str = "scheduled") -> tuple[nn.Module, NormalizedSoftmax]:
    """LeNet with a 2-d embedding and an "ln" head, initialised from ``seed`` without touching the global RNG.

    ``class_init="even"`` spreads the class weights evenly over the circle (a random rotation);
    ``"random"`` keeps the head's default initialisation.
    """
    check_choice("class_init", class_init, CLASS_INITS)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = LeNet(embedding_dim=2)
        head = NormalizedSoftmax(2, num_classes, alpha=alpha, variant="ln", alpha_mode=alpha_mode)
    if class_init == "even":
        with torch.no_grad():
            head.weight.copy_(even_directions(num_classes, torch.Generator().manual_seed(seed)))
    return net.to(device), head.to(device)


@torch.no_grad()
def features_of(net: nn.Module, X: Tensor, device: str | torch.device = "cpu", batch: int = 1000) -> Tensor:
    """Un-normalised 2-d features (N, 2), on the CPU, of uint8 digits ``X`` (N, 28, 28), in eval mode."""
    with evaluating(net):
        return torch.cat([net(mnist_inputs(x.to(device))) for x in X.split(batch)]).cpu()


def heatup_name(settings: MnistSettings) -> str:
    """The name of the heat-up setting, e.g. ``"alpha=16 heat-up"``."""
    return f"alpha={settings.heatup_alpha:g} heat-up"


def setting_names(settings: MnistSettings) -> list[str]:
    """Chapter 2's five settings: a constant alpha for each of ``alphas``, then the paper's step heat-up."""
    return [f"alpha={a:g}" for a in settings.alphas] + [heatup_name(settings)]


def setting_of(name: str, settings: MnistSettings, num_images: int | None = None) -> tuple[str, float, Schedule]:
    """``(alpha_mode, initial alpha, schedule)`` of a named setting (:func:`heatup_lib.schedules.named_schedule`).

    Scheduled alphas above 1 are warmed up over the first ``warmup_images`` of epochs of
    ``num_images`` images (default ``train_size``).
    """
    s = settings
    warmup = min(s.warmup_images / (num_images or s.train_size), s.num_epochs) if s.warmup_images else 0.0
    return named_schedule(name, s.num_epochs, s.heatup_epoch, s.alpha_factor, s.lr_factor, warmup)


def schedules_of(settings: MnistSettings, num_images: int | None = None) -> dict[str, Schedule]:
    """The schedules of chapter 2's five settings, by name (see :func:`setting_of`)."""
    return {name: setting_of(name, settings, num_images)[2] for name in setting_names(settings)}


def embedding_numbers(features: Tensor, labels: Tensor, weights: Tensor | None = None,
                      seed: int = 0) -> dict[str, float]:
    """What the chapter measures on 2-d features (N, 2): accuracy by nearest class weight, Recall@1, NMI, compactness, spread.

    ``test_accuracy`` (only with ``weights`` (C, 2)): the share of samples whose nearest normalised class
    weight in angle is their own; ``recall@1``, ``map@r`` and ``nmi`` of the normalised features
    (:mod:`heatup_lib.metrics`); compactness and spread in degrees (:mod:`heatup_lib.geometry`).
    """
    emb = F.normalize(features, dim=1)
    out: dict[str, float] = {}
    if weights is not None:
        predicted = (emb @ F.normalize(weights, dim=1).T).argmax(dim=1)
        out["test_accuracy"] = float((predicted == labels).double().mean())
    out["recall@1"] = recall_at_k(emb, labels, ks=(1,))[1]
    out["map@r"] = map_at_r(emb, labels)
    out["nmi"] = nmi(emb, labels, seed=seed)
    out.update(angular_summary(emb, labels))
    return out


# --- the chapter's runs as jobs (one per setting, group and seed), recorded for the page ----------

GROUPS: dict[str, int] = {"all-digits": 10, "digits-0-4": 5}  # group -> number of training classes


@dataclass(frozen=True)
class MnistJob:
    """One run of chapter 2: a setting (a schedule of alpha) on a group of digits with a seed; plain data, picklable."""

    settings: MnistSettings
    setting: str                    # a setting name (setting_of), e.g. "alpha=16 heat-up"
    group: str                      # "all-digits", or "digits-0-4" (zero-shot: tested on 5-9)
    seed: int                       # initial weights and batch order
    data_seed: int = 0              # which training and test digits (the same for every seed)
    preset: str | None = None
    mnist_root: str | None = None
    device: str = "cpu"
    keep_weights: bool = False      # store the trained weights (the panel starts from them)

    @property
    def snapshot_size(self) -> int:
        """Test digits whose directions are stored after every epoch: heat-up settings only."""
        return self.settings.snapshot_size if "heat-up" in self.setting else 0

    @property
    def name(self) -> str:
        """A folder-friendly name, e.g. ``all-digits-alpha16-heat-up-seed0``."""
        return f"{self.group}-{self.setting.replace('=', '').replace(' ', '-')}-seed{self.seed}"


@lru_cache(maxsize=4)
def _mnist(root: str | None, split: str) -> tuple[Tensor, Tensor]:
    return load_mnist(root, split)


def job_data(job: MnistJob) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The job's training digits and test digits, uint8 (N, 28, 28) and int64 labels, drawn with ``data_seed``.

    Zero-shot (``digits-0-4``): the training digits 0-4 of the same draw, tested on the test digits 5-9.
    """
    check_choice("group", job.group, tuple(GROUPS))
    X_all, y_all = _mnist(job.mnist_root, "train")
    X_test_all, y_test_all = _mnist(job.mnist_root, "test")
    g = torch.Generator().manual_seed(job.data_seed)
    train_idx = torch.randperm(len(y_all), generator=g)[:job.settings.train_size]
    test_idx = torch.randperm(len(y_test_all), generator=g)[:job.settings.test_size]
    X, y, X_test, y_test = X_all[train_idx], y_all[train_idx], X_test_all[test_idx], y_test_all[test_idx]
    if job.group == "digits-0-4":
        X, y, X_test, y_test = X[y < 5], y[y < 5], X_test[y_test >= 5], y_test[y_test >= 5]
    return X, y, X_test, y_test


def _build(job: MnistJob):
    """Everything ``fit`` takes for ``job``: net, head, schedule, batches, config, extra parameters."""
    X, y, _, _ = job_data(job)
    alpha_mode, alpha, schedule = setting_of(job.setting, job.settings, len(y))
    net, head = build_lenet(GROUPS[job.group], alpha, job.seed, job.device, job.settings.class_init, alpha_mode)
    data = TensorBatches(X.to(job.device), y.to(job.device), job.settings.batch_size, transform=mnist_inputs)
    config = TrainConfig(lr=job.settings.lr, seed=job.seed, device=job.device, eval_every=1)
    # what else decides the record: chapters 2 and 5 share runs whose parameters are equal
    extra = {"recipe": "mnist", "group": job.group, "setting": job.setting, "preset": job.preset,
             "data_seed": job.data_seed, "snapshot_size": job.snapshot_size, "test_size": job.settings.test_size}
    return net, head, schedule, data, config, extra


def job_params(job: MnistJob) -> dict[str, Any]:
    """The run parameters of ``job`` (what its record's ``params.json`` holds), without training."""
    net, head, schedule, data, config, extra = _build(job)
    return run_params(net, head, schedule, data, config, extra)


def run_job(job: MnistJob, runs_dir: str | Path, progress: bool = False) -> Path:
    """Train ``job`` (or load / resume its run) under ``runs_dir/mnist/``, then write the arrays the page draws; return the run folder.

    Arrays: ``test_features`` (N, 2) the normalised directions of the test digits, ``test_labels``,
    ``class_weights`` (C, 2) normalised. Per epoch the history holds the numbers of
    :func:`embedding_numbers` on the test digits and, with ``snapshot_size``, the directions of
    the first test digits and the class weights.
    """
    net, head, schedule, data, config, extra = _build(job)
    _, _, X_test, y_test = job_data(job)
    params = run_params(net, head, schedule, data, config, extra)
    run_dir = Path(runs_dir) / "mnist" / f"{job.name}-{params_digest(params)}"
    classified = job.group == "all-digits"  # zero-shot test digits have no class weight: no accuracy

    def eval_fn(net_: nn.Module, head_: NormalizedSoftmax) -> dict[str, float]:
        w = head_.weight.detach().cpu() if classified else None
        return embedding_numbers(features_of(net_, X_test, job.device), y_test, w, job.data_seed)

    def snapshot(epoch: int, record: dict, net_: nn.Module, head_: NormalizedSoftmax) -> None:
        feats = F.normalize(features_of(net_, X_test[:job.snapshot_size], job.device), dim=1)
        record["snapshot"] = feats.mul(1e4).round().div(1e4).tolist()
        record["snapshot_weights"] = F.normalize(head_.weight.detach().cpu(), dim=1).tolist()

    callbacks = [snapshot] if job.snapshot_size else []
    fit(net, head, schedule, data, config, run_dir=run_dir, eval_fn=eval_fn, callbacks=callbacks,
        extra_params=extra, progress=progress, code_modules=CODE_MODULES)
    write_arrays(run_dir, test_features=F.normalize(features_of(net, X_test, job.device), dim=1),
                 test_labels=y_test.to(torch.int8), class_weights=F.normalize(head.weight.detach().cpu(), dim=1))
    if job.keep_weights:  # (not a parameter: an output of the same run)
        write_weights(run_dir, {"net": net.state_dict(), "head": head.state_dict()})
    return run_dir
