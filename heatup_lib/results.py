"""The paper's numbers, recorded benchmark runs, and the one Markdown table builder every chapter uses."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .checks import check_choice
from .embedding import benchmark_block
from .records import find_records

__all__ = ["PAPER_RESULTS", "PAPER_BASELINES", "PAPER_R1_BY_DIM", "markdown_table", "mean_sd", "mean_ci", "format_mean_sd",
           "run_summary", "load_runs", "run_label", "table_metrics", "results_table", "results_markdown", "metric_title"]

_ROWS = ("sm", "ls", "ln", "bn", "hln", "hbn")
_PAPER_ROWS = ("sm", "ln", "bn", "hln", "hbn")
_K4 = ("nmi", "recall@1", "recall@2", "recall@4")
_KSOP = ("nmi", "recall@1", "recall@10", "recall@100")


def _rows(*values: Sequence[float], keys: Sequence[str]) -> dict[str, dict[str, float]]:
    return {row: dict(zip(keys, v)) for row, v in zip(_PAPER_ROWS, values)}


# The paper's 64-d results (SPEC section 8), in percent as printed in the paper.
PAPER_RESULTS: dict[str, dict[str, dict[str, float]]] = {
    "cars196": _rows((59.52, 60.76, 73.58, 82.50), (62.40, 68.59, 78.55, 86.18),
                     (65.81, 71.12, 80.62, 87.82), (66.87, 71.93, 81.68, 88.34),
                     (68.10, 74.70, 83.90, 89.77), keys=_K4),
    "cub200": _rows((57.19, 44.02, 55.86, 68.18), (59.23, 46.86, 59.79, 71.56),
                    (59.20, 47.27, 59.67, 71.89), (60.34, 49.68, 61.85, 73.08),
                    (60.75, 50.68, 62.58, 73.82), keys=_K4),
    "sop": _rows((88.66, 63.94, 80.07, 90.28), (90.11, 69.51, 84.69, 92.97),
                 (90.45, 71.19, 85.89, 93.75), (90.39, 70.36, 85.41, 93.70),
                 (90.61, 72.04, 86.25, 93.80), keys=_KSOP),
}
PAPER_BASELINES: dict[str, dict[str, dict[str, float]]] = {
    "cars196": {"ProxyNCA": dict(zip(_K4, (64.90, 73.22, 82.42, 86.36)))},
}
# Cars196 Recall@1 by embedding size (64, 128, 256); "ln16" is the fixed alpha = 16 row.
PAPER_R1_BY_DIM: dict[str, dict[int, float]] = {
    "sm": {64: 60.8, 128: 65.2, 256: 67.3},
    "ln16": {64: 71.1, 128: 74.2, 256: 78.0},
    "hbn": {64: 74.0, 128: 77.5, 256: 80.1},
}


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[bool] | None = None) -> str:
    """A Markdown table: ``header`` cells, then one line per row (cells as given); ``numeric`` columns align right."""
    header = list(header)
    numeric = list(numeric) if numeric is not None else [False] * len(header)
    if len(numeric) != len(header):
        raise ValueError(f"numeric has {len(numeric)} entries for {len(header)} columns")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    for row in rows:
        row = list(row)
        if len(row) != len(header):
            raise ValueError(f"a row has {len(row)} cells for {len(header)} columns: {row!r}")
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


def mean_sd(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (0 for one value) and count of the finite ``values``."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return math.nan, math.nan, 0
    return statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else 0.0, len(finite)


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float, int]:
    """Mean, half-width of its ``level`` confidence interval (Student's t, ``n - 1`` degrees of freedom) and count of the finite ``values``.

    The half-width is ``t_{(1 + level) / 2, n - 1} * s / sqrt(n)``; it is ``nan`` for fewer than two values.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    from scipy.stats import t  # scipy comes with scikit-learn

    m, s, n = mean_sd(values)
    if n < 2:
        return m, math.nan, n
    return m, float(t.ppf((1.0 + level) / 2.0, n - 1)) * s / math.sqrt(n), n


def format_mean_sd(values: Sequence[float], digits: int = 1, scale: float = 1.0) -> str:
    """``"m ± s"`` of ``values * scale`` (just ``"m"`` for one value, ``"-"`` for none)."""
    m, s, n = mean_sd([v * scale for v in values if v is not None])
    if n == 0:
        return "-"
    return f"{m:.{digits}f}" if n == 1 else f"{m:.{digits}f} ± {s:.{digits}f}"


def run_summary(record: Any) -> dict[str, Any] | None:
    """A benchmark run record (a ``RunRecord`` or ``ShownRun``) summarised for the tables, or None for another kind of run."""
    block = benchmark_block(record.params)
    if block is None:
        return None
    return {"dataset": block["dataset"], "row": block["row"], "preset": block.get("preset"),
            "temperature": block.get("temperature"), "settings": block.get("settings", {}),
            "data": block.get("data", {}), "model": block.get("model", {}), "metrics": dict(record.metrics or {}),
            "history": list(record.history), "environment": dict(record.environment or {}),
            "path": str(record.path)}


def load_runs(*roots: str | Path) -> list[dict[str, Any]]:
    """Every complete benchmark run record under ``roots``, summarised (:func:`run_summary`)."""
    found = (run_summary(record) for root in roots for record in find_records(root, complete_only=True))
    return [run for run in found if run is not None]


def run_label(run: Mapping[str, Any]) -> str:
    """Where a recorded result comes from: machine, date, commit, data, backbone and preset (not the seed)."""
    env = run.get("environment") or {}
    data = run.get("data") or {}
    machine = env.get("device_name") or env.get("device") or "unknown machine"
    if (env.get("world_size") or 1) > 1:
        machine = f"{env['world_size']} x {machine}"
    date = str(env.get("date", "unknown date"))[:10]
    commit = str(env.get("git_commit") or "no commit")[:12]
    train = data.get("train", {}) or {}
    what = f"stand-in: {data['standin']}" if data.get("standin") else f"{data.get('dataset', run.get('dataset'))}"
    if train.get("num_images"):
        what += f", {train['num_images']} train images"
    if train.get("images_sha256"):
        what += f", data {str(train['images_sha256'])[:8]}"
    backbone = (run.get("model") or {}).get("backbone") or (run.get("settings") or {}).get("backbone")
    parts = [machine, date, f"commit {commit}", what]
    parts += [f"backbone {backbone}"] if backbone else []
    parts += [f"preset {run['preset']}"] if run.get("preset") else []
    return ", ".join(parts)


def _seed(run: Mapping[str, Any]) -> Any:
    return ((run.get("settings") or {}).get("train") or {}).get("seed")


def table_metrics(dataset: str) -> tuple[str, ...]:
    """The metrics of the paper's table for ``dataset``: NMI and Recall@K for its first three K."""
    check_choice("dataset", dataset, tuple(PAPER_RESULTS))
    return _KSOP if dataset == "sop" else _K4


def results_table(runs: Iterable[Mapping[str, Any]], dataset: str, metrics: Sequence[str] | None = None,
                  include_paper: bool = True) -> list[dict[str, Any]]:
    """Entries of a results table in percent: per row, the paper's numbers, then the recorded runs of it on ``dataset``.

    Runs with the same row and source (:func:`run_label`) are one entry over their seeds: each
    metric is the list of the seeds' values, ``seeds`` the seeds. Paper entries hold one value.
    """
    metrics = tuple(metrics or table_metrics(dataset))
    paper = PAPER_RESULTS.get(dataset, {})
    runs = sorted((r for r in runs if r.get("dataset") == dataset), key=lambda r: r.get("path", ""))
    out: list[dict[str, Any]] = []
    for row in _ROWS:
        if include_paper and row in paper:
            out.append({"row": row.upper(), "source": "paper", "seeds": [],
                        **{m: [paper[row][m]] if m in paper[row] else [] for m in metrics}})
        groups: dict[str, list[Mapping[str, Any]]] = {}
        for run in (r for r in runs if r.get("row") == row):
            groups.setdefault(run_label(run), []).append(run)
        for label, group in groups.items():
            out.append({"row": row.upper(), "source": label, "seeds": [_seed(r) for r in group],
                        **{m: [100.0 * r["metrics"][m] for r in group if m in r.get("metrics", {})]
                           for m in metrics}})
    if include_paper:
        for name, values in PAPER_BASELINES.get(dataset, {}).items():
            out.append({"row": name, "source": "paper (best prior)", "seeds": [],
                        **{m: [values[m]] if m in values else [] for m in metrics}})
    return out


def metric_title(name: str) -> str:
    """A metric's column title: NMI, R@K, MAP@R, R-Prec."""
    return {"nmi": "NMI", "map@r": "MAP@R", "r_precision": "R-Prec"}.get(name, name.replace("recall@", "R@"))


def results_markdown(table: Sequence[Mapping[str, Any]], metrics: Sequence[str] | None = None,
                     fmt: Callable[[Sequence[float]], str] | None = None) -> str:
    """A Markdown table of :func:`results_table` entries (mean ± sd over seeds), each source named once below it."""
    if not table:
        return "_No results to show._"
    metrics = list(metrics or [k for k in table[0] if k not in ("row", "source", "seeds")])
    fmt = fmt or (lambda values: format_mean_sd(values, digits=2))
    sources = list(dict.fromkeys(e["source"] for e in table))
    runs = [s for s in sources if not s.startswith("paper")]
    key = {s: s for s in sources} | {s: f"[{chr(ord('a') + i)}]" for i, s in enumerate(runs)}
    rows = [[e["row"], key[e["source"]], str(len(e["seeds"])) if e["seeds"] else "-"]
            + [fmt(e[m]) for m in metrics] for e in table]
    text = markdown_table(["row", "source", "seeds"] + [metric_title(m) for m in metrics], rows,
                          [False, False, True] + [True] * len(metrics))
    legend = [f"{key[s]} {s}" for s in runs]
    return text + ("\n\n" + "<br>".join(legend) if legend else "")
