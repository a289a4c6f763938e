"""Parameter presets: the files ``params/<preset>.yaml``, the one source of every chapter's and recipe's settings.

One file serves every chapter (papermill injects into each chapter the keys it declares), the
benchmark recipe (:func:`heatup_lib.benchmark.settings_for` reads its keys) and the MNIST recipe.
Relative paths in a preset are relative to ``notebooks/``, where the chapters run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .checks import check_choice

__all__ = ["PRESETS", "project_root", "preset_path", "load_preset"]

# smoke: seconds, for the tests; default: what the book runs on a laptop CPU; long: chapter 2's
# CPU runs of about two hours; paper: the paper's settings, for a GPU.
PRESETS: tuple[str, ...] = ("smoke", "default", "long", "paper")


def project_root() -> Path:
    """The folder holding ``notebooks/`` and ``params/`` (the repository, for an editable install)."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here, Path.cwd(), Path.cwd().parent):
        if (candidate / "notebooks").is_dir() and (candidate / "params").is_dir():
            return candidate
    raise FileNotFoundError(f"cannot find the project's notebooks/ and params/ folders near {here} "
                            f"or in {Path.cwd()}")


def preset_path(preset: str, root: Path | None = None) -> Path:
    """The file of ``preset``."""
    check_choice("preset", preset, PRESETS)
    return Path(root or project_root()) / "params" / f"{preset}.yaml"


def load_preset(preset: str, root: Path | None = None) -> dict[str, Any]:
    """The parameters of ``params/<preset>.yaml`` as a dict (with ``preset`` set to its name)."""
    path = preset_path(preset, root)
    try:
        params = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path} is not valid YAML: {err}") from err
    if not isinstance(params, dict):
        raise ValueError(f"{path} must hold a mapping of parameter names to values, got {type(params).__name__}")
    params["preset"] = preset
    return params
