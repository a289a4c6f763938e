"""A recorded benchmark run evaluated again: its checkpoint loaded, its test split embedded and scored, other data refused unless asked."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import metrics
from .benchmark import Settings, build_backbone, check_device, resolve_cache, temperature_of
from .checks import check_bool, check_folder, check_int
from .data.cache import ImageCache
from .embedding import benchmark_block, cache_summary, embed_split, run_cache
from .heads import NormalizedSoftmax
from .records import load_checkpoint, load_record

__all__ = ["load_trained", "check_same_data", "evaluate_run"]

log = logging.getLogger(__name__)

def load_trained(run_dir: str | Path, device: str | torch.device = "cpu"
                 ) -> tuple[nn.Module, NormalizedSoftmax, dict[str, Any]]:
    """The trained network and head of a benchmark run (from its checkpoint, in eval mode) and the run's ``benchmark`` block."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {str(run_dir)!r} does not exist or is not a folder")
    block = benchmark_block(load_record(run_dir).params)
    if block is None:
        raise ValueError(f"{run_dir} is not a benchmark run (its params.json has no 'benchmark' block)")
    checkpoint = load_checkpoint(run_dir, map_location="cpu")
    if checkpoint is None:
        raise FileNotFoundError(f"run {run_dir} has no checkpoint.pt")
    if "net" not in checkpoint or "head" not in checkpoint:
        raise ValueError(f"{run_dir}/checkpoint.pt holds no 'net'/'head' weights; its keys are {sorted(checkpoint)}")
    settings, model = Settings.from_dict(block["settings"]), block["model"]
    net = build_backbone(dataclasses.replace(settings, pretrained=False, weights=None), model["bottleneck_bias"])
    alpha_mode = temperature_of(block["row"], settings, block.get("temperature"))[0]
    head = NormalizedSoftmax(model["embedding_dim"], model["num_classes"], variant=block["variant"],
                             bias=model["head_bias"], alpha_mode=alpha_mode)
    net.load_state_dict(checkpoint["net"])
    head.load_state_dict(checkpoint["head"])
    dev = check_device(device)
    return net.to(dev).eval(), head.to(dev).eval(), block


def check_same_data(block: Mapping[str, Any], cache: ImageCache) -> list[str]:
    """How ``cache`` (a test split) differs from the test data a run was trained for: dataset, classes, images, size."""
    trained = block.get("data", {})
    test = trained.get("test", {}) or {}
    now = cache_summary(cache)
    differences = []
    if cache.dataset != block["dataset"]:
        differences.append(f"dataset {cache.dataset!r} (the run: {block['dataset']!r})")
    for key in ("num_classes", "num_images", "images_sha256", "labels_sha256"):
        if test.get(key) is not None and now.get(key) != test[key]:
            differences.append(f"{key} {now.get(key)!r} (the run: {test[key]!r})")
    if trained.get("image_size") is not None and cache.size != trained["image_size"]:
        differences.append(f"image size {cache.size} (the run: {trained['image_size']})")
    return differences


def evaluate_run(run_dir: str | Path, *, cache_dir: str | Path | None = None, data_root: str | Path | None = None,
                 device: str | torch.device = "cpu", batch_size: int | None = None, other_data: bool = False,
                 progress: bool = False, return_embeddings: bool = False):
    """Evaluate a recorded benchmark run's checkpoint on its test split with the dataset's metrics (fractions).

    The data comes from ``cache_dir``, else ``data_root`` (prepared into ``<runs_dir>/cache``), else
    the cache the run was trained on (its ``source.json``). Data other than the run's (dataset,
    classes, images, size) is refused unless ``other_data``. With ``return_embeddings`` the result
    is ``(metrics, embeddings (N, D), labels (N,), test cache)``.
    """
    if batch_size is not None:
        check_int("batch_size", batch_size, min_value=1)
    check_bool("other_data", other_data)
    check_folder("run folder", run_dir, "give the folder of a benchmark run (with params.json)")
    net, head, block = load_trained(run_dir, device)
    settings = Settings.from_dict(block["settings"])
    if cache_dir is None and data_root is not None:
        cache_dir = resolve_cache(block["dataset"], settings, None, data_root, Path(run_dir).parent, progress)
    test_cache = ImageCache.open(cache_dir if cache_dir is not None else run_cache(run_dir), "test")
    differences = check_same_data(block, test_cache)
    if differences and not other_data:
        raise ValueError(f"{test_cache.path} is not the data run {run_dir} was trained for: "
                         f"{'; '.join(differences)}; pass other_data=True (--other-data) to evaluate anyway")
    if differences:
        log.warning("evaluating run %s on other data (%s): %s", run_dir, test_cache.path,
                    "; ".join(differences))
    dev = check_device(device)
    emb, y = embed_split(net, head, test_cache, device=dev, crop_size=settings.crop_size,
                         batch_size=batch_size or settings.eval_batch_size,
                         amp=settings.train.amp, channels_last=settings.train.channels_last)
    scores = {k: float(v) for k, v in metrics.evaluate(emb, y, dataset=block["dataset"]).items()}
    return (scores, emb, y, test_cache) if return_embeddings else scores
