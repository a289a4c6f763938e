"""Schedules of the inverse temperature alpha and of a learning-rate factor over training: constant, the paper's step heat-up, smooth heat-ups.

A schedule is plain data (a frozen dataclass): ``repr`` prints it with its constructor's
arguments, ``to_dict()`` / ``schedule_from_dict()`` round-trip it through JSON for run records.
Epochs are 0-based and may be fractional (``epoch = e + i / len(batches)`` inside epoch ``e``);
a schedule accepts any epoch in ``[0, num_epochs]`` (``num_epochs`` itself is the end of training,
handy for plots) and raises ValueError outside it.

"Heating up" lowers alpha (raises the temperature ``T = 1/alpha``) near the end of training, so
that every sample, now mostly classified correctly, gets gradient again and each class is
compressed (SPEC section 1). The paper's schedule is one step: alpha x 0.25 and learning rate x 0.1
for the last quarter of training (epoch 60 of 80 on the Inception benchmarks, 80 of 100 on MNIST).

The dataclass fields store alpha and the learning-rate factor as ``base_alpha`` and
``final_lr_factor``, because ``alpha`` and ``lr_factor`` are the schedule's methods; the
constructors, ``repr`` and ``to_dict`` use the public names ``alpha`` and ``lr_factor``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .checks import check_float, check_int, is_integer

__all__ = ["Schedule", "Constant", "StepHeatUp", "SmoothHeatUp", "AlphaWarmUp", "SHAPES", "schedule_from_dict", "named_schedule",
           "adacos_fixed_alpha", "adacos_dynamic_alpha"]

SHAPES: tuple[str, ...] = ("linear", "cosine", "exponential")

# public constructor name -> dataclass field name, where they differ
_RENAMED = {"alpha": "base_alpha", "lr_factor": "final_lr_factor"}
_FIELD_TO_ARG = {v: k for k, v in _RENAMED.items()}


def _number(name: str, value: Any) -> float:
    return check_float(name, value)


def _positive(name: str, value: Any) -> float:
    return check_float(name, value, 0.0, min_open=True)


def _factor(name: str, value: Any) -> float:
    return check_float(name, value, 0.0, 1.0, min_open=True)


def _epochs(value: Any) -> int:
    return check_int("num_epochs", value, min_value=1)


class Schedule:
    """Base of all schedules: alpha and a learning-rate factor as functions of a (fractional) epoch."""

    num_epochs: int

    def alpha(self, epoch: float) -> float:
        """The inverse temperature at ``epoch``."""
        raise NotImplementedError

    def lr_factor(self, epoch: float) -> float:
        """The factor multiplying the optimiser's base learning rate at ``epoch``."""
        raise NotImplementedError

    def to_dict(self) -> dict:
        """A JSON-serialisable dict (``kind`` plus the constructor's arguments) that :func:`schedule_from_dict` turns back into this schedule."""
        d: dict[str, Any] = {"kind": type(self).__name__}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            d[_FIELD_TO_ARG.get(f.name, f.name)] = getattr(self, f.name)
        return d

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items() if k != "kind")
        return f"{type(self).__name__}({args})"

    def _check_epoch(self, epoch: float) -> float:
        e = _number("epoch", epoch)
        if not 0 <= e <= self.num_epochs:
            raise ValueError(f"epoch must be in [0, num_epochs={self.num_epochs}], got {epoch!r}")
        return e


@dataclass(frozen=True, init=False, repr=False)
class Constant(Schedule):
    """A fixed alpha and learning rate for the whole run (rows SM, LN, BN of the paper's tables)."""

    base_alpha: float
    num_epochs: int

    def __init__(self, alpha: float, num_epochs: int) -> None:
        object.__setattr__(self, "base_alpha", _positive("alpha", alpha))
        object.__setattr__(self, "num_epochs", _epochs(num_epochs))

    def alpha(self, epoch: float) -> float:
        """The constant alpha."""
        self._check_epoch(epoch)
        return self.base_alpha

    def lr_factor(self, epoch: float) -> float:
        """Always 1."""
        self._check_epoch(epoch)
        return 1.0


@dataclass(frozen=True, init=False, repr=False)
class StepHeatUp(Schedule):
    """The paper's heat-up: ``alpha`` and the base learning rate before ``heatup_epoch``, ``alpha * alpha_factor`` and ``lr * lr_factor`` from it on."""

    base_alpha: float
    num_epochs: int
    heatup_epoch: int
    alpha_factor: float
    final_lr_factor: float

    def __init__(self, alpha: float = 16.0, num_epochs: int = 80, heatup_epoch: int = 60,
                 alpha_factor: float = 0.25, lr_factor: float = 0.1) -> None:
        num_epochs = _epochs(num_epochs)
        if not is_integer(heatup_epoch) or not 0 < heatup_epoch < num_epochs:
            raise ValueError(f"heatup_epoch must be an integer in [1, num_epochs - 1 = {num_epochs - 1}] "
                             f"(an epoch boundary inside the run), got {heatup_epoch!r}")
        object.__setattr__(self, "base_alpha", _positive("alpha", alpha))
        object.__setattr__(self, "num_epochs", num_epochs)
        object.__setattr__(self, "heatup_epoch", int(heatup_epoch))
        object.__setattr__(self, "alpha_factor", _factor("alpha_factor", alpha_factor))
        object.__setattr__(self, "final_lr_factor", _factor("lr_factor", lr_factor))

    def heated(self, epoch: float) -> bool:
        """Whether ``epoch`` lies in the heated-up part of the run (``epoch >= heatup_epoch``)."""
        return self._check_epoch(epoch) >= self.heatup_epoch

    def alpha(self, epoch: float) -> float:
        """``alpha`` before ``heatup_epoch``, ``alpha * alpha_factor`` from it on."""
        return self.base_alpha * (self.alpha_factor if self.heated(epoch) else 1.0)

    def lr_factor(self, epoch: float) -> float:
        """1 before ``heatup_epoch``, ``lr_factor`` from it on."""
        return self.final_lr_factor if self.heated(epoch) else 1.0


@dataclass(frozen=True, init=False, repr=False)
class SmoothHeatUp(Schedule):
    """Heat-up spread over ``[start_epoch, end_epoch]``: alpha and the lr factor move from 1x to their factors along a linear, cosine or exponential (geometric) path."""

    base_alpha: float
    num_epochs: int
    start_epoch: float
    end_epoch: float
    alpha_factor: float
    final_lr_factor: float
    shape: str

    def __init__(self, alpha: float, num_epochs: int, start_epoch: float, end_epoch: float,
                 alpha_factor: float = 0.25, lr_factor: float = 0.1, shape: str = "cosine") -> None:
        num_epochs = _epochs(num_epochs)
        start, end = _number("start_epoch", start_epoch), _number("end_epoch", end_epoch)
        if not 0 <= start < end <= num_epochs:
            raise ValueError(f"need 0 <= start_epoch < end_epoch <= num_epochs={num_epochs}, "
                             f"got start_epoch={start_epoch!r}, end_epoch={end_epoch!r}")
        if shape not in SHAPES:
            raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")
        object.__setattr__(self, "base_alpha", _positive("alpha", alpha))
        object.__setattr__(self, "num_epochs", num_epochs)
        object.__setattr__(self, "start_epoch", start)
        object.__setattr__(self, "end_epoch", end)
        object.__setattr__(self, "alpha_factor", _factor("alpha_factor", alpha_factor))
        object.__setattr__(self, "final_lr_factor", _factor("lr_factor", lr_factor))
        object.__setattr__(self, "shape", shape)

    def progress(self, epoch: float) -> float:
        """How far the heat-up has gone at ``epoch``: 0 before ``start_epoch``, 1 after ``end_epoch``."""
        e = self._check_epoch(epoch)
        return min(1.0, max(0.0, (e - self.start_epoch) / (self.end_epoch - self.start_epoch)))

    def _interpolate(self, factor: float, epoch: float) -> float:
        t = self.progress(epoch)
        if self.shape == "exponential":
            return factor ** t
        if self.shape == "cosine":
            t = 0.5 * (1.0 - math.cos(math.pi * t))
        return 1.0 + (factor - 1.0) * t

    def alpha(self, epoch: float) -> float:
        """``alpha`` times a factor moving from 1 to ``alpha_factor`` over the window."""
        return self.base_alpha * self._interpolate(self.alpha_factor, epoch)

    def lr_factor(self, epoch: float) -> float:
        """A factor moving from 1 to ``lr_factor`` over the window, along the same path as alpha."""
        return self._interpolate(self.final_lr_factor, epoch)


@dataclass(frozen=True, init=False, repr=False)
class AlphaWarmUp(Schedule):
    """Another schedule whose alpha starts at ``start_alpha`` and rises geometrically to it over the first ``epochs``.

    ``alpha(e) = low * (a(e) / low) ** (e / epochs)`` for ``e < epochs``, with ``a`` the inner
    schedule's alpha and ``low = min(start_alpha, a(e))`` (an alpha at or below ``start_alpha``
    is not warmed up); the learning-rate factor is the inner schedule's.
    """

    schedule: Schedule
    epochs: float
    start_alpha: float

    def __init__(self, schedule: Schedule, epochs: float, start_alpha: float = 1.0) -> None:
        if not isinstance(schedule, Schedule):
            raise ValueError(f"schedule must be a Schedule, got {schedule!r}")
        object.__setattr__(self, "schedule", schedule)
        object.__setattr__(self, "epochs", check_float("epochs", epochs, 0.0, schedule.num_epochs,
                                                       min_open=True))
        object.__setattr__(self, "start_alpha", _positive("start_alpha", start_alpha))

    @property
    def num_epochs(self) -> int:  # type: ignore[override]
        """The inner schedule's number of epochs."""
        return self.schedule.num_epochs

    def alpha(self, epoch: float) -> float:
        """The inner alpha, warmed up from ``start_alpha`` during the first ``epochs``."""
        a = self.schedule.alpha(epoch)
        low = min(self.start_alpha, a)
        if epoch >= self.epochs or low == a:
            return a
        return low * (a / low) ** (epoch / self.epochs)

    def lr_factor(self, epoch: float) -> float:
        """The inner schedule's learning-rate factor."""
        return self.schedule.lr_factor(epoch)

    def to_dict(self) -> dict:
        """``kind``, the inner schedule's dict, ``epochs`` and ``start_alpha``."""
        return {"kind": "AlphaWarmUp", "schedule": self.schedule.to_dict(), "epochs": self.epochs,
                "start_alpha": self.start_alpha}


_SETTING = re.compile(r"^(?:alpha=(?P<alpha>[0-9.e+-]+)(?P<heat> heat-up| smooth heat-up \((?P<shape>\w+)\))?"
                      r"|learned alpha \(from (?P<init>[0-9.e+-]+)\)|AdaCos (?P<adacos>fixed|dynamic))$")


def named_schedule(name: str, num_epochs: int, heatup_epoch: int, alpha_factor: float = 0.25,
                   lr_factor: float = 0.1, warmup_epochs: float = 0.0) -> tuple[str, float, Schedule]:
    """Where a named setting's alpha comes from: ``(alpha_mode of the head, initial alpha, schedule)``.

    The names the chapters use: ``"alpha=A"`` (constant), ``"alpha=A heat-up"`` (the paper's step
    at ``heatup_epoch``), ``"alpha=A smooth heat-up (shape)"`` (linear, cosine or exponential,
    from ``2 heatup_epoch - num_epochs`` to the last epoch, half done where the step is),
    ``"learned alpha (from A)"``, ``"AdaCos fixed"`` and ``"AdaCos dynamic"``. Scheduled alphas
    above 1 are warmed up from 1 over ``warmup_epochs`` (:class:`AlphaWarmUp`); learned and
    AdaCos alphas are not, and their learning rate stays constant.
    """
    m = _SETTING.match(name) if isinstance(name, str) else None
    if m is None:
        raise ValueError(f"Unknown setting {name!r}: expected 'alpha=A', 'alpha=A heat-up', 'alpha=A smooth "
                         "heat-up (linear|cosine|exponential)', 'learned alpha (from A)', 'AdaCos fixed' or "
                         "'AdaCos dynamic'")
    n = _epochs(num_epochs)
    if m["adacos"]:
        return f"adacos-{m['adacos']}", 1.0, Constant(1.0, n)
    if m["init"]:
        alpha = _positive("alpha", float(m["init"]))
        return "learned", alpha, Constant(alpha, n)
    alpha = _positive("alpha", float(m["alpha"]))
    if not m["heat"]:
        schedule: Schedule = Constant(alpha, n)
    elif m["shape"] is None:
        schedule = StepHeatUp(alpha, n, heatup_epoch, alpha_factor, lr_factor)
    else:
        start = max(0, 2 * heatup_epoch - n)
        schedule = SmoothHeatUp(alpha, n, start, n - 1 if n - 1 > start else n, alpha_factor, lr_factor,
                                m["shape"])
    if warmup_epochs:
        schedule = AlphaWarmUp(schedule, warmup_epochs)
    return "scheduled", alpha, schedule


_KINDS: dict[str, type[Schedule]] = {cls.__name__: cls for cls in (Constant, StepHeatUp, SmoothHeatUp,
                                                                      AlphaWarmUp)}


def schedule_from_dict(d: dict) -> Schedule:
    """The schedule that ``Schedule.to_dict`` described."""
    if not isinstance(d, dict) or "kind" not in d:
        raise ValueError(f"a schedule dict needs a 'kind' key, one of {sorted(_KINDS)}; got {d!r}")
    kind = d["kind"]
    if kind not in _KINDS:
        raise ValueError(f"schedule kind must be one of {sorted(_KINDS)}, got {kind!r}")
    cls = _KINDS[kind]
    if cls is AlphaWarmUp:
        return AlphaWarmUp(schedule_from_dict(d.get("schedule")), d.get("epochs"), d.get("start_alpha", 1.0))
    accepted = [_FIELD_TO_ARG.get(f.name, f.name) for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    args = {k: v for k, v in d.items() if k != "kind"}
    unknown = sorted(set(args) - set(accepted))
    if unknown:
        raise ValueError(f"unknown argument(s) {unknown} for {kind}; accepted: {accepted}")
    return cls(**args)


# --- alpha computed from the data (AdaCos, Zhang et al. 2019) ------------------------------------

def adacos_fixed_alpha(num_classes: int) -> float:
    """AdaCos's fixed scale for ``num_classes`` classes: ``sqrt(2) * log(C - 1)`` (C >= 2; 0 at C = 2)."""
    c = check_int("num_classes", num_classes, min_value=2)
    return math.sqrt(2.0) * math.log(c - 1)


def adacos_dynamic_alpha(cosines: Tensor, labels: Tensor, alpha: float | Tensor) -> Tensor:
    """AdaCos's dynamic scale from one batch, given the current ``alpha`` (no gradient).

    ``B = mean_i sum_{j != y_i} exp(alpha * cos_ij)`` and ``theta_med`` the median (torch's: the
    lower of the two middle values) of the angles ``arccos(cos_{i, y_i})``; the new scale is
    ``log(B) / cos(min(pi/4, theta_med))``. cosines: (N, C); labels: (N,) in [0, C).
    """
    with torch.no_grad():
        z = cosines.detach().double().clamp(-1.0, 1.0)
        own = torch.zeros_like(z, dtype=torch.bool).scatter_(1, labels.view(-1, 1), True)
        b_avg = torch.where(own, torch.zeros_like(z), torch.exp(float(alpha) * z)).sum() / z.shape[0]
        theta_med = torch.acos(z[own]).median()
        return (torch.log(b_avg) / torch.cos(theta_med.clamp(max=math.pi / 4))).float()
