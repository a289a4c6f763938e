"""Chapter 5's methods: every way of choosing alpha that the temperature study compares, by name.

Each name is a setting of :func:`heatup_lib.schedules.named_schedule`, so the same list drives
the MNIST runs (:func:`heatup_lib.mnist_runs.chapter_jobs`) and the benchmark runs
(:class:`heatup_lib.benchmark_runs.BenchmarkJob`'s ``temperature``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .checks import check_float
from .schedules import SHAPES

__all__ = ["study_methods", "STUDY_MNIST_SIZES", "mnist_parameters"]

# chapter 5's own MNIST sizes: its parameter ``study_mnist_<name>`` sets the recipe's ``mnist_<name>``
STUDY_MNIST_SIZES: tuple[str, ...] = ("train_size", "test_size", "num_epochs", "heatup_epoch", "warmup_images")


def study_methods(alphas: Sequence[float], heatup_alpha: float = 16.0) -> dict[str, list[str]]:
    """The study's methods in four families, in the order the chapter shows them.

    ``grid``: a constant alpha for each of ``alphas``; ``heat-up``: the paper's step from
    ``heatup_alpha``; ``smooth``: the linear, cosine and exponential heat-ups from it; ``adaptive``:
    alpha learned from ``heatup_alpha`` and from 1, AdaCos fixed and dynamic.
    """
    grid = [f"alpha={check_float('alpha', a, 0.0, min_open=True):g}" for a in alphas]
    a0 = check_float("heatup_alpha", heatup_alpha, 0.0, min_open=True)
    return {"grid": grid, "heat-up": [f"alpha={a0:g} heat-up"],
            "smooth": [f"alpha={a0:g} smooth heat-up ({shape})" for shape in SHAPES],
            "adaptive": [f"learned alpha (from {a0:g})", "learned alpha (from 1)", "AdaCos fixed", "AdaCos dynamic"]}


def mnist_parameters(params: Mapping[str, Any]) -> dict[str, Any]:
    """Chapter 5's parameters as chapter 2's ``mnist_*`` ones: the study's sizes and alpha grid over the recipe's other keys."""
    return {**params, "mnist_alphas": params["study_alphas"],
            **{f"mnist_{k}": params[f"study_mnist_{k}"] for k in STUDY_MNIST_SIZES}}
