"""Every chapter under nbval on the smoke preset: papermill injects params/smoke.yaml, nbval executes.

nbval runs with ``--nbval-lax``: cell outputs are not compared (they hold trained numbers and figures),
but every cell must run without error, and the chapters' ``assert`` cells are the checks.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from heatup_lib.reproduce import KERNEL_NAME, chapters, inject_parameters, load_preset, project_root

ROOT = project_root()
CHAPTERS = chapters(ROOT)


@pytest.mark.notebook
@pytest.mark.parametrize("notebook", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_runs_under_nbval(notebook: Path, tmp_path: Path) -> None:
    params = load_preset("smoke", ROOT)
    # Fresh run folders, so that the test trains for real instead of loading earlier records; paths
    # absolute because nbval runs the kernel in the injected copy's folder.
    params["runs_dir"] = str(tmp_path / "runs")
    params["records_dir"] = str(ROOT / "records")
    target = inject_parameters(notebook, tmp_path / notebook.name, params)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-kernel-name", KERNEL_NAME,
         "-p", "no:cacheprovider", "-q", str(target)],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, f"{notebook.name} failed under nbval:\n{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}"


def test_every_chapter_has_one_parameters_cell() -> None:
    import nbformat

    assert CHAPTERS, "no chapter notebooks found"
    for nb_path in CHAPTERS:
        nb = nbformat.read(nb_path, as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, f"{nb_path.name}: {len(tagged)} cells tagged 'parameters', papermill needs one"
        assert "preset" in tagged[0].source, f"{nb_path.name}: the parameters cell must define preset"
        assert nb.metadata.get("kernelspec", {}).get("name") == KERNEL_NAME, f"{nb_path.name}: kernel must be {KERNEL_NAME!r}"
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{nb_path.name} is committed with outputs"
