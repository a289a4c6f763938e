"""Chapter 2's figures and training panel: they build, hold what they should, and the panel really trains."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from heatup_lib.plots import distribution_grid, distribution_map, training_curves


def _collection(ax, gid):
    found = [c for c in ax.collections if c.get_gid() == gid]
    assert len(found) <= 1
    return found[0] if found else None


def _cloud(n: int = 120, classes: int = 10, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    angle = labels.double() * (2 * math.pi / classes) + 0.05 * torch.randn(n, generator=g, dtype=torch.float64)
    radius = torch.empty(n, dtype=torch.float64).uniform_(0.5, 20.0, generator=g)  # norms are not drawn
    feats = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)
    weights = torch.stack([torch.cos(torch.arange(classes) * 2 * math.pi / classes),
                           torch.sin(torch.arange(classes) * 2 * math.pi / classes)], dim=1) * 3.0
    return feats, labels, weights


def test_distribution_map_points_on_circle_and_diamonds():
    feats, labels, weights = _cloud()
    fig = distribution_map(feats, labels, weights, title="alpha = 16", jitter=0.05)
    ax = fig.axes[0]
    points = _collection(ax, "features").get_offsets()
    assert points.shape == (120, 2)
    r = np.linalg.norm(points, axis=1)
    assert r.min() >= 0.95 - 1e-9 and r.max() <= 1.05 + 1e-9 and r.std() > 0  # jittered band around the circle
    # Every point keeps the direction of its feature (angles match, as a set, since the drawing order is shuffled).
    drawn = np.sort(np.arctan2(points[:, 1], points[:, 0]))
    expected = np.sort(np.arctan2(feats[:, 1].numpy(), feats[:, 0].numpy()))
    np.testing.assert_allclose(drawn, expected, atol=1e-9)
    diamonds = _collection(ax, "weights")
    assert diamonds.get_offsets().shape == (10, 2)
    np.testing.assert_allclose(np.linalg.norm(diamonds.get_offsets(), axis=1), 1.0)  # normalised weights
    # Each point has its class's colour (its class read off its angle: classes sit 36 deg apart), and
    # diamond c has class c's colour; ten distinct colours.
    diamond_rgb = diamonds.get_facecolors()[:, :3]
    assert len({tuple(c) for c in np.round(diamond_rgb, 6)}) == 10
    point_class = np.round(np.arctan2(points[:, 1], points[:, 0]) / (2 * np.pi / 10)).astype(int) % 10
    np.testing.assert_allclose(_collection(ax, "features").get_facecolors()[:, :3], diamond_rgb[point_class])
    assert ax.get_title() == "alpha = 16"
    assert len(ax.get_legend().get_texts()) == 11  # ten digits and the weight marker


def test_distribution_map_without_weights_and_on_given_axes():
    from matplotlib.figure import Figure

    feats, labels, _ = _cloud(50, 5)
    fig = Figure()
    ax = fig.subplots()
    assert distribution_map(feats.numpy(), labels.numpy(), ax=ax, legend=False) is fig
    assert _collection(ax, "weights") is None
    assert _collection(ax, "features").get_offsets().shape == (50, 2)
    assert ax.get_legend() is None


def test_distribution_map_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"features must have shape \(N, 2\)"):
        distribution_map(torch.randn(10, 3), torch.zeros(10, dtype=torch.long))
    with pytest.raises(ValueError, match="labels must have 10 entries"):
        distribution_map(torch.randn(10, 2), torch.zeros(9, dtype=torch.long))


def test_distribution_grid_panels():
    maps = {}
    for i, name in enumerate(["0.25", "4", "16", "64", "16 heat-up"]):
        feats, labels, weights = _cloud(40 + i, 10, seed=i)
        maps[name] = feats
    labels = torch.arange(40) % 10
    fig = distribution_grid({k: v[:40] for k, v in maps.items()}, labels,
                            weights={"16": weights, "64": weights}, ncols=3)
    axes = [ax for ax in fig.axes if ax.axison]
    assert [ax.get_title() for ax in axes] == list(maps)
    assert len(fig.axes) == 6 and not fig.axes[5].axison  # 2 x 3 grid, the last cell empty
    assert [_collection(ax, "weights") is not None for ax in axes] == [False, False, True, True, False]
    assert all(_collection(ax, "features").get_offsets().shape == (40, 2) for ax in axes)
    assert axes[0].get_legend() is not None and all(ax.get_legend() is None for ax in axes[1:])
    with pytest.raises(ValueError, match="one entry per panel"):
        distribution_grid([maps["4"]] * 2, labels=torch.arange(41) % 10, titles=["a"])


def test_training_curves_one_panel_per_key_one_line_per_run():
    hist = [{"epoch": e, "loss": 2.0 / (e + 1), "accuracy": 0.5 + 0.1 * e, "alpha": 16.0 if e < 3 else 4.0,
             "lr": 1e-3 if e < 3 else 1e-4} for e in range(4)]
    fig = training_curves({"heat-up": hist, "fixed": hist[:2]})
    assert [ax.get_title() for ax in fig.axes] == ["training loss", "training accuracy", "alpha (1/T)", "learning rate"]
    alpha_ax = fig.axes[2]
    assert alpha_ax.get_yscale() == "log"
    assert [len(line.get_xdata()) for line in alpha_ax.get_lines()] == [4, 2]
    assert list(alpha_ax.get_lines()[0].get_xdata()) == [1, 2, 3, 4]  # epochs completed
    assert list(alpha_ax.get_lines()[0].get_ydata()) == [16.0, 16.0, 16.0, 4.0]
    single = training_curves(hist, keys=("loss",))
    assert len(single.axes) == 1 and single.axes[0].get_legend() is None
    with pytest.raises(ValueError, match="no run recorded 'recall'"):
        training_curves(hist, keys=("recall",))


# --- the training panel ---

@pytest.fixture(scope="module")
def digits():
    from heatup_lib.data.mnist import load_mnist

    X, y = load_mnist(None, "test")
    return X[:256], y[:256], X[256:356], y[256:356]


def test_panel_schedule_follows_the_controls():
    from heatup_lib.schedules import Constant, SmoothHeatUp, StepHeatUp
    from heatup_lib.widgets import panel_schedule

    step = panel_schedule("step heat-up", 16.0, 5, 3, 0.25)
    assert isinstance(step, StepHeatUp) and [step.alpha(e) for e in range(5)] == [16, 16, 16, 4, 4]
    assert step.lr_factor(4) == pytest.approx(0.1)
    smooth = panel_schedule("smooth heat-up (cosine)", 16.0, 6, 3, 0.25)
    assert isinstance(smooth, SmoothHeatUp) and smooth.shape == "cosine"
    alphas = [smooth.alpha(e) for e in range(6)]
    assert alphas[:3] == [16, 16, 16] and 4 < alphas[3] < alphas[2] and alphas[5] == pytest.approx(4.0)
    assert isinstance(panel_schedule("constant", 4.0, 5, 3, 0.25), Constant)
    assert isinstance(panel_schedule("step heat-up", 4.0, 1, 3, 0.25), Constant)  # too short to heat up
    assert panel_schedule("step heat-up", 4.0, 3, 7, 0.5).heatup_epoch == 2  # clipped into the run
    with pytest.raises(ValueError, match="schedule kind must be one of"):
        panel_schedule("warm", 4.0, 3, 1, 0.5)


def test_panel_trains_when_train_is_pressed(digits):
    import ipywidgets
    from ipywidgets.embed import embed_data

    from heatup_lib.widgets import training_panel

    X_train, y_train, X_test, y_test = digits
    panel = training_panel(X_train, y_train, X_test, y_test, num_epochs=1, train_size=256, batch_size=64,
                           map_points=100, schedule="constant", alpha=4.0)
    assert isinstance(panel, ipywidgets.VBox)
    before = panel.image.value
    assert before[:4] == b"\x89PNG" and len(panel.maps) == 1
    assert "alpha per epoch: 4" in panel.plan.value
    panel.alpha.value = 16.0
    assert "alpha per epoch: 16" in panel.plan.value  # the plan follows the sliders
    panel.button.click()  # what pressing Train does
    assert panel.error is None
    assert len(panel.result.history) == 1 and panel.result.history[0]["alpha"] == 16.0
    assert panel.progress.max == 4 and panel.progress.value == 4  # 256 images / 64 per batch
    assert len(panel.maps) == 2 and panel.image.value == panel.maps[-1] != before
    assert "epoch 1/1" in panel.status.value and not panel.button.disabled
    # The controls and the map survive as saved widget state (what the static book renders).
    state = embed_data(views=[panel])["manager_state"]["state"]
    models = {s["model_name"] for s in state.values()}
    assert {"FloatLogSliderModel", "DropdownModel", "ButtonModel", "IntProgressModel", "ImageModel"} <= models


def test_panel_reports_a_failed_run(digits):
    from heatup_lib.widgets import training_panel

    X_train, y_train, X_test, y_test = digits
    panel = training_panel(X_train, y_train, X_test, y_test, num_epochs=1, map_points=20)
    panel.lr = -1.0  # an invalid learning rate: TrainConfig refuses it
    with pytest.raises(ValueError, match="lr must be"):
        panel.train()
    assert isinstance(panel.error, ValueError) and "training failed" in panel.status.value
    assert not panel.button.disabled
