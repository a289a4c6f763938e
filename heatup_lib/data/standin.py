"""A synthetic zero-shot stand-in for CUB-200-2011: 200 glyph classes (:mod:`heatup_lib.data.glyphs`) in the CUB layout.

Classes 1-100 train and 101-200 test, as in CUB's zero-shot split, and :func:`write_glyph_tree`
writes the tree in the official CUB-200-2011 layout (:mod:`heatup_lib.data.cub_layout`), so the
real reader (:class:`heatup_lib.data.CUB200`), cache and pipeline run it unchanged;
:func:`standin_cache` builds the tree and its cache once and reuses them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..checks import check_bool, check_float, check_int
from .cub_layout import write_cub_layout
from .glyphs import GLYPHS, glyph_classes, render_glyph

__all__ = ["STANDIN_NAME", "STANDIN_NOTE", "write_glyph_tree", "standin_cache"]

STANDIN_NAME = "glyphs-200"
STANDIN_NOTE = (
    "synthetic glyphs in the CUB-200-2011 layout (not the paper's data): 200 characters "
    "(Latin, Greek, Cyrillic, Armenian, Georgian, symbols) rendered in matplotlib's fonts with "
    "random weight, rotation, scale, position, colours and noise; classes 1-100 train, "
    "101-200 test"
)


def _tree_metadata(num_classes: int, images_per_class: int, size: int, seed: int, distortion: float,
                   clutter: int) -> dict:
    return {
        "name": STANDIN_NAME, "synthetic": True, "note": STANDIN_NOTE, "num_classes": num_classes,
        "images_per_class": images_per_class, "size": size, "seed": seed, "glyphs": GLYPHS,
        "distortion": distortion, "clutter": clutter,
        "generator": "heatup_lib.data.standin.write_glyph_tree",
    }


def write_glyph_tree(root: str | os.PathLike, num_classes: int = 200, images_per_class: int = 40,
                     size: int = 32, seed: int = 0, distortion: float = 0.0,
                     clutter: int = 0) -> Path:
    """Write the glyph stand-in as a CUB-200-2011 tree ``root/CUB_200_2011/``; return ``root``.

    ``num_classes`` (even, <= 200) classes of :func:`glyph_classes`, ``images_per_class``
    images of ``size`` x ``size`` pixels each (:func:`render_glyph`), the bounding boxes of the
    glyphs, and ``standin.json`` saying what the tree is. Image ``k`` of class ``c`` depends only
    on ``(seed, c, k)``. If the tree exists and its ``standin.json`` records the same arguments,
    nothing is written (a finished tree is reused); other existing trees raise ``FileExistsError``.
    """
    classes = glyph_classes(num_classes)
    images_per_class = check_int("images_per_class", images_per_class, 1)
    size = check_int("size", size, 16)
    seed = check_int("seed", seed, 0)
    distortion = check_float("distortion", distortion, 0.0, 0.2)
    clutter = check_int("clutter", clutter, 0)
    meta = _tree_metadata(num_classes, images_per_class, size, seed, distortion, clutter)
    root = Path(root)
    existing = root / "CUB_200_2011" / "standin.json"
    if existing.is_file():
        try:
            have = json.loads(existing.read_text(encoding="utf-8"))
        except ValueError:
            have = None
        if have == meta:
            return root
        differ = sorted(k for k in meta if not isinstance(have, dict) or have.get(k) != meta[k])
        raise FileExistsError(f"{root / 'CUB_200_2011'} holds another glyph tree "
                              f"(differing: {differ}); "
                              "delete it or write elsewhere")

    def items() -> Iterable[tuple[int, np.ndarray, tuple[int, int, int, int]]]:
        for cls in classes:
            for k in range(images_per_class):
                rng = np.random.default_rng([seed, cls.class_id, k])
                image, box = render_glyph(cls.char, size, rng, cls.fonts, distortion=distortion,
                                          clutter=clutter)
                yield cls.class_id, image, box

    return write_cub_layout(root, items(), {c.class_id: c.name for c in classes}, metadata=meta)


def standin_cache(out_dir: str | os.PathLike, images_per_class: int = 40, image_size: int = 32,
                  seed: int = 0, *, num_classes: int = 200, distortion: float = 0.0,
                  clutter: int = 0, workers: int | None = 0, progress: bool = False) -> Path:
    """The prepared image cache of the glyph stand-in under ``out_dir``: built once, then reused.

    The tree (:func:`write_glyph_tree`, images of ``image_size`` pixels) goes to
    ``out_dir/glyphs-<arguments>/`` and its cache (:func:`heatup_lib.data.cache.prepare_dataset`,
    read by the real :class:`heatup_lib.data.CUB200` reader) to
    ``out_dir/glyphs-<arguments>-cache``; a cache whose manifest exists is returned as it is.
    """
    from .cache import prepare_dataset

    num_classes = check_int("num_classes", num_classes, 2, len(GLYPHS))
    images_per_class = check_int("images_per_class", images_per_class, 2)
    image_size = check_int("image_size", image_size, 16)
    seed = check_int("seed", seed, 0)
    distortion = check_float("distortion", distortion, 0.0, 0.2)
    clutter = check_int("clutter", clutter, 0)
    check_bool("progress", progress)
    tag = (f"glyphs-c{num_classes}-n{images_per_class}-s{image_size}-seed{seed}"
           f"-d{distortion:g}-k{clutter}")
    out_dir = Path(out_dir)
    tree, cache = out_dir / tag, out_dir / f"{tag}-cache"
    if not (cache / "manifest.json").is_file():
        write_glyph_tree(tree, num_classes, images_per_class, image_size, seed, distortion, clutter)
        prepare_dataset("cub200", tree, cache, size=image_size, workers=workers, progress=progress)
    return cache
