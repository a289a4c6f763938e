"""Figures used by the chapters: gradient curves, schedules, distribution maps, training curves, retrieval galleries, intervals and alpha trajectories."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from .checks import check_int

# --- Chapter 2: distribution maps and training curves ---
# Figures are built with matplotlib.figure.Figure, not pyplot: no global figure state, nothing leaks
# when a panel redraws many times. A notebook shows them with `%matplotlib inline` (or display(fig)).

_DIGIT_COLOURS = matplotlib.colormaps["tab10"].colors  # one colour per digit; label c gets colour c % 10


def _numpy(x: Any) -> np.ndarray:
    """A CPU numpy copy of a tensor, array or list."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _unit_rows(x: Any, name: str) -> np.ndarray:
    """Rows of a 2-d array (N, 2) scaled to unit length (float64); raise unless the array is (N, 2)."""
    x = _numpy(x).astype(np.float64)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"{name} must have shape (N, 2) (a 2-d embedding), got {x.shape}")
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def distribution_map(features: Any, labels: Any, weights: Any | None = None, ax: Axes | None = None,
                     title: str | None = None, jitter: float = 0.06, seed: int = 0,
                     legend: bool = True, point_size: float = 4.0) -> Figure:
    """Normalised 2-d features as points on the unit circle (radius jittered by +-``jitter``), one colour per class; normalised class weights as diamonds.

    ``features`` (N, 2), ``labels`` (N,) integer classes, ``weights`` (C, 2) where row ``c`` is
    class ``c``'s weight. Only directions are drawn, as the normalised-softmax head sees them.
    The jitter (reproducible through ``seed``) spreads points that share a direction into a
    band so that a dense class reads as a thick arc and a diffuse one as a long thin arc.
    """
    unit = _unit_rows(features, "features")
    labels = _numpy(labels).astype(np.int64).reshape(-1)
    if len(labels) != len(unit):
        raise ValueError(f"labels must have {len(unit)} entries to match features, got {len(labels)}")
    if not 0 <= jitter < 0.5:
        raise ValueError(f"jitter must be in [0, 0.5), got {jitter!r}")
    if ax is None:
        ax = Figure(figsize=(4.2, 4.2), layout="constrained").subplots()
    rng = np.random.default_rng(seed)
    radius = 1.0 + jitter * rng.uniform(-1.0, 1.0, size=len(unit))
    theta = np.linspace(0.0, 2.0 * np.pi, 361)
    ax.plot(np.cos(theta), np.sin(theta), color="0.8", lw=0.8, zorder=0)
    colours = [_DIGIT_COLOURS[c % 10] for c in labels]
    order = rng.permutation(len(unit))  # draw classes interleaved, so none hides the others
    points = ax.scatter(unit[order, 0] * radius[order], unit[order, 1] * radius[order],
                        c=[colours[i] for i in order], s=point_size, linewidths=0, alpha=0.7, zorder=1)
    points.set_gid("features")
    if weights is not None:
        w = _unit_rows(weights, "weights")
        for c, (x, y) in enumerate(w):
            ax.plot([0.0, x], [0.0, y], color=_DIGIT_COLOURS[c % 10], lw=0.8, ls="--", zorder=2)
        diamonds = ax.scatter(w[:, 0], w[:, 1], c=[_DIGIT_COLOURS[c % 10] for c in range(len(w))],
                              marker="D", s=60, edgecolors="black", linewidths=1.0, zorder=3)
        diamonds.set_gid("weights")
    if legend:
        ax.legend(handles=_map_legend(labels, weights is not None), loc="center left", bbox_to_anchor=(1.0, 0.5),
                  fontsize="x-small", frameon=False, handletextpad=0.1)
    lim = 1.0 + jitter + 0.12
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title, fontsize="medium")
    return ax.figure


def _map_legend(labels: np.ndarray, with_weights: bool) -> list[Line2D]:
    """Legend entries of a distribution map: one per class present, and the class-weight diamond."""
    present = sorted(set(np.asarray(labels).tolist()))
    handles = [Line2D([], [], ls="", marker="o", color=_DIGIT_COLOURS[c % 10], label=str(c)) for c in present]
    if with_weights:
        handles.append(Line2D([], [], ls="", marker="D", color="0.6", markeredgecolor="black", label="weight"))
    return handles


def distribution_grid(features: Sequence[Any] | Mapping[str, Any], labels: Any,
                      weights: Sequence[Any | None] | Mapping[str, Any] | None = None,
                      titles: Sequence[str] | None = None, ncols: int | None = None,
                      panel_size: float = 3.2, **map_kwargs: Any) -> Figure:
    """Distribution maps side by side: one panel per entry of ``features`` (across settings or epochs).

    ``features`` is a sequence of (N_i, 2) arrays, or a mapping title -> array (then ``weights``
    may be a mapping with the same keys). ``labels`` is one (N,) array shared by all panels or a
    sequence of them; ``weights`` a sequence of (C, 2) arrays or None entries. Panels are
    ``panel_size`` inches square, at most three a row by default; one legend for all of them sits
    outside the circles, right of the grid. Further keyword arguments go to :func:`distribution_map`.
    """
    if isinstance(features, Mapping):
        if titles is not None:
            raise ValueError("give titles either as the keys of a features mapping or as titles=, not both")
        titles = list(features.keys())
        if isinstance(weights, Mapping):
            weights = [weights.get(k) for k in titles]
        features = list(features.values())
    features = list(features)
    n = len(features)
    if n == 0:
        raise ValueError("distribution_grid needs at least one panel, got an empty features list")
    if isinstance(labels, (list, tuple)) and len(labels) == n and not np.isscalar(labels[0]):
        labels_list = list(labels)
    else:
        labels_list = [labels] * n
    weights_list = [None] * n if weights is None else list(weights)
    titles_list = [None] * n if titles is None else list(titles)
    for name, seq in (("weights", weights_list), ("titles", titles_list)):
        if len(seq) != n:
            raise ValueError(f"{name} must have one entry per panel ({n}), got {len(seq)}")
    ncols = min(n, 3) if ncols is None else ncols
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols!r}")
    nrows = -(-n // ncols)
    fig = Figure(figsize=(panel_size * ncols + 0.8, panel_size * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    legend = map_kwargs.pop("legend", True)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        distribution_map(features[i], labels_list[i], weights_list[i], ax=ax, title=titles_list[i],
                         legend=False, **map_kwargs)
    if legend:
        labels_all = np.concatenate([_numpy(lab).reshape(-1) for lab in labels_list])
        fig.legend(handles=_map_legend(labels_all, any(w is not None for w in weights_list)),
                   loc="outside right center", fontsize="small", frameon=False)
    return fig


_CURVE_LABELS = {"loss": "training loss", "accuracy": "training accuracy", "alpha": "alpha (1/T)",
                 "lr": "learning rate", "compactness": "compactness (deg)",
                 "spread_min": "min angle between classes (deg)", "spread_mean": "mean angle between classes (deg)"}


def training_curves(histories: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Mapping[str, Any]]],
                    keys: Sequence[str] = ("loss", "accuracy", "alpha", "lr"),
                    ax: Sequence[Axes] | None = None, log_keys: Sequence[str] = ("alpha", "lr"),
                    step_keys: Sequence[str] = ("alpha", "lr"), ncols: int | None = None) -> Figure:
    """One panel per key in ``keys``, plotting a run's per-epoch history (a list of records) or several runs (a mapping name -> history).

    Each record is a dict with an ``epoch`` (0-based) and the keys to plot; the x axis counts
    completed epochs (``epoch + 1``). Keys in ``log_keys`` get a logarithmic y axis; keys in
    ``step_keys`` (per-epoch settings) are drawn as steps. The panels are laid out ``ncols`` to a
    row (default: all in one). A key that no run recorded raises ValueError.
    """
    if isinstance(histories, Mapping):
        runs = {str(k): list(v) for k, v in histories.items()}
    else:
        runs = {"": list(histories)}
    keys = list(keys)
    if not keys:
        raise ValueError("keys must name at least one history key, got none")
    for key in keys:
        if not any(key in rec for h in runs.values() for rec in h):
            available = sorted({k for h in runs.values() for rec in h for k in rec})
            raise ValueError(f"no run recorded {key!r}; recorded keys: {available}")
    if ax is None:
        cols = len(keys) if ncols is None else min(check_int("ncols", ncols, min_value=1), len(keys))
        rows = -(-len(keys) // cols)
        fig = Figure(figsize=(3.0 * cols + (0.6 if rows > 1 else 0.0), 2.8 * rows), layout="constrained")
        axes = list(fig.subplots(rows, cols, squeeze=False).flat)
        for extra in axes[len(keys):]:
            extra.remove()
        axes = axes[:len(keys)]
    else:
        axes = list(np.atleast_1d(ax))
        if len(axes) != len(keys):
            raise ValueError(f"ax must hold one Axes per key ({len(keys)}), got {len(axes)}")
    for key, a in zip(keys, axes):
        for name, history in runs.items():
            pts = [(rec.get("epoch", i) + 1, rec[key]) for i, rec in enumerate(history)
                   if key in rec and rec[key] is not None]
            if pts:
                x, y = zip(*pts)
                # alpha and lr hold during the epoch that ends at x: draw them as steps.
                a.plot(x, y, marker="o", ms=2.5, lw=1.2, label=name or None,
                       drawstyle="steps-pre" if key in step_keys else "default")
        a.set_xlabel("epochs completed")
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        a.set_title(_CURVE_LABELS.get(key, key), fontsize="medium")
        if key in log_keys:
            a.set_yscale("log")
        a.grid(alpha=0.3)
    if len(runs) > 1 or next(iter(runs)):
        axes[0].legend(fontsize="x-small")
    return axes[0].figure


# --- Chapter 3: retrieval gallery and benchmark curves ---

_RIGHT, _WRONG, _QUERY = "#1a9850", "#d73027", "#4575b4"  # frame colours: same class, other class, query


def _display_image(image: Any) -> np.ndarray:
    """An image as (H, W, 3) floats in [0, 1], from uint8 (H, W, 3) or float/uint8 (3, H, W)."""
    x = _numpy(image)
    if x.ndim == 3 and x.shape[0] in (1, 3) and x.shape[-1] not in (1, 3):
        x = np.moveaxis(x, 0, -1)
    if x.ndim != 3 or x.shape[-1] not in (1, 3):
        raise ValueError(f"an image must have shape (H, W, 3) or (3, H, W), got {x.shape}")
    x = x.astype(np.float64) / 255.0 if x.dtype == np.uint8 else x.astype(np.float64)
    if x.min() < 0:  # normalised to [-1, 1]
        x = (x + 1.0) / 2.0
    return np.clip(np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x, 0.0, 1.0)


def nearest_neighbours(embeddings: Any, queries: Sequence[int], k: int) -> np.ndarray:
    """Indices (Q, k) of the ``k`` most cosine-similar rows to each query row, the query itself excluded."""
    emb = torch.as_tensor(_numpy(embeddings), dtype=torch.float64)
    emb = emb / emb.norm(dim=1, keepdim=True).clamp_min(1e-12)
    q = torch.as_tensor(list(queries), dtype=torch.int64)
    if not 1 <= k < len(emb):
        raise ValueError(f"k must be in [1, {len(emb) - 1}] for {len(emb)} embeddings, got {k}")
    if len(q) and (q.min() < 0 or q.max() >= len(emb)):
        raise ValueError(f"queries must be indices in [0, {len(emb) - 1}], got {q.tolist()}")
    sims = emb[q] @ emb.T  # (Q, N)
    sims[torch.arange(len(q)), q] = -float("inf")
    return sims.topk(k, dim=1).indices.numpy()


def retrieval_gallery(images: Any, labels: Any, embeddings: Any, queries: Sequence[int], k: int = 4,
                      title: str | None = None) -> Figure:
    """One row per query: the query image (blue frame), then its ``k`` nearest test images by cosine similarity, framed green (same class) or red (other class).

    ``images`` (N, H, W, 3) uint8 (e.g. an image cache) or (N, 3, H, W), ``labels`` (N,),
    ``embeddings`` (N, D); ``queries`` are indices into them. Each frame's patch carries a gid
    ``"query"``, ``"right"`` or ``"wrong"`` so that a test can read what was drawn.
    """
    labels_np = _numpy(labels).reshape(-1)
    n = len(labels_np)
    if len(images) != n or len(_numpy(embeddings)) != n:
        raise ValueError(f"images ({len(images)}), labels ({n}) and embeddings ({len(_numpy(embeddings))}) "
                         "must have the same length")
    queries = [int(i) for i in queries]
    if not queries:
        raise ValueError("queries must hold at least one index, got none")
    neighbours = nearest_neighbours(embeddings, queries, k)
    fig = Figure(figsize=(1.3 * (k + 1), 1.35 * len(queries) + (0.3 if title else 0.0)), layout="constrained")
    axes = fig.subplots(len(queries), k + 1, squeeze=False)
    for r, (q, nbrs) in enumerate(zip(queries, neighbours)):
        cells = [(q, "query")] + [(int(j), "right" if labels_np[j] == labels_np[q] else "wrong") for j in nbrs]
        for c, (idx, kind) in enumerate(cells):
            a = axes[r, c]
            a.imshow(_display_image(images[idx]), interpolation="nearest")
            a.set_xticks([])
            a.set_yticks([])
            colour = {"query": _QUERY, "right": _RIGHT, "wrong": _WRONG}[kind]
            for spine in a.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(3.0)
            a.patch.set_gid(kind)
            a.set_gid(kind)
            if r == 0:
                a.set_title("query" if c == 0 else f"#{c}", fontsize="small")
            a.set_xlabel(f"class {labels_np[idx]}", fontsize="x-small", labelpad=1)
    if title:
        fig.suptitle(title, fontsize="medium")
    return fig


def class_samples(images: Any, labels: Any, num_classes: int = 8, per_class: int = 3,
                  names: Sequence[str] | None = None) -> Figure:
    """A grid of example images: one column per class (the first ``num_classes`` labels present), ``per_class`` rows.

    ``images`` (N, H, W, 3) uint8 (e.g. an image cache), ``labels`` (N,); ``names`` titles the
    columns (default: the label).
    """
    labels_np = _numpy(labels).reshape(-1)
    if len(images) != len(labels_np):
        raise ValueError(f"images ({len(images)}) and labels ({len(labels_np)}) must have the same length")
    classes = list(dict.fromkeys(labels_np.tolist()))[:num_classes]
    fig = Figure(figsize=(1.1 * len(classes), 1.1 * per_class), layout="constrained")
    axes = fig.subplots(per_class, len(classes), squeeze=False)
    for c, label in enumerate(classes):
        members = np.flatnonzero(labels_np == label)[:per_class]
        for r in range(per_class):
            a = axes[r, c]
            a.set_xticks([])
            a.set_yticks([])
            if r < len(members):
                a.imshow(_display_image(images[members[r]]), interpolation="nearest")
        axes[0, c].set_title(str(names[c]) if names is not None else f"class {label}", fontsize="small")
    return fig


def benchmark_curves(histories: Mapping[str, Sequence[Mapping[str, Any]]],
                     keys: Sequence[str] = ("loss", "alpha", "lr", "recall@1"), ncols: int | None = None) -> Figure:
    """Training curves of benchmark runs (name -> per-epoch history): loss, alpha, learning rate and test Recall@1 (recorded at evaluation epochs)."""
    keys = [k for k in keys if any(k in rec for h in histories.values() for rec in h)]
    if not keys:
        raise ValueError("none of the histories recorded loss, alpha, lr or recall@1")
    fig = training_curves(histories, keys=keys, ncols=ncols)
    for a, key in zip(fig.axes, keys):
        if key.startswith("recall@"):
            a.set_title(f"test {key.replace('recall@', 'Recall@')}", fontsize="medium")
    return fig


# --- Chapter 1: gradient curves and schedules ---

_SAMPLE_COLOURS = ("#d73027", "#fc8d59", "#4575b4", "#91bfdb", "#1a9850", "#762a83")  # misclassified, boundary, well, ...
_ALPHA_CMAP = "viridis"


def _new_axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    """``ax`` itself, or the axes of a new constrained-layout Figure of ``figsize`` (not registered with pyplot)."""
    return ax if ax is not None else Figure(figsize=figsize, layout="constrained").subplots()


def gradient_curves(alphas: Any, norms: Mapping[str, Any], ax: Axes | None = None, title: str | None = None,
                    mark_peaks: bool = True, log_y: bool = False, alpha_marker: float | None = None) -> Figure:
    """Gradient norm versus alpha, one line per named sample; ``norms[name]`` has shape (A,) like ``alphas``.

    An interior maximum (a sample that gets most gradient at some finite alpha) is marked with a
    dot; ``alpha_marker`` draws a vertical line at one alpha (the widget's slider).
    """
    a = _numpy(alphas).astype(np.float64).reshape(-1)
    if len(a) < 2 or np.any(np.diff(a) <= 0):
        raise ValueError(f"alphas must be an increasing sequence of at least 2 values, got {len(a)} value(s)")
    if not norms:
        raise ValueError("norms must name at least one sample")
    ax = _new_axes(ax, (5.0, 3.4))
    for i, (name, values) in enumerate(norms.items()):
        n = _numpy(values).astype(np.float64).reshape(-1)
        if n.shape != a.shape:
            raise ValueError(f"norms[{name!r}] must have {len(a)} values to match alphas, got {n.shape}")
        colour = _SAMPLE_COLOURS[i % len(_SAMPLE_COLOURS)]
        ax.plot(a, n, color=colour, lw=2, label=name, gid=f"curve:{name}")
        k = int(np.argmax(n))
        if mark_peaks and 0 < k < len(a) - 1:
            ax.plot([a[k]], [n[k]], "o", color=colour, ms=5, gid=f"peak:{name}")
            ax.annotate(f"alpha={a[k]:.3g}", (a[k], n[k]), textcoords="offset points", xytext=(4, 4),
                        fontsize=8, color=colour)
    if alpha_marker is not None:
        ax.axvline(float(alpha_marker), color="0.4", ls="--", lw=1, gid="alpha-marker")
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel("alpha (inverse temperature)")
    ax.set_ylabel(r"$\|\partial L / \partial \hat f\|$")
    ax.set_xlim(a[0], a[-1])
    if not log_y:
        top = max(float(np.max(_numpy(v))) for v in norms.values())
        ax.set_ylim(0, 1.12 * top if top > 0 else 1.0)  # room for the peak labels
    ax.legend(fontsize=8, frameon=False)
    if title:
        ax.set_title(title)
    return ax.figure


def _check_share_inputs(margins: Any, shares: Any, alphas: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    m = _numpy(margins).astype(np.float64).reshape(-1)
    s = _numpy(shares).astype(np.float64)
    if s.ndim != 2 or s.shape != (len(m), len(alphas)):
        raise ValueError(f"shares must have shape (N, A) = ({len(m)}, {len(alphas)}) for {len(m)} margins "
                         f"and {len(alphas)} alphas, got {s.shape}")
    return m, s


def gradient_share_scatter(margins: Any, shares: Any, alphas: Sequence[float], ax: Axes | None = None,
                           floor: float = 1e-4, title: str | None = None) -> Figure:
    """Each sample's gradient share times N (1 = an equal share) against its cosine margin, one colour per alpha, log scale; values under ``floor`` sit on the bottom edge."""
    m, s = _check_share_inputs(margins, shares, alphas)
    ax = _new_axes(ax, (5.0, 3.4))
    cmap = matplotlib.colormaps[_ALPHA_CMAP]
    relative = np.maximum(s * len(m), floor)
    for j, alpha in enumerate(alphas):
        ax.scatter(m, relative[:, j], s=5, alpha=0.6, color=cmap(j / max(len(alphas) - 1, 1)),
                   label=f"alpha = {alpha:g}", gid=f"share:{alpha:g}", rasterized=True)
    ax.axvline(0.0, color="0.3", lw=1)
    ax.axhline(1.0, color="0.6", lw=0.8, ls=":")
    ax.set_yscale("log")
    ax.set_ylim(floor / 1.5, None)
    ax.set_xlabel(r"cosine margin $z_y - \max_{m \ne y} z_m$")
    ax.set_ylabel("gradient share x N")
    ax.legend(fontsize=8, frameon=False, markerscale=3)
    if title:
        ax.set_title(title)
    return ax.figure


def cumulative_gradient_share(margins: Any, shares: Any, alphas: Sequence[float], ax: Axes | None = None,
                              title: str | None = None) -> Figure:
    """Fraction of the total gradient held by the samples whose margin is below x, one line per alpha; the dashed line is the fraction of samples."""
    m, s = _check_share_inputs(margins, shares, alphas)
    ax = _new_axes(ax, (5.0, 3.4))
    order = np.argsort(m, kind="stable")
    cmap = matplotlib.colormaps[_ALPHA_CMAP]
    ax.plot(m[order], np.arange(1, len(m) + 1) / len(m), color="0.5", ls="--", lw=1, label="fraction of samples",
            gid="samples")
    for j, alpha in enumerate(alphas):
        ax.plot(m[order], np.cumsum(s[order, j]), color=cmap(j / max(len(alphas) - 1, 1)), lw=2,
                label=f"alpha = {alpha:g}", gid=f"cumulative:{alpha:g}")
    ax.axvline(0.0, color="0.3", lw=1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(r"cosine margin $z_y - \max_{m \ne y} z_m$")
    ax.set_ylabel("share of the total gradient")
    ax.legend(fontsize=8, frameon=False)
    if title:
        ax.set_title(title)
    return ax.figure


def schedule_curves(schedules: Mapping[str, Any], quantity: str = "alpha", ax: Axes | None = None,
                    points_per_epoch: int = 20, title: str | None = None) -> Figure:
    """``schedule.alpha(epoch)`` (or ``lr_factor``) over each schedule's run, one line per named schedule from :mod:`heatup_lib.schedules`."""
    if quantity not in ("alpha", "lr_factor"):
        raise ValueError(f"quantity must be 'alpha' or 'lr_factor', got {quantity!r}")
    if not schedules:
        raise ValueError("schedules must name at least one schedule")
    if points_per_epoch < 1:
        raise ValueError(f"points_per_epoch must be >= 1, got {points_per_epoch!r}")
    ax = _new_axes(ax, (5.0, 3.0))
    for i, (name, schedule) in enumerate(schedules.items()):
        epochs = np.linspace(0.0, schedule.num_epochs, schedule.num_epochs * points_per_epoch + 1)
        values = [getattr(schedule, quantity)(e) for e in epochs]
        ax.plot(epochs, values, lw=2, color=matplotlib.colormaps["tab10"](i % 10), label=name,
                gid=f"schedule:{name}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("alpha" if quantity == "alpha" else "learning-rate factor")
    if quantity == "lr_factor":
        ax.set_yscale("log")
    ax.legend(fontsize=8, frameon=False)
    if title:
        ax.set_title(title)
    return ax.figure


# --- Chapter 5: methods with their intervals, and the alpha each one used ---

def interval_forest(panels: Mapping[str, Mapping[str, tuple[float, float]]], xlabel: str = "",
                    reference: str | None = None, panel_width: float = 2.6) -> Figure:
    """One panel per entry of ``panels`` (title -> {method: (mean, half-width)}), every method on one axis with its interval.

    Methods are listed top to bottom in the order of the first panel; a method a panel lacks is
    left out of it. ``reference`` (a method name) gets a dashed vertical line at its mean, so
    that an interval that misses the line differs from the reference by more than its own width.
    A half-width that is not finite (one seed) is drawn as a point without a bar.
    """
    if not panels:
        raise ValueError("panels must hold at least one panel, got none")
    methods = list(next(iter(panels.values())))
    for title, entries in panels.items():
        methods += [m for m in entries if m not in methods]
    fig = Figure(figsize=(panel_width * len(panels) + 1.6, 0.32 * len(methods) + 1.0), layout="constrained")
    axes = list(fig.subplots(1, len(panels), sharey=True, squeeze=False).flat)
    y = {m: len(methods) - 1 - i for i, m in enumerate(methods)}
    for a, (title, entries) in zip(axes, panels.items()):
        for m, (mean, half) in entries.items():
            colour = "#d73027" if m == reference else "#4575b4"
            err = half if np.isfinite(half) else None
            a.errorbar(mean, y[m], xerr=err, fmt="o", ms=4, color=colour, capsize=3, lw=1.3)
        if reference is not None and reference in entries:
            a.axvline(entries[reference][0], color="#d73027", ls="--", lw=0.8, alpha=0.7)
        a.set_title(title, fontsize="medium")
        a.set_xlabel(xlabel)
        a.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(list(y.values()), list(y))
    axes[0].set_ylim(-0.7, len(methods) - 0.3)
    return fig


def alpha_trajectories(trajectories: Mapping[str, Sequence[Sequence[float]]], steps_per_epoch: float | None = None,
                       ax: Axes | None = None, title: str = "") -> Figure:
    """The alpha every training step used, per method (name -> one sequence per seed), on a log axis.

    The x axis is in epochs when ``steps_per_epoch`` is given, else in steps. Seeds of a method
    share its colour.
    """
    ax = _new_axes(ax, (6.4, 3.2))
    colours = matplotlib.colormaps["tab10"].colors
    for i, (name, runs) in enumerate(trajectories.items()):
        for j, alphas in enumerate(runs):
            a = _numpy(alphas).astype(float)
            x = np.arange(1, len(a) + 1) / (steps_per_epoch or 1.0)
            ax.plot(x, a, lw=1.1, color=colours[i % 10], alpha=0.85, label=name if j == 0 else None)
    ax.set_yscale("log")
    ax.set_xlabel("epochs" if steps_per_epoch else "training steps")
    ax.set_ylabel("alpha used")
    ax.set_title(title, fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    return ax.figure
