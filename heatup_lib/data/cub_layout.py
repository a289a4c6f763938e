"""A writer of the CUB-200-2011 layout for any images: what the stand-in is written through, as the real data is read."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
from PIL import Image

from ..checks import check_int

__all__ = ["Box", "write_cub_layout"]

Box = tuple[float, float, float, float]  # x, y, width, height in pixels (CUB's bounding_boxes.txt)


def write_cub_layout(root: str | os.PathLike, items: Iterable[tuple[int, np.ndarray, Box | None]],
                     class_names: Mapping[int, str], *, quality: int = 90,
                     metadata: Mapping | None = None) -> Path:
    """Write images with labels as a CUB-200-2011 tree ``root/CUB_200_2011/``; return ``root``.

    ``items`` yields ``(class_id, uint8 (H, W, 3) image, box or None)`` with class ids in
    1..200 (1-100 are the training split); ``class_names`` maps every id used to an ASCII name
    (folders are ``NNN.name``). Written: ``images/NNN.name/name_KKKK.jpg`` (JPEG ``quality``),
    ``images.txt``, ``image_class_labels.txt``, ``train_test_split.txt`` (1 for ids <= 100),
    ``bounding_boxes.txt`` (``x y w h``; the whole image when the box is None), ``classes.txt`` and,
    given ``metadata``, ``standin.json``. The tree is built in a temporary folder beside it and
    moved into place at the end, so it is complete or absent; an existing tree raises
    ``FileExistsError``.
    """
    quality = check_int("quality", quality, 1, 100)
    for cid, name in class_names.items():
        check_int("class id", cid, 1, 200)
        ok = isinstance(name, str) and name and all(c.isascii() and (c.isalnum() or c in "_-")
                                                    for c in name)
        if not ok:
            raise ValueError(f"class name for id {cid} must be a non-empty ASCII word "
                             f"([A-Za-z0-9_-]), got {name!r}")
    root = Path(root)
    final = root / "CUB_200_2011"
    if final.exists():
        raise FileExistsError(f"{final} already exists; delete it or write elsewhere")
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".CUB_200_2011.", suffix=".partial", dir=root))
    try:
        images, labels, split, boxes = [], [], [], []
        counts: dict[int, int] = {}
        for image_id, (cid, rgb, box) in enumerate(items, start=1):
            if cid not in class_names:
                raise ValueError(f"item {image_id} has class id {cid!r}, which class_names lacks "
                                 f"(it has {sorted(class_names)[:5]}...)")
            rgb = np.asarray(rgb)
            if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
                raise ValueError(f"item {image_id}: image must be uint8 (H, W, 3), "
                                 f"got {rgb.dtype} {rgb.shape}")
            k = counts[cid] = counts.get(cid, 0) + 1
            folder = f"{cid:03d}.{class_names[cid]}"
            rel = f"{folder}/{class_names[cid]}_{k:04d}.jpg"
            path = tmp / "images" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgb, mode="RGB").save(path, format="JPEG", quality=quality)
            h, w = rgb.shape[:2]
            x, y, bw, bh = (0.0, 0.0, float(w), float(h)) if box is None else map(float, box)
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {cid}")
            split.append(f"{image_id} {int(cid <= 100)}")
            boxes.append(f"{image_id} {x:.1f} {y:.1f} {bw:.1f} {bh:.1f}")
        if not images:
            raise ValueError("items yielded no image")
        for name, lines in (("images.txt", images), ("image_class_labels.txt", labels),
                            ("train_test_split.txt", split), ("bounding_boxes.txt", boxes),
                            ("classes.txt",
                             [f"{c} {c:03d}.{n}" for c, n in sorted(class_names.items())])):
            (tmp / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
        if metadata is not None:
            text = json.dumps(dict(metadata), indent=2, sort_keys=True, ensure_ascii=False)
            (tmp / "standin.json").write_text(text + "\n", encoding="utf-8")
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root
