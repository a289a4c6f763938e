"""Small trees in each benchmark's official on-disk layout, for the tests and the data benchmarks (not part of the library).

The images are real files of varied sizes and modes (RGB, grayscale and CMYK JPEGs, and a PNG
behind a ``.jpg`` name); class ids span each dataset's real range so that the class-disjoint
split logic is exercised with few images.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from heatup_lib.data.sop import SOP_CATEGORIES

__all__ = [
    "IMAGE_KINDS",
    "write_cub_tree",
    "write_cars_tree",
    "write_sop_tree",
    "spread_class_ids",
]

# The storage kind of the i-th image of a tree cycles through this list.
IMAGE_KINDS = ("rgb", "gray", "rgb", "cmyk", "rgb", "png", "rgb")


def spread_class_ids(num_classes: int, train_range: tuple[int, int], test_range: tuple[int, int]) -> list[int]:
    """Pick ``num_classes`` ids: half spread evenly over ``train_range``, the rest over ``test_range``."""
    n_train = (num_classes + 1) // 2
    n_test = num_classes - n_train
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (one train and one test class), got {num_classes}")
    for n, (lo, hi) in ((n_train, train_range), (n_test, test_range)):
        if n > hi - lo + 1:
            raise ValueError(f"num_classes={num_classes} needs {n} ids in [{lo}, {hi}], which has {hi - lo + 1}")
    ids = [int(v) for v in np.linspace(train_range[0], train_range[1], n_train).round()]
    ids += [int(v) for v in np.linspace(test_range[0], test_range[1], n_test).round()]
    return ids


def _pattern(rng: np.random.Generator, class_id: int, width: int, height: int) -> np.ndarray:
    """An RGB uint8 (H, W, 3) picture: a class-tinted gradient with blocks and noise."""
    tint = np.array([(class_id * 37) % 256, (class_id * 91) % 256, (class_id * 53) % 256], dtype=np.float64)
    yy, xx = np.mgrid[0:height, 0:width]
    img = 0.5 * tint + 60.0 * np.stack([xx / max(width - 1, 1), yy / max(height - 1, 1), (xx + yy) / (width + height)], -1)
    for _ in range(3):
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        img[y0 : y0 + height // 3, x0 : x0 + width // 3] = rng.integers(0, 256, 3)
    img += rng.normal(0.0, 12.0, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _save(rgb: np.ndarray, path: Path, kind: str) -> None:
    """Write ``rgb`` to ``path`` stored as ``kind`` (see ``IMAGE_KINDS``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(rgb, mode="RGB")
    if kind == "rgb":
        img.save(path, format="JPEG", quality=90)
    elif kind == "gray":
        img.convert("L").save(path, format="JPEG", quality=90)
    elif kind == "cmyk":
        img.convert("CMYK").save(path, format="JPEG", quality=90)
    elif kind == "png":  # a PNG behind a .jpg name, with an alpha channel
        rgba = img.convert("RGBA")
        alpha = np.full(rgb.shape[:2], 255, dtype=np.uint8)
        alpha[: rgb.shape[0] // 4] = 128
        rgba.putalpha(Image.fromarray(alpha, mode="L"))
        rgba.save(path, format="PNG")
    else:
        raise ValueError(f"kind must be one of {IMAGE_KINDS}, got {kind!r}")


def _sizes(rng: np.random.Generator, min_size: int, max_size: int) -> tuple[int, int]:
    if not 1 <= min_size <= max_size:
        raise ValueError(f"need 1 <= min_size <= max_size, got {min_size}, {max_size}")
    return int(rng.integers(min_size, max_size + 1)), int(rng.integers(min_size, max_size + 1))


def write_cub_tree(
    root: str | os.PathLike,
    num_classes: int = 200,
    images_per_class: int = 1,
    seed: int = 0,
    min_size: int = 24,
    max_size: int = 64,
) -> Path:
    """Write ``root/CUB_200_2011/`` with the official list files and JPEGs; return ``root``."""
    root = Path(root)
    base = root / "CUB_200_2011"
    rng = np.random.default_rng(seed)
    class_ids = spread_class_ids(num_classes, (1, 100), (101, 200))
    folders = {c: f"{c:03d}.Bird_{c:03d}" for c in range(1, 201)}
    images, labels, split, boxes = [], [], [], []
    image_id = 0
    for c in class_ids:
        for k in range(images_per_class):
            image_id += 1
            rel = f"{folders[c]}/Bird_{c:03d}_{k:04d}_{1000 + image_id}.jpg"
            w, h = _sizes(rng, min_size, max_size)
            _save(_pattern(rng, c, w, h), base / "images" / rel, IMAGE_KINDS[(image_id - 1) % len(IMAGE_KINDS)])
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {c}")
            split.append(f"{image_id} {int(rng.integers(0, 2))}")
            boxes.append(f"{image_id} 1.0 2.0 {w - 2:.1f} {h - 3:.1f}")
    (base / "images.txt").write_text("\n".join(images) + "\n")
    (base / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (base / "train_test_split.txt").write_text("\n".join(split) + "\n")
    (base / "bounding_boxes.txt").write_text("\n".join(boxes) + "\n")
    (base / "classes.txt").write_text("\n".join(f"{c} {folders[c]}" for c in range(1, 201)) + "\n")
    return root


def _struct_array(rows: list[dict], fields: tuple[str, ...]) -> np.ndarray:
    """A (1, N) MATLAB struct array as scipy.io.savemat writes it (strings and 1x1 numbers)."""
    arr = np.empty((1, len(rows)), dtype=[(f, object) for f in fields])
    for i, row in enumerate(rows):
        for f in fields:
            value = row[f]
            arr[0, i][f] = np.array([value]) if isinstance(value, str) else np.array([[value]], dtype=np.uint16 if f.startswith("bbox") else np.uint8)
    return arr


def _class_names_cell(num: int = 196) -> np.ndarray:
    names = np.empty((1, num), dtype=object)
    for i in range(num):
        names[0, i] = f"Make{i + 1:03d} Model Sedan {1990 + i % 23}"
    return names


def write_cars_tree(
    root: str | os.PathLike,
    num_classes: int = 196,
    images_per_class: int = 1,
    seed: int = 0,
    layout: str = "official",
    min_size: int = 24,
    max_size: int = 64,
) -> Path:
    """Write a Cars196 tree in ``layout`` "official" (cars_annos.mat + car_ims/), "kaggle" or "torchvision"; return ``root``.

    "kaggle" nests as the Kaggle download does (``cars_train/cars_train/``,
    ``car_devkit/devkit/``, ``cars_test_annos_withlabels.mat`` at the root); "torchvision" is
    ``stanford_cars/`` with flat ``cars_train/``, ``cars_test/``, ``devkit/``.
    """
    from scipy.io import savemat

    layouts = ("official", "kaggle", "torchvision")
    if layout not in layouts:
        raise ValueError(f"layout must be one of {layouts}, got {layout!r}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    class_ids = spread_class_ids(num_classes, (1, 98), (99, 196))
    items = []  # (class id, official test flag, rgb)
    for c in class_ids:
        for _ in range(images_per_class):
            w, h = _sizes(rng, min_size, max_size)
            items.append((c, int(rng.integers(0, 2)), _pattern(rng, c, w, h)))
    order = rng.permutation(len(items))  # the official file is not sorted by class
    items = [items[i] for i in order]
    names = _class_names_cell()
    if layout == "official":
        rows = []
        for i, (c, test, rgb) in enumerate(items, start=1):
            rel = f"car_ims/{i:06d}.jpg"
            _save(rgb, root / rel, IMAGE_KINDS[(i - 1) % len(IMAGE_KINDS)])
            h, w = rgb.shape[:2]
            rows.append({"relative_im_path": rel, "bbox_x1": 1, "bbox_y1": 1, "bbox_x2": w - 1, "bbox_y2": h - 1, "class": c, "test": test})
        fields = ("relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test")
        savemat(str(root / "cars_annos.mat"), {"annotations": _struct_array(rows, fields), "class_names": names})
        return root
    base = root / "stanford_cars" if layout == "torchvision" else root
    devkit = base / ("devkit" if layout == "torchvision" else "car_devkit/devkit")
    devkit.mkdir(parents=True, exist_ok=True)
    fields = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")
    per_split: dict[str, list[dict]] = {"train": [], "test": []}
    n = 0
    for c, test, rgb in items:
        part = "test" if test else "train"
        rows = per_split[part]
        fname = f"{len(rows) + 1:05d}.jpg"
        folder = base / f"cars_{part}" / (f"cars_{part}" if layout == "kaggle" else "")
        _save(rgb, folder / fname, IMAGE_KINDS[n % len(IMAGE_KINDS)])
        n += 1
        h, w = rgb.shape[:2]
        rows.append({"bbox_x1": 1, "bbox_y1": 1, "bbox_x2": w - 1, "bbox_y2": h - 1, "class": c, "fname": fname})
    for part in ("train", "test"):  # an empty part still gets its (empty) folder
        (base / f"cars_{part}" / (f"cars_{part}" if layout == "kaggle" else "")).mkdir(parents=True, exist_ok=True)
    savemat(str(devkit / "cars_train_annos.mat"), {"annotations": _struct_array(per_split["train"], fields)})
    unlabelled = [{k: v for k, v in r.items() if k != "class"} for r in per_split["test"]]
    savemat(str(devkit / "cars_test_annos.mat"), {"annotations": _struct_array(unlabelled, tuple(f for f in fields if f != "class"))})
    savemat(str(base / "cars_test_annos_withlabels.mat"), {"annotations": _struct_array(per_split["test"], fields)})
    savemat(str(devkit / "cars_meta.mat"), {"class_names": names})
    return root


def write_sop_tree(
    root: str | os.PathLike,
    num_classes: int = 24,
    images_per_class: int = 2,
    seed: int = 0,
    min_size: int = 24,
    max_size: int = 64,
) -> Path:
    """Write ``root/Stanford_Online_Products/`` with Ebay_train/test/info.txt and category folders; return ``root``."""
    root = Path(root)
    base = root / "Stanford_Online_Products"
    rng = np.random.default_rng(seed)
    class_ids = spread_class_ids(num_classes, (1, 11318), (11319, 22634))
    header = "image_id class_id super_class_id path"
    lines: dict[str, list[str]] = {"train": [], "test": []}
    info: list[str] = []
    n = 0
    for c in class_ids:
        super_id = 1 + (c * 7) % len(SOP_CATEGORIES)
        product = int(rng.integers(10**11, 10**12))
        part = "train" if c <= 11318 else "test"
        for k in range(images_per_class):
            rel = f"{SOP_CATEGORIES[super_id - 1]}_final/{product}_{k}.JPG"
            w, h = _sizes(rng, min_size, max_size)
            _save(_pattern(rng, c, w, h), base / rel, IMAGE_KINDS[n % len(IMAGE_KINDS)])
            n += 1
            lines[part].append(f"{len(lines[part]) + 1} {c} {super_id} {rel}")
            info.append(f"{n} {c} {super_id} {rel}")
    (base / "Ebay_train.txt").write_text("\n".join([header] + lines["train"]) + "\n")
    (base / "Ebay_test.txt").write_text("\n".join([header] + lines["test"]) + "\n")
    (base / "Ebay_info.txt").write_text("\n".join([header] + info) + "\n")
    return root
