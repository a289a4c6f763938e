"""The chapters' parameters: None takes the preset's value, and a bad injected value fails right after the parameters, by name."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from heatup_lib.reproduce import KERNEL_NAME, chapters, load_preset, project_root

ROOT = project_root()
# One bad value per chapter, each naming a parameter that chapter reads.
BAD = {
    "01": ("num_alphas", -5, "num_alphas must be an integer >= 50 and <= 20000, got -5"),
    "02": ("mnist_train_size", "many", "mnist_train_size must be an integer >= 100 and <= 60000, got 'many'"),
    "03": ("dataset", "imagenet", "Unknown value 'imagenet' for argument dataset"),
    "04": ("preset", "fast", "Unknown value 'fast' for argument preset"),
    "05": ("study_seeds", 0, "study_seeds must be an integer >= 1 and <= 20, got 0"),
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


def test_none_takes_the_presets_value_and_a_given_value_is_kept() -> None:
    from heatup_lib.chapter_params import use_parameters

    namespace = {"preset": "smoke", "seed": None, "num_classes": 10, "num_samples": None, "alpha_max": None,
                 "num_alphas": None, "num_grad_checks": None}
    values = use_parameters("01", namespace)
    smoke = load_preset("smoke", ROOT)
    assert namespace["num_classes"] == 10 and namespace["num_samples"] == smoke["num_samples"]
    assert values == {k: namespace[k] for k in values} and namespace["preset"] == "smoke"
    namespace = {"preset": "smoke", "num_classes": 1}
    with pytest.raises(ValueError, match="bad parameter: num_classes must be an integer >= 2"):
        use_parameters("01", namespace)
    with pytest.raises(ValueError, match="Unknown value '07' for argument chapter"):
        use_parameters("07", {"preset": "smoke"})


def test_every_chapter_declares_the_parameters_the_library_checks() -> None:
    """The parameters cell of each chapter holds exactly the names its checks read, all None, and preset."""
    from heatup_lib.chapter_params import CHAPTER_PARAMETERS

    for notebook in chapters(ROOT):
        cell = next(c for c in nbformat.read(notebook, as_version=4).cells
                    if "parameters" in c.metadata.get("tags", []))
        namespace: dict = {}
        exec(cell.source, namespace)  # noqa: S102 - the cell holds literals only
        names, _ = CHAPTER_PARAMETERS[notebook.name[:2]]
        declared = {k for k in namespace if not k.startswith("__")}
        assert declared == {"preset", *names}, notebook.name
        assert namespace["preset"] == "default" and all(namespace[n] is None for n in names), notebook.name
        smoke = load_preset("smoke", ROOT)
        assert all(n in smoke for n in names), [n for n in names if n not in smoke]
