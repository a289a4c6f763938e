"""Tests of heatup_lib.schedules: values at hand-picked epochs, round trips, and clear errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from heatup_lib.schedules import SHAPES, Constant, SmoothHeatUp, StepHeatUp, schedule_from_dict


def test_constant() -> None:
    s = Constant(alpha=4.0, num_epochs=10)
    for e in (0, 3.5, 9.99, 10):
        assert s.alpha(e) == 4.0 and s.lr_factor(e) == 1.0


def test_step_heatup_defaults_are_the_papers() -> None:
    s = StepHeatUp()
    assert (s.base_alpha, s.num_epochs, s.heatup_epoch, s.alpha_factor, s.final_lr_factor) == (16.0, 80, 60, 0.25, 0.1)
    assert s.alpha(59) == 16.0 and s.alpha(60) == 4.0
    assert s.lr_factor(59.999) == 1.0 and s.lr_factor(60) == 0.1


def test_step_heatup_changes_exactly_once_at_the_right_epoch() -> None:
    s = StepHeatUp(alpha=16.0, num_epochs=100, heatup_epoch=80, alpha_factor=0.25, lr_factor=0.1)
    epochs = np.linspace(0, 100, 10_001)  # steps of 0.01 epoch
    alphas = np.array([s.alpha(e) for e in epochs])
    lrs = np.array([s.lr_factor(e) for e in epochs])
    assert set(alphas.tolist()) == {16.0, 4.0} and set(lrs.tolist()) == {1.0, 0.1}
    changes = np.flatnonzero(np.diff(alphas))
    assert len(changes) == 1 and epochs[changes[0] + 1] == 80.0
    assert np.array_equal(np.flatnonzero(np.diff(lrs)), changes)
    assert [s.heated(e) for e in (0, 79, 79.99, 80, 99)] == [False, False, False, True, True]


@pytest.mark.parametrize("shape", SHAPES)
def test_smooth_heatup_endpoints_and_monotone(shape: str) -> None:
    s = SmoothHeatUp(alpha=16.0, num_epochs=100, start_epoch=60, end_epoch=90, shape=shape)
    assert s.alpha(0) == s.alpha(60) == 16.0 and s.lr_factor(60) == 1.0
    assert math.isclose(s.alpha(90), 4.0) and math.isclose(s.alpha(100), 4.0)
    assert math.isclose(s.lr_factor(95), 0.1)
    alphas = np.array([s.alpha(e) for e in np.linspace(0, 100, 1001)])
    assert np.all(np.diff(alphas) <= 1e-12) and np.any(np.diff(alphas) < 0)


def test_smooth_heatup_midpoints() -> None:
    kw = dict(alpha=16.0, num_epochs=10, start_epoch=2, end_epoch=6, alpha_factor=0.25, lr_factor=0.01)
    assert math.isclose(SmoothHeatUp(shape="linear", **kw).alpha(4), 10.0)          # 16 + (4 - 16) / 2
    assert math.isclose(SmoothHeatUp(shape="cosine", **kw).alpha(4), 10.0)          # cosine is symmetric
    assert math.isclose(SmoothHeatUp(shape="cosine", **kw).alpha(3), 16 - 12 * (1 - math.cos(math.pi / 4)) / 2)
    assert math.isclose(SmoothHeatUp(shape="exponential", **kw).alpha(4), 8.0)      # geometric mean of 16 and 4
    assert math.isclose(SmoothHeatUp(shape="exponential", **kw).lr_factor(4), 0.1)


@pytest.mark.parametrize("schedule", [
    Constant(2.0, 5),
    StepHeatUp(),
    StepHeatUp(alpha=2.0, num_epochs=4, heatup_epoch=3, alpha_factor=0.5, lr_factor=1.0),
    SmoothHeatUp(16.0, 100, 50.5, 80, shape="exponential"),
])
def test_round_trip_through_json(schedule) -> None:
    d = json.loads(json.dumps(schedule.to_dict()))
    assert d["kind"] == type(schedule).__name__ and "alpha" in d and "base_alpha" not in d
    again = schedule_from_dict(d)
    assert again == schedule and repr(again) == repr(schedule)
    assert eval(repr(schedule)) == schedule  # repr shows the constructor call


def test_repr() -> None:
    assert repr(StepHeatUp()) == ("StepHeatUp(alpha=16.0, num_epochs=80, heatup_epoch=60, "
                                  "alpha_factor=0.25, lr_factor=0.1)")


def test_frozen() -> None:
    s = StepHeatUp()
    with pytest.raises(Exception):
        s.heatup_epoch = 10


@pytest.mark.parametrize("make, message", [
    (lambda: Constant(-1.0, 10), r"alpha must be a finite number > 0.0, got -1.0"),
    (lambda: Constant(0, 10), r"alpha must be a finite number > 0.0, got 0"),
    (lambda: Constant(float("nan"), 10), r"alpha must be a finite number"),
    (lambda: Constant(4.0, 0), r"num_epochs must be an integer >= 1, got 0"),
    (lambda: StepHeatUp(alpha=-16.0), r"alpha must be a finite number > 0.0, got -16.0"),
    (lambda: StepHeatUp(alpha_factor=0.0), r"alpha_factor must be a finite number > 0.0 and <= 1.0, got 0.0"),
    (lambda: StepHeatUp(alpha_factor=1.5), r"alpha_factor must be a finite number > 0.0 and <= 1.0, got 1.5"),
    (lambda: StepHeatUp(lr_factor=-0.1), r"lr_factor must be a finite number > 0.0 and <= 1.0, got -0.1"),
    (lambda: StepHeatUp(num_epochs=80, heatup_epoch=80), r"heatup_epoch must be .*got 80"),
    (lambda: StepHeatUp(num_epochs=80, heatup_epoch=100), r"heatup_epoch must be .*got 100"),
    (lambda: StepHeatUp(heatup_epoch=60.5), r"heatup_epoch must be .*got 60.5"),
    (lambda: SmoothHeatUp(16, 100, 90, 60), r"start_epoch < end_epoch"),
    (lambda: SmoothHeatUp(16, 100, 60, 120), r"end_epoch <= num_epochs=100.*end_epoch=120"),
    (lambda: SmoothHeatUp(16, 100, 60, 90, shape="step"), r"shape must be one of \('linear', 'cosine', 'exponential'\), got 'step'"),
])
def test_bad_arguments_raise(make, message) -> None:
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("schedule", [Constant(2.0, 5), StepHeatUp(), SmoothHeatUp(16, 100, 60, 90)])
def test_epoch_beyond_the_run_raises(schedule) -> None:
    n = schedule.num_epochs
    for bad in (n + 0.5, -1):
        with pytest.raises(ValueError, match=rf"epoch must be in \[0, num_epochs={n}\], got {bad}"):
            schedule.alpha(bad)
        with pytest.raises(ValueError, match="epoch must be in"):
            schedule.lr_factor(bad)


def test_schedule_from_dict_errors() -> None:
    with pytest.raises(ValueError, match="'kind'"):
        schedule_from_dict({"alpha": 1.0})
    with pytest.raises(ValueError, match=r"kind must be one of \['AlphaWarmUp', 'Constant', 'SmoothHeatUp', 'StepHeatUp'\], got 'Warm'"):
        schedule_from_dict({"kind": "Warm"})
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['base_alpha'\] for Constant"):
        schedule_from_dict({"kind": "Constant", "base_alpha": 1.0, "num_epochs": 3})


def test_alpha_warm_up_rises_geometrically_then_hands_over() -> None:
    from heatup_lib.schedules import AlphaWarmUp

    inner = StepHeatUp(alpha=16.0, num_epochs=4, heatup_epoch=3)
    w = AlphaWarmUp(inner, epochs=0.5, start_alpha=1.0)
    # 1 -> 16 geometrically over half an epoch: 1, 2, 4, 8 at 0, 1/8, 1/4, 3/8
    assert [w.alpha(t) for t in (0.0, 0.125, 0.25, 0.375)] == pytest.approx([1.0, 2.0, 4.0, 8.0])
    assert [w.alpha(t) for t in (0.5, 2.0, 3.0)] == [16.0, 16.0, 4.0]
    assert [w.lr_factor(t) for t in (0.1, 3.0)] == [1.0, 0.1] and w.num_epochs == 4
    assert AlphaWarmUp(Constant(0.25, 2), 0.5).alpha(0.1) == 0.25  # at or below the start: no warm-up
    assert schedule_from_dict(w.to_dict()) == w
    with pytest.raises(ValueError, match="epochs must be a finite number > 0.0 and <= 4"):
        AlphaWarmUp(inner, epochs=5.0)
