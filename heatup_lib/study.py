"""Chapter 5's methods: every way of choosing alpha that the temperature study compares, by name.

Each name is a setting of :func:`heatup_lib.schedules.named_schedule`, so the same list drives
the MNIST runs (:func:`heatup_lib.mnist_runs.chapter_jobs`) and the benchmark runs
(:class:`heatup_lib.benchmark_runs.BenchmarkJob`'s ``temperature``).
"""

from __future__ import annotations

from collections.abc import Sequence

from .checks import check_float
from .schedules import SHAPES

__all__ = ["study_methods"]


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
