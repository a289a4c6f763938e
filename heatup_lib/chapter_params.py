"""The chapters' parameters, declared and checked once: a chapter's first cell is ``use_parameters("02", globals())``.

Each chapter's ``parameters`` cell holds ``preset`` and its parameter names, each ``None`` ("take
the preset's value") unless papermill injected a value. :func:`use_parameters` fills every
``None`` from ``params/<preset>.yaml``, checks every value (a bad injected value fails here, by
name) and writes the values back into the chapter's namespace.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any

import torch

from . import benchmark
from .checks import check_bool, check_choice, check_choices, check_float, check_int, check_str
from .mnist_recipe import MnistSettings
from .presets import PRESETS, load_preset
from .study import STUDY_MNIST_SIZES, mnist_parameters

__all__ = ["CHAPTER_PARAMETERS", "use_parameters"]


def _common(p: dict[str, Any]) -> None:
    if "retrain" in p:
        check_bool("retrain", p["retrain"])
    if "seed" in p:
        check_int("seed", p["seed"], min_value=0)
    for name in ("runs_dir", "records_dir"):
        if name in p:
            check_str(name, p[name], empty=False)


def _device(p: dict[str, Any]) -> None:
    check_str("device", p["device"])
    if p["device"].startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={p['device']!r} asks for a GPU, but torch sees none; use device='cpu'")


def _chapter_01(p: dict[str, Any]) -> None:
    check_int("num_classes", p["num_classes"], 2, 1000)
    check_int("num_samples", p["num_samples"], 200, 200_000)
    check_float("alpha_max", p["alpha_max"], 64.0, 1024.0)
    check_int("num_alphas", p["num_alphas"], 50, 20_000)
    check_int("num_grad_checks", p["num_grad_checks"], 1, 10_000)


def _chapter_02(p: dict[str, Any]) -> None:
    _device(p)
    check_str("mnist_root", p["mnist_root"])
    MnistSettings.from_parameters(p)  # the recipe checks its own values
    check_int("mnist_seeds", p["mnist_seeds"], 1, 20)
    check_int("mnist_processes", p["mnist_processes"], 1, 64)
    check_int("mnist_snapshot_size", p["mnist_snapshot_size"], 10, p["mnist_test_size"])
    check_int("mnist_panel_train_size", p["mnist_panel_train_size"], 100, 60000)
    check_int("mnist_panel_epochs", p["mnist_panel_epochs"], 1, 20)


def _chapter_03(p: dict[str, Any]) -> None:
    _device(p)
    check_choice("dataset", p["dataset"], benchmark.DATASETS)
    check_choices("rows", p["rows"], benchmark.ROWS)
    check_str("data_root", p["data_root"])
    if p["data_root"] == "" and p["dataset"] != "cub200":
        raise ValueError(f"dataset={p['dataset']!r} needs data_root; the stand-in has the CUB-200-2011 layout only")
    check_int("seeds", p["seeds"], 1, 20)
    check_int("processes", p["processes"], 1, 64)
    check_int("standin_classes", p["standin_classes"], 4, 200)
    check_int("standin_images_per_class", p["standin_images_per_class"], 2, 5000)
    check_bool("pretrained", p["pretrained"])
    overrides = {k: p[k] for k in benchmark.SETTING_NAMES if k in p}
    benchmark.settings_for(p["dataset"], p["preset"], device=p["device"], **overrides)


def _chapter_04(p: dict[str, Any]) -> None:
    pass


def _chapter_05(p: dict[str, Any]) -> None:
    check_int("study_seeds", p["study_seeds"], 1, 20)
    check_int("study_processes", p["study_processes"], 1, 64)
    _chapter_02({**mnist_parameters(p), "mnist_seeds": p["study_seeds"], "mnist_processes": p["study_processes"],
                 "mnist_panel_train_size": 100, "mnist_panel_epochs": 1})
    check_int("study_benchmark_epochs", p["study_benchmark_epochs"], 1, 1000)
    _chapter_03({**p, "rows": ["ln"], "seeds": p["study_seeds"], "processes": p["study_processes"],
                 "num_epochs": p["study_benchmark_epochs"]})


_MNIST_RECIPE = ("mnist_root", "mnist_batch_size", "mnist_lr", "mnist_heatup_alpha",
                 "mnist_alpha_factor", "mnist_lr_factor", "mnist_class_init", "mnist_snapshot_size")
_BENCHMARK = ("dataset", "data_root", "backbone", "batch_size", "embedding_dim", "image_size", "crop_size",
              "optimizer", "lr", "eval_every", "pretrained", "standin_classes", "standin_images_per_class")


# chapter prefix -> (its parameter names, its checks). Every name is also a key of params/*.yaml.
CHAPTER_PARAMETERS: dict[str, tuple[tuple[str, ...], Callable[[dict[str, Any]], None]]] = {
    "01": (("seed", "num_classes", "num_samples", "alpha_max", "num_alphas", "num_grad_checks"), _chapter_01),
    "02": (("seed", "runs_dir", "records_dir", "retrain", "device", "mnist_root", "mnist_train_size", "mnist_test_size",
            "mnist_num_epochs", "mnist_heatup_epoch", "mnist_batch_size", "mnist_lr", "mnist_alphas",
            "mnist_heatup_alpha", "mnist_alpha_factor", "mnist_lr_factor", "mnist_class_init",
            "mnist_warmup_images", "mnist_seeds", "mnist_processes",
            "mnist_snapshot_size", "mnist_panel_train_size", "mnist_panel_epochs"), _chapter_02),
    "03": (("seed", "runs_dir", "records_dir", "retrain", "device", "dataset", "rows", "data_root", "seeds", "processes",
            "backbone", "num_epochs", "batch_size", "embedding_dim", "image_size", "crop_size", "optimizer",
            "lr", "eval_every", "pretrained", "standin_classes", "standin_images_per_class"), _chapter_03),
    "04": (("runs_dir", "records_dir"), _chapter_04),
    "05": (("seed", "runs_dir", "records_dir", "retrain", "device", "study_seeds", "study_processes", "study_alphas",
            *(f"study_mnist_{k}" for k in STUDY_MNIST_SIZES), "study_benchmark_epochs", *_MNIST_RECIPE, *_BENCHMARK),
           _chapter_05),
}


def use_parameters(chapter: str, namespace: MutableMapping[str, Any]) -> dict[str, Any]:
    """Fill the chapter's ``None`` parameters in ``namespace`` from its preset, check them all, and return them.

    Raises ``ValueError`` naming the first bad parameter and its value.
    """
    check_choice("chapter", chapter, tuple(CHAPTER_PARAMETERS))
    names, check = CHAPTER_PARAMETERS[chapter]
    preset = check_choice("preset", namespace.get("preset"), PRESETS)
    defaults = load_preset(preset)
    values: dict[str, Any] = {"preset": preset}
    for name in names:
        value = namespace.get(name)
        values[name] = defaults.get(name) if value is None else value
    missing = [n for n in names if values[n] is None and n not in _MAY_BE_NONE]
    if missing:
        raise ValueError(f"parameter(s) {missing} are neither set nor in params/{preset}.yaml")
    try:
        _common(values)
        check(values)
    except ValueError as err:
        raise ValueError(f"bad parameter: {err}") from None
    namespace.update(values)
    return values


_MAY_BE_NONE = frozenset({"optimizer", "lr"})  # chapter 3: None is "the dataset's recipe"
