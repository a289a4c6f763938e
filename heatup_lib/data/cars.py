"""Cars196 (Stanford Cars) from ``cars_annos.mat`` or the Kaggle layout, with the zero-shot split 1-98 / 99-196."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ._common import (
    ImageListDataset,
    ListFileError,
    UniqueImages,
    check_relpath,
)

__all__ = ["Cars196"]

_KAGGLE_TRAIN_ANNOS = ("devkit/cars_train_annos.mat", "car_devkit/devkit/cars_train_annos.mat", "cars_train_annos.mat")
_KAGGLE_TEST_ANNOS = (
    "cars_test_annos_withlabels.mat",
    "devkit/cars_test_annos_withlabels.mat",
    "car_devkit/devkit/cars_test_annos_withlabels.mat",
)
_KAGGLE_META = ("devkit/cars_meta.mat", "car_devkit/devkit/cars_meta.mat", "cars_meta.mat")


def _loadmat(path: Path) -> dict[str, Any]:
    from scipy.io import loadmat

    try:
        return loadmat(str(path))
    except Exception as exc:  # scipy raises several unrelated types for a bad file
        raise ListFileError(f"{path}: not a readable MATLAB file ({type(exc).__name__}: {exc})") from exc


def _field(entry: Any, name: str, path: Path, k: int) -> Any:
    try:
        value = np.asarray(entry[name]).ravel()
    except (ValueError, KeyError, IndexError):
        raise ListFileError(f"{path}: annotation {k}: no field {name!r}") from None
    if value.size != 1:
        raise ListFileError(f"{path}: annotation {k}: field {name!r} is empty or not a scalar: {value!r}")
    return value[0]


def _annotations(path: Path) -> np.ndarray:
    mat = _loadmat(path)
    if "annotations" not in mat:
        raise ListFileError(f"{path}: no variable 'annotations' (found {sorted(k for k in mat if not k.startswith('__'))})")
    annos = np.asarray(mat["annotations"]).ravel()
    if annos.dtype.names is None:
        raise ListFileError(f"{path}: 'annotations' is not a struct array")
    return annos


def _class_of(entry: Any, path: Path, k: int) -> int:
    value = _field(entry, "class", path, k)
    try:
        as_float = float(value)
    except (TypeError, ValueError):
        raise ListFileError(f"{path}: annotation {k}: class {value!r} is not a number") from None
    if as_float != int(as_float):
        raise ListFileError(f"{path}: annotation {k}: class {value!r} is not an integer")
    label = int(as_float)
    if not 1 <= label <= Cars196.num_total_classes:
        raise ListFileError(f"{path}: annotation {k}: class id {label} out of range [1, {Cars196.num_total_classes}]")
    return label


def _class_names(path: Path) -> dict[int, str]:
    mat = _loadmat(path)
    if "class_names" not in mat:
        return {}
    names = np.asarray(mat["class_names"]).ravel()
    return {i + 1: str(np.asarray(n).ravel()[0]) if np.asarray(n).size else str(i + 1) for i, n in enumerate(names)}


class Cars196(ImageListDataset):
    """Stanford Cars (196 classes, 16,185 images) with the paper's class-disjoint split (SPEC §6).

    Two layouts are read, under ``root`` or ``root/stanford_cars``:

    * official (``car_ims.tgz`` + ``cars_annos.mat``): ``cars_annos.mat`` whose ``annotations``
      struct has ``relative_im_path`` (``car_ims/000001.jpg``), ``class`` (1..196) and ``test``,
      beside ``car_ims/``;
    * Kaggle / torchvision (``StanfordCars``): ``cars_train/`` and ``cars_test/`` (either flat or
      nested as ``cars_train/cars_train/``), ``devkit/cars_train_annos.mat`` (or
      ``car_devkit/devkit/``), ``cars_test_annos_withlabels.mat`` (at the root or in the devkit;
      the devkit's own ``cars_test_annos.mat`` has no labels) and optionally ``devkit/cars_meta.mat``
      for class names. Annotation fields ``fname`` and ``class``. The train and test annotations
      together are the same 16,185 images.

    The official train/test flag and the bounding boxes are ignored: ``split="train"`` holds
    classes 1-98 (8,054 images), ``"test"`` classes 99-196 (8,131), ``"all"`` both. Labels are
    0..C-1 within the split; ``class_ids`` keeps the original ids. Grayscale images become RGB.
    """

    name = "cars196"
    num_total_classes = 196
    train_classes = range(1, 99)
    mirrors_images = (
        "http://ai.stanford.edu/~jkrause/car196/car_ims.tgz",
        "http://imagenet.stanford.edu/internal/car196/car_ims.tgz",
    )
    mirrors_annos = (
        "http://ai.stanford.edu/~jkrause/car196/cars_annos.mat",
        "http://imagenet.stanford.edu/internal/car196/cars_annos.mat",
    )
    md5_images = "d5c8f0aa497503f355e17dc7886c3f14"
    md5_annos = "b407c6086d669747186bd1d764ff9dbc"
    where = (
        "the official car_ims.tgz + cars_annos.mat (https://ai.stanford.edu/~jkrause/cars/car_dataset.html, "
        "addresses often dead) or a Kaggle mirror such as 'jessicali9530/stanford-cars-dataset' plus "
        "'cars_test_annos_withlabels.mat' (the layout torchvision.datasets.StanfordCars reads)."
    )
    expected = (
        "official: cars_annos.mat and car_ims/*.jpg",
        "or Kaggle: cars_train/, cars_test/, devkit/cars_train_annos.mat, cars_test_annos_withlabels.mat "
        "(optionally inside stanford_cars/)",
    )

    def archives(self) -> list[tuple[tuple[str, ...], str, str]]:
        """``cars_annos.mat`` and ``car_ims.tgz`` (the official layout), from their mirrors."""
        return [(self.mirrors_annos, "cars_annos.mat", self.md5_annos),
                (self.mirrors_images, "car_ims.tgz", self.md5_images)]

    def _missing_hint(self) -> str:
        for base in (self.root, self.root / "stanford_cars"):
            if (base / "cars_annos.mat").is_file() and not (base / "car_ims").is_dir():
                return (f"Hint: {base / 'cars_annos.mat'} is there but car_ims/ is not: extract "
                        "car_ims.tgz beside it, or, with the Kaggle folders cars_train/ and "
                        "cars_test/, add cars_test_annos_withlabels.mat (their numbering differs "
                        "from car_ims/).")
            if self._first(base, _KAGGLE_TRAIN_ANNOS) and not self._first(base, _KAGGLE_TEST_ANNOS):
                return ("Hint: the devkit is there but not cars_test_annos_withlabels.mat (the "
                        "devkit's cars_test_annos.mat has no labels); it is published "
                        "separately on Kaggle.")
        return ""

    def _load(self, found: tuple[str, Path]) -> None:
        self.layout, self.base = found
        records, names = self._read_official(self.base) if self.layout == "official" else self._read_kaggle(self.base)
        self._set_records(records, names, self.train_classes)

    # ------------------------------------------------------------------ layouts
    def _find_base(self) -> tuple[str, Path] | None:
        for base in (self.root, self.root / "stanford_cars"):
            if (base / "cars_annos.mat").is_file() and (base / "car_ims").is_dir():
                return "official", base
            if self._kaggle_files(base) is not None:
                return "kaggle", base
        return None

    @staticmethod
    def _first(base: Path, candidates: tuple[str, ...]) -> Path | None:
        return next((base / c for c in candidates if (base / c).is_file()), None)

    @staticmethod
    def _image_dir(base: Path, name: str) -> Path | None:
        nested, flat = base / name / name, base / name
        return nested if nested.is_dir() else flat if flat.is_dir() else None

    @classmethod
    def _kaggle_files(cls, base: Path) -> tuple[Path, Path, Path, Path] | None:
        train_annos, test_annos = cls._first(base, _KAGGLE_TRAIN_ANNOS), cls._first(base, _KAGGLE_TEST_ANNOS)
        train_dir, test_dir = cls._image_dir(base, "cars_train"), cls._image_dir(base, "cars_test")
        if train_annos and test_annos and train_dir and test_dir:
            return train_annos, test_annos, train_dir, test_dir
        return None

    @classmethod
    def _read_official(cls, base: Path) -> tuple[list[tuple[Path, int]], dict[int, str]]:
        path = base / "cars_annos.mat"
        annos = _annotations(path)
        records, unique = [], UniqueImages()
        for k, entry in enumerate(annos, start=1):
            rel = str(_field(entry, "relative_im_path", path, k))
            label = _class_of(entry, path, k)
            where = f"annotation {k}: {rel}"
            records.append((check_relpath(rel, base, path, k, where, unique), label))
        return records, _class_names(path)

    @classmethod
    def _read_kaggle(cls, base: Path) -> tuple[list[tuple[Path, int]], dict[int, str]]:
        files = cls._kaggle_files(base)
        assert files is not None
        train_annos, test_annos, train_dir, test_dir = files
        records, unique = [], UniqueImages()
        for path, folder in ((train_annos, train_dir), (test_annos, test_dir)):
            for k, entry in enumerate(_annotations(path), start=1):
                fname = str(_field(entry, "fname", path, k))
                label = _class_of(entry, path, k)
                where = f"annotation {k}: {fname}"
                records.append((check_relpath(fname, folder, path, k, where, unique), label))
        meta = cls._first(base, _KAGGLE_META)
        return records, _class_names(meta) if meta else {}
