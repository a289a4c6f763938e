"""Chapter 2's runs on a page: every job of a preset, loaded from its record where one exists, trained only where not.

The recipe that decides the numbers is :mod:`heatup_lib.mnist_recipe`; this module only finds,
trains (in parallel worker processes) and groups the runs a page shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path

from .mnist_recipe import GROUPS, MnistJob, MnistSettings, job_params, run_job, setting_names
from .pool import run_jobs
from .recorded import WEIGHTS_FILE, ShownRun, find, load

__all__ = ["load_or_train", "chapter_jobs", "recorded_runs", "by_setting", "kept_weights"]


def load_or_train(jobs: Sequence[MnistJob], *, runs_dir: str | Path, records_dir: str | Path | None = None,
                  processes: int = 1, retrain: bool = False, progress: bool = True) -> list[ShownRun]:
    """The shown run of every job: its committed record (``records_dir``, unless ``retrain``), else an earlier local run, else trained now.

    Missing runs are trained in ``processes`` worker processes of one torch thread each. A job
    that keeps its weights needs a record that has them.
    """
    roots = ([] if retrain or records_dir is None else [(records_dir, "committed")]) + [(runs_dir, "local")]
    found = []
    for job in jobs:
        shown = find(job_params(job), roots, need=("test_features", "class_weights"))
        found.append(None if shown is None or (job.keep_weights and not kept_weights(shown)) else shown)
    missing = [job for job, shown in zip(jobs, found) if shown is None]
    trained = iter(run_jobs(partial(run_job, runs_dir=runs_dir), missing, processes=processes,
                            desc="MNIST runs", progress=progress))
    return [shown if shown is not None else load(next(trained), origin="trained") for shown in found]


def chapter_jobs(settings: MnistSettings, seeds: Sequence[int], *, preset: str | None, data_seed: int = 0,
                 mnist_root: str | None = None, device: str = "cpu", names: Sequence[str] | None = None,
                 keep_weights: bool = True) -> list[MnistJob]:
    """Every run of a chapter: each setting (default: chapter 2's five) on all digits and zero-shot, for each seed.

    With ``keep_weights`` the first seed's alpha = 16 run on all digits keeps its weights
    (chapter 2's training panel starts from them).
    """
    keeper = f"alpha={settings.heatup_alpha:g}" if keep_weights else None
    return [MnistJob(settings, name, group, seed, data_seed, preset, mnist_root, device,
                     keep_weights=(group, seed, name) == ("all-digits", seeds[0], keeper))
            for group in GROUPS for name in (names or setting_names(settings)) for seed in seeds]


def recorded_runs(records_dir: str | Path, preset: str, names: Sequence[str] | None = None) -> list[ShownRun]:
    """Every complete MNIST run committed under ``records_dir/mnist/<preset>/`` (made on any machine), optionally only the named settings."""
    root = Path(records_dir) / "mnist" / preset  # where recorded.export_all puts them
    if not root.is_dir():
        return []
    found = [load(p.parent, origin="committed") for p in sorted(root.rglob("metrics.json"))]
    return [r for r in found if r.params.get("extra", {}).get("recipe") == "mnist"
            and (names is None or r.params["extra"]["setting"] in names)]


def by_setting(runs: Sequence[ShownRun]) -> dict[tuple[str, str], list[ShownRun]]:
    """Runs grouped by (group, setting), in the order they come, seeds in each list."""
    out: dict[tuple[str, str], list[ShownRun]] = {}
    for r in runs:
        extra = r.params["extra"]
        out.setdefault((extra["group"], extra["setting"]), []).append(r)
    return out


def kept_weights(run: ShownRun) -> bool:
    """Whether a shown run keeps its trained weights (the panel's starting network)."""
    return (run.path / WEIGHTS_FILE).is_file()
