"""A bad parameter injected by papermill fails in the chapter's first cell after the parameters, by name."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from heatup_lib.reproduce import KERNEL_NAME, chapters, load_preset, project_root

ROOT = project_root()
# One bad value per chapter, each naming a parameter that chapter reads.
BAD = {
    "01": ("num_alphas", -5, "num_alphas=-5"),
    "02": ("mnist_train_size", "many", "mnist_train_size='many'"),
    "03": ("dataset", "imagenet", "dataset='imagenet'"),
    "04": ("preset", "fast", "preset='fast'"),
}


@pytest.mark.parametrize("notebook", chapters(ROOT), ids=[p.stem for p in chapters(ROOT)])
def test_bad_parameter_fails_right_after_the_parameters(notebook: Path, tmp_path: Path) -> None:
    import papermill as pm

    name, value, shown = BAD[notebook.name[:2]]
    params = {**load_preset("smoke", ROOT), "runs_dir": str(tmp_path / "runs"), name: value}
    out = tmp_path / notebook.name
    with pytest.raises(pm.PapermillExecutionError) as info:
        pm.execute_notebook(str(notebook), str(out), parameters=params, kernel_name=KERNEL_NAME,
                            cwd=str(notebook.parent), progress_bar=False)
    assert info.value.ename == "ValueError" and shown in info.value.evalue, info.value.evalue
    executed = nbformat.read(out, as_version=4)
    code = [i for i, c in enumerate(executed.cells) if c.cell_type == "code"]
    injected = next(i for i, c in enumerate(executed.cells) if "injected-parameters" in c.metadata.get("tags", []))
    first_after = next(i for i in code if i > injected)
    failed = [i for i in code if any(o.get("output_type") == "error" for o in executed.cells[i].get("outputs", []))]
    assert failed == [first_after], f"expected the error in cell {first_after}, got it in {failed}"
