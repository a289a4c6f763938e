"""Batch reproduction: execute the book's chapters with papermill on a parameter preset."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .presets import PRESETS, load_preset, project_root

__all__ = ["PRESETS", "KERNEL_NAME", "ChapterRun", "project_root", "chapters", "load_preset", "run_chapters",
           "inject_parameters", "summary_table"]

log = logging.getLogger(__name__)

KERNEL_NAME = "heatup"


@dataclass
class ChapterRun:
    """The outcome of executing one chapter."""

    chapter: str
    preset: str
    status: str          # "ok", "failed" or "skipped"
    seconds: float
    output: Path
    error: str = ""


def chapters(root: Path | None = None, only: list[str] | None = None) -> list[Path]:
    """The chapter notebooks in reading order, optionally those whose name starts with one of ``only``."""
    root = Path(root or project_root())
    found = sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if only:
        chosen = [p for p in found if any(p.name.startswith(o) for o in only)]
        unknown = [o for o in only if not any(p.name.startswith(o) for p in found)]
        if unknown:
            raise ValueError(f"--only {unknown} matches no chapter; chapters are {[p.stem for p in found]}")
        found = chosen
    return found


def inject_parameters(notebook: Path, output: Path, parameters: dict[str, Any]) -> Path:
    """Write ``notebook`` to ``output`` with papermill's injected-parameters cell, without executing it."""
    import papermill as pm

    output.parent.mkdir(parents=True, exist_ok=True)
    pm.execute_notebook(str(notebook), str(output), parameters=parameters, prepare_only=True,
                        kernel_name=KERNEL_NAME, progress_bar=False)
    return output


def _check_override_names(overrides: dict[str, Any], selected: list[Path]) -> None:
    """Refuse an override that none of the ``selected`` chapters declares (papermill only warns)."""
    from .chapter_params import CHAPTER_PARAMETERS

    prefixes = [nb.name[:2] for nb in selected if nb.name[:2] in CHAPTER_PARAMETERS]
    accepted = sorted({name for prefix in prefixes for name in CHAPTER_PARAMETERS[prefix][0]})
    unknown = sorted(set(overrides) - set(accepted))
    if unknown:
        chosen = ", ".join(nb.stem for nb in selected)
        raise ValueError(f"parameter(s) {unknown} are declared by none of the chapters run "
                         f"({chosen}); accepted: {accepted}")


def run_chapters(preset: str, out: Path, only: list[str] | None = None, keep_going: bool = False,
                 overrides: dict[str, Any] | None = None, root: Path | None = None) -> list[ChapterRun]:
    """Execute the chapters in order with papermill; each runs in ``notebooks/`` as in JupyterLab."""
    import papermill as pm

    root = Path(root or project_root())
    preset_params = load_preset(preset, root)
    selected = chapters(root, only)
    _check_override_names(overrides or {}, selected)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results: list[ChapterRun] = []
    failed = False
    for nb in selected:
        target = out / nb.name
        if failed and not keep_going:
            results.append(ChapterRun(nb.stem, preset, "skipped", 0.0, target))
            continue
        log.info("executing %s on preset %s", nb.name, preset)
        start = time.perf_counter()
        try:
            # The preset serves every chapter: give each only the keys it declares (overrides always).
            declared = pm.inspect_notebook(str(nb))
            params = {k: v for k, v in preset_params.items() if k in declared} | dict(overrides or {})
            pm.execute_notebook(str(nb), str(target), parameters=params, kernel_name=KERNEL_NAME,
                                cwd=str(nb.parent), progress_bar=False)
            results.append(ChapterRun(nb.stem, preset, "ok", time.perf_counter() - start, target))
        except Exception as err:  # papermill raises PapermillExecutionError, but also kernel errors
            failed = True
            first = str(err).strip().splitlines()
            results.append(ChapterRun(nb.stem, preset, "failed", time.perf_counter() - start, target,
                                      first[-1] if first else type(err).__name__))
    return results


def summary_table(results: list[ChapterRun]) -> str:
    """A plain-text table: chapter, preset, status, time, output (and the error of failed chapters)."""
    rows = [("chapter", "preset", "status", "time", "output")]
    rows += [(r.chapter, r.preset, r.status, f"{r.seconds:.1f} s", str(r.output)) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += [f"{r.chapter}: {r.error}" for r in results if r.error]
    return "\n".join(lines)


# --- staging the book ----------------------------------------------------------------------------

BOOK_SOURCES = ("_config.yml", "_toc.yml", "book")


def _toc_files(toc: Any) -> list[str]:
    """Every ``file:`` entry of a jupyter-book ``_toc.yml`` (root, parts, chapters, sections)."""
    found: list[str] = []
    if isinstance(toc, dict):
        for key, value in toc.items():
            if key in ("file", "root") and isinstance(value, str):
                found.append(value)
            else:
                found += _toc_files(value)
    elif isinstance(toc, list):
        for item in toc:
            found += _toc_files(item)
    return found


def stage_book(executed_dir: str | Path, out_dir: str | Path, root: str | Path | None = None) -> Path:
    """Assemble the book's sources in ``out_dir``: the configuration, ``book/``, and the executed chapters as ``notebooks/``.

    The clean notebooks are never staged: a page of the book is always an executed notebook, as
    ``heatup_lib.pages`` shows it (papermill's parameters cell hidden, progress bars left out). Every
    file that ``_toc.yml`` lists must be there, so that a chapter that failed to execute stops the
    build here with its name instead of as a Sphinx warning.
    """
    import shutil
    import tempfile

    from .pages import write_page_notebook

    root = Path(root) if root is not None else project_root()
    executed_dir, out_dir = Path(executed_dir), Path(out_dir)
    if not executed_dir.is_dir():
        raise FileNotFoundError(f"no executed notebooks in {executed_dir}: run `heatup reproduce --out {executed_dir}` first")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        for name in BOOK_SOURCES:
            source = root / name
            if source.is_dir():
                shutil.copytree(source, staging / name, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
            else:
                shutil.copy2(source, staging / name)
        (staging / "notebooks").mkdir()
        for nb in sorted(executed_dir.glob("*.ipynb")):  # the pages' copies: no injected parameters, no progress bars
            write_page_notebook(nb, staging / "notebooks" / nb.name)
        toc = yaml.safe_load((staging / "_toc.yml").read_text())
        missing = [f for f in _toc_files(toc)
                   if not any((staging / f).with_suffix(ext).is_file() or (staging / (f + ext)).is_file()
                              for ext in (".md", ".ipynb"))]
        if missing:
            raise FileNotFoundError(f"_toc.yml lists {missing}, which neither book/ nor the executed notebooks in "
                                    f"{executed_dir} hold; run `heatup reproduce` for the missing chapters")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    log.info("book sources staged in %s", out_dir)
    return out_dir


__all__ += ["BOOK_SOURCES", "stage_book"]
