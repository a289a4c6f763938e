"""The chapters' figures: they build and hold what they should (checked against the data drawn)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from heatup_lib.plots import distribution_grid, distribution_map, training_curves
from heatup_lib.gradients import (
    gradient_norm, gradient_share, make_cosines, margin,
    sample_cosines,
)


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
    # one legend for the grid, outside the circles: ten digits and the weight marker
    assert all(ax.get_legend() is None for ax in axes) and len(fig.legends) == 1
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [str(d) for d in range(10)] + ["weight"]
    assert fig.get_size_inches()[0] >= 3 * 3.0  # panels at least 3 inches wide
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


# --- chapter 1 ---

def test_gradient_curves_draws_each_sample_and_marks_interior_peaks() -> None:
    from heatup_lib.plots import gradient_curves

    a = torch.linspace(0.1, 64, 200, dtype=torch.float64)
    norms = {"mis": gradient_norm(make_cosines(0.3, 0.5, 10), 0, a), "well": gradient_norm(make_cosines(0.5, 0.1, 10), 0, a)}
    fig = gradient_curves(a, norms, alpha_marker=16.0)
    ax = fig.axes[0]
    gids = {line.get_gid() for line in ax.lines}
    assert {"curve:mis", "curve:well", "peak:well", "alpha-marker"} <= gids and "peak:mis" not in gids
    well = next(line for line in ax.lines if line.get_gid() == "curve:well")
    np.testing.assert_allclose(well.get_ydata(), norms["well"].numpy())
    peak = next(line for line in ax.lines if line.get_gid() == "peak:well")
    assert peak.get_xdata()[0] == a[norms["well"].argmax()].item()
    with pytest.raises(ValueError, match="must have 200 values"):
        gradient_curves(a, {"bad": norms["mis"][:10]})


def test_share_plots_hold_the_shares() -> None:
    from heatup_lib.plots import cumulative_gradient_share, gradient_share_scatter

    z, y = sample_cosines(200, 10, seed=1)
    alphas = [0.25, 16.0]
    s = gradient_share(gradient_norm(z, y, torch.tensor(alphas, dtype=torch.float64)))
    m = margin(z, y)
    fig = cumulative_gradient_share(m, s, alphas)
    line = next(l for l in fig.axes[0].lines if l.get_gid() == "cumulative:16")
    assert math.isclose(line.get_ydata()[-1], 1.0, rel_tol=1e-12)
    np.testing.assert_allclose(np.sort(line.get_xdata()), line.get_xdata())  # ordered by margin
    fig = gradient_share_scatter(m, s, alphas, floor=1e-3)
    pts = next(c for c in fig.axes[0].collections if c.get_gid() == "share:0.25").get_offsets()
    np.testing.assert_allclose(np.asarray(pts)[:, 1], np.maximum(s[:, 0].numpy() * 200, 1e-3))
    with pytest.raises(ValueError, match=r"shares must have shape \(N, A\) = \(200, 3\)"):
        gradient_share_scatter(m, s, [0.25, 4.0, 16.0])


def test_schedule_curves_follow_the_schedule() -> None:
    from heatup_lib.plots import schedule_curves
    from heatup_lib.schedules import StepHeatUp

    s = StepHeatUp(alpha=16.0, num_epochs=10, heatup_epoch=6)
    fig = schedule_curves({"step": s}, "lr_factor", points_per_epoch=4)
    line = fig.axes[0].lines[0]
    x, v = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
    assert len(x) == 41 and np.all(v[x < 6] == 1.0) and np.all(v[x >= 6] == 0.1)
    with pytest.raises(ValueError, match="quantity must be 'alpha' or 'lr_factor', got 'lr'"):
        schedule_curves({"step": s}, "lr")


# --- chapter 3 ---

def test_retrieval_gallery_marks_right_and_wrong():
    from heatup_lib.plots import nearest_neighbours, retrieval_gallery

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(12, 5))
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    images = rng.integers(0, 256, size=(12, 8, 8, 3), dtype=np.uint8)
    queries, k = [0, 4, 10], 3
    fig = retrieval_gallery(images, labels, emb, queries, k=k)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    for r, q in enumerate(queries):
        sims = unit @ unit[q]
        sims[q] = -np.inf
        nbrs = np.argsort(-sims)[:k]  # brute force
        assert list(nearest_neighbours(emb, [q], k)[0]) == list(nbrs)
        kinds = [fig.axes[r * (k + 1) + c].get_gid() for c in range(k + 1)]
        assert kinds == ["query"] + ["right" if labels[j] == labels[q] else "wrong" for j in nbrs]
    with pytest.raises(ValueError, match="k must be in"):
        retrieval_gallery(images, labels, emb, [0], k=12)


def test_interval_forest_puts_each_method_at_its_mean_with_its_interval():
    from heatup_lib.plots import interval_forest

    panels = {"a": {"x": (1.0, 0.5), "ref": (2.0, 0.1)}, "b": {"ref": (3.0, 0.2), "y": (4.0, float("nan"))}}
    fig = interval_forest(panels, xlabel="R@1", reference="ref")
    left, right = fig.axes
    assert [t.get_text() for t in left.get_yticklabels()] == ["x", "ref", "y"]  # first panel's order, then new ones
    # each method's point sits at its mean on its own row; the interval spans mean +- half
    points = {tuple(np.round(line.get_xydata()[0], 6)) for line in left.lines if line.get_marker() == "o"}
    assert points == {(1.0, 2.0), (2.0, 1.0)}
    bars = [c for c in left.collections if c.get_segments()]
    spans = sorted(tuple(np.round(s[:, 0], 6)) for c in bars for s in c.get_segments())
    assert spans == [(0.5, 1.5), (1.9, 2.1)]
    # the reference's dashed line at its mean in each panel; a nan half-width is a bare point
    assert any(line.get_linestyle() == "--" and line.get_xdata()[0] == 3.0 for line in right.lines)
    assert {tuple(line.get_xydata()[0]) for line in right.lines if line.get_marker() == "o"} == {(3.0, 1.0), (4.0, 0.0)}
    with pytest.raises(ValueError, match="at least one panel"):
        interval_forest({})


def test_alpha_trajectories_plot_every_step_in_epochs():
    from heatup_lib.plots import alpha_trajectories

    runs = {"learned": [[16.0, 15.0, 14.0, 13.0], [16.0, 15.5, 15.0, 14.5]], "fixed": [[3.0] * 4]}
    fig = alpha_trajectories(runs, steps_per_epoch=2)
    ax = fig.axes[0]
    assert len(ax.lines) == 3 and ax.get_yscale() == "log"
    assert np.allclose(ax.lines[0].get_xdata(), [0.5, 1.0, 1.5, 2.0])
    assert np.allclose(ax.lines[1].get_ydata(), runs["learned"][1])
    assert ax.lines[0].get_color() == ax.lines[1].get_color() != ax.lines[2].get_color()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["learned", "fixed"]


def test_training_curves_in_rows_of_ncols():
    history = [{"epoch": e, "loss": 1.0 / (e + 1), "accuracy": 0.1 * e, "alpha": 16.0, "lr": 1e-3} for e in range(3)]
    fig = training_curves(history, keys=("loss", "accuracy", "alpha"), ncols=2)
    assert len(fig.axes) == 3  # the empty fourth slot is removed
    assert fig.axes[0].get_subplotspec().get_geometry()[:2] == (2, 2)  # a 2 x 2 grid
    third = fig.axes[2].get_subplotspec()
    assert (third.rowspan.start, third.colspan.start) == (1, 0)  # the third panel starts the second row
    assert np.allclose(fig.axes[1].lines[0].get_ydata(), [0.0, 0.1, 0.2])
    with pytest.raises(ValueError, match="ncols must be an integer >= 1, got 0"):
        training_curves(history, keys=("loss",), ncols=0)
