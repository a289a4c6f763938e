"""The MNIST recipe of chapter 2, its panel and ``bench/mnist_speed.py``: LeNet with a 2-d embedding, the "ln" head, Adam.

:class:`MnistSettings` is the recipe as plain data (the chapter's ``mnist_*`` parameters, from
``params/<preset>.yaml``); :func:`build_lenet` makes the seeded network and head;
:func:`train_setting` trains one setting (a schedule of alpha) through :func:`heatup_lib.train.fit`
into a run folder named by its parameters, so that a rebuilt page loads it instead of training.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checks import check_float, check_int
from .data.batches import TensorBatches
from .fingerprint import CORE_MODULES
from .geometry import angular_summary
from .heads import NormalizedSoftmax
from .metrics import nmi, recall_at_k
from .models import LeNet
from .passes import evaluating
from .records import params_digest
from .runs import run_params
from .schedules import Constant, Schedule, StepHeatUp
from .train import TrainConfig, TrainResult, fit

__all__ = ["MnistSettings", "CODE_MODULES", "mnist_inputs", "build_lenet", "features_of", "schedules_of",
           "heatup_name", "train_setting", "embedding_numbers"]

CODE_MODULES = CORE_MODULES + ("heatup_lib.mnist_recipe",)


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


def build_lenet(num_classes: int, alpha: float, seed: int, device: str | torch.device = "cpu"
                ) -> tuple[nn.Module, NormalizedSoftmax]:
    """LeNet with a 2-d embedding and an "ln" head, initialised from ``seed`` without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = LeNet(embedding_dim=2)
        head = NormalizedSoftmax(2, num_classes, alpha=alpha, variant="ln")
    return net.to(device), head.to(device)


@torch.no_grad()
def features_of(net: nn.Module, X: Tensor, device: str | torch.device = "cpu", batch: int = 1000) -> Tensor:
    """Un-normalised 2-d features (N, 2), on the CPU, of uint8 digits ``X`` (N, 28, 28), in eval mode."""
    with evaluating(net):
        return torch.cat([net(mnist_inputs(x.to(device))) for x in X.split(batch)]).cpu()


def heatup_name(settings: MnistSettings) -> str:
    """The name of the heat-up setting, e.g. ``"alpha=16 heat-up"``."""
    return f"alpha={settings.heatup_alpha:g} heat-up"


def schedules_of(settings: MnistSettings) -> dict[str, Schedule]:
    """The chapter's settings by name: a constant alpha for each of ``alphas``, then the paper's step heat-up."""
    out: dict[str, Schedule] = {f"alpha={a:g}": Constant(a, settings.num_epochs) for a in settings.alphas}
    out[heatup_name(settings)] = StepHeatUp(settings.heatup_alpha, settings.num_epochs, settings.heatup_epoch,
                                            settings.alpha_factor, settings.lr_factor)
    return out


def train_setting(name: str, schedule: Schedule, X: Tensor, y: Tensor, num_classes: int, *,
                  settings: MnistSettings, seed: int, runs_dir: str | Path | None, group: str,
                  device: str | torch.device = "cpu", callbacks: Sequence = (),
                  extra: Mapping[str, Any] | None = None, progress: bool = True
                  ) -> tuple[nn.Module, NormalizedSoftmax, TrainResult]:
    """Train one setting on digits ``X`` (N, 28, 28) uint8, labels ``y``; its record folder is named by its parameters.

    Every setting starts from the same seeded weights and sees the same batches. With
    ``runs_dir=None`` nothing is written (the panel's runs).
    """
    net, head = build_lenet(num_classes, schedule.alpha(0), seed, device)
    data = TensorBatches(X.to(device), y.to(device), settings.batch_size, transform=mnist_inputs)
    config = TrainConfig(lr=settings.lr, seed=seed, device=str(device))
    extra = {"chapter": "02_mnist", "group": group, "setting": name, **dict(extra or {})}
    run_dir = None
    if runs_dir is not None:
        digest = params_digest(run_params(net, head, schedule, data, config, extra))
        run_dir = Path(runs_dir) / "02_mnist" / f"{group}-{name.replace('=', '').replace(' ', '-')}-{digest}"
    result = fit(net, head, schedule, data, config, run_dir=run_dir, callbacks=callbacks, extra_params=extra,
                 progress=progress, code_modules=CODE_MODULES)
    return net, head, result


def embedding_numbers(features: Tensor, labels: Tensor, weights: Tensor | None = None,
                      seed: int = 0) -> dict[str, float]:
    """What the chapter measures on 2-d features (N, 2): accuracy by nearest class weight, Recall@1, NMI, compactness, spread.

    ``accuracy`` (only with ``weights`` (C, 2)): the share of samples whose nearest normalised class
    weight in angle is their own; ``recall@1`` and ``nmi`` of the normalised features
    (:mod:`heatup_lib.metrics`); compactness and spread in degrees (:mod:`heatup_lib.geometry`).
    """
    emb = F.normalize(features, dim=1)
    out: dict[str, float] = {}
    if weights is not None:
        predicted = (emb @ F.normalize(weights, dim=1).T).argmax(dim=1)
        out["accuracy"] = float((predicted == labels).double().mean())
    out["recall@1"] = recall_at_k(emb, labels, ks=(1,))[1]
    out["nmi"] = nmi(emb, labels, seed=seed)
    out.update(angular_summary(emb, labels))
    return out
