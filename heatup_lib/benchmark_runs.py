"""Chapter 3's (and 5's) benchmark runs on a page: loaded from their records where they exist, trained only where not.

The recipe that decides the numbers is :mod:`heatup_lib.benchmark`; this module finds, trains
(in parallel worker processes of one thread each) and groups the runs a page shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from .benchmark import Settings, run_experiment, run_params_of
from .pool import run_jobs
from .recorded import ShownRun, find, load

__all__ = ["BenchmarkJob", "run_job", "load_or_train", "recorded_runs", "by_row"]


@dataclass(frozen=True)
class BenchmarkJob:
    """One benchmark run: a table row (optionally with a named temperature setting) on a prepared cache; plain data, picklable."""

    dataset: str
    row: str
    settings: Settings
    cache_dir: str
    preset: str | None = None
    standin: str | None = None
    temperature: str | None = None

    def params(self) -> dict:
        """The run's parameters, without training it."""
        return run_params_of(self.dataset, self.row, self.settings, self.cache_dir, preset=self.preset,
                             standin=self.standin, temperature=self.temperature)


def run_job(job: BenchmarkJob, runs_dir: str | Path) -> Path:
    """Train ``job`` (or load / resume its run) under ``runs_dir``; its run folder."""
    result = run_experiment(job.dataset, job.row, job.settings, cache_dir=job.cache_dir, runs_dir=runs_dir,
                            preset=job.preset, standin=job.standin, temperature=job.temperature, progress=False)
    return result.run_dir


def load_or_train(jobs: Sequence[BenchmarkJob], *, runs_dir: str | Path, records_dir: str | Path | None = None,
                  processes: int = 1, retrain: bool = False, progress: bool = True) -> list[ShownRun]:
    """The shown run of every job: its committed record (``records_dir``, unless ``retrain``), else an earlier local run, else trained now."""
    roots = ([] if retrain or records_dir is None else [(records_dir, "committed")]) + [(runs_dir, "local")]
    found = [find(job.params(), roots, need=("test_embeddings",)) for job in jobs]
    missing = [job for job, shown in zip(jobs, found) if shown is None]
    trained = iter(run_jobs(partial(run_job, runs_dir=runs_dir), missing, processes=processes,
                            desc="benchmark runs", progress=progress))
    return [shown if shown is not None else load(next(trained), origin="trained") for shown in found]


def recorded_runs(records_dir: str | Path, preset: str) -> list[ShownRun]:
    """Every complete benchmark run committed under ``records_dir/benchmark/<preset>/``."""
    root = Path(records_dir) / "benchmark" / preset  # where recorded.export_all puts them
    if not root.is_dir():
        return []
    return [load(p.parent, origin="committed") for p in sorted(root.rglob("metrics.json"))]


def by_row(runs: Sequence[ShownRun]) -> dict[tuple[str, str | None], list[ShownRun]]:
    """Runs grouped by (row, temperature), seeds in each list, in the order they come."""
    out: dict[tuple[str, str | None], list[ShownRun]] = {}
    for r in runs:
        block = r.params["extra"]["benchmark"]
        out.setdefault((block["row"], block.get("temperature")), []).append(r)
    return out
