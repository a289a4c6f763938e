"""Test-time embeddings of an image cache split, and a recorded benchmark run evaluated again from its checkpoint."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .data.augment import CachedBatches
from .passes import evaluating

__all__ = ["SOURCE_FILE", "eval_batches", "embed_split", "cache_summary", "benchmark_block", "run_cache"]

SOURCE_FILE = "source.json"  # where a run's cache lies on this machine (not part of the parameters)


def _unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel / compiled wrapper, or the module itself."""
    module = getattr(module, "module", module)
    return getattr(module, "_orig_mod", module)


def eval_batches(cache: Any, net: nn.Module, crop_size: int, batch_size: int,
                 device: str | torch.device) -> CachedBatches:
    """Centre-crop batches of every image of ``cache`` in order, normalised the way ``net`` expects."""
    norm = dict(getattr(_unwrap(net), "input_normalization", None) or {})
    return CachedBatches(cache, batch_size, train=False, device=device, crop=crop_size, drop_last=False, **norm)


@torch.no_grad()
def embed_split(net: nn.Module, head: nn.Module | None, data: Any, *, device: str | torch.device,
                crop_size: int | None = None, batch_size: int = 256, amp: bool = False,
                channels_last: bool = False, normalize: bool = True) -> tuple[Tensor, Tensor]:
    """Test-time embeddings of every image of ``data`` (centre crop, eval mode): (N, D) float32, L2-normalised, and labels (N,).

    ``data`` is an ``ImageCache`` split (then ``crop_size`` is needed) or its :func:`eval_batches`.
    With ``head=None`` the backbone features are returned, L2-normalised unless ``normalize=False``.
    """
    device = torch.device(device)
    net_, head_ = _unwrap(net), (_unwrap(head) if head is not None else None)
    if not hasattr(data, "iter_eval"):
        if crop_size is None:
            raise ValueError("crop_size is needed to embed an ImageCache; got None")
        data = eval_batches(data, net_, crop_size, batch_size, device)
    feats, labels = [], []
    with evaluating(net_, head_):
        for X, y in data.iter_eval():
            if channels_last:
                X = X.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
                f = net_(X)
            f = f.float()
            if head_ is not None:
                f = head_.embed(f)
            elif normalize:
                f = F.normalize(f, dim=1)
            feats.append(f)
            labels.append(y.to(device))
    return torch.cat(feats), torch.cat(labels)


def cache_summary(cache: Any) -> dict[str, Any]:
    """What identifies the cached data of a split: counts, classes, image size and the manifest's checksums."""
    info = dict(cache.manifest.get("splits", {}).get(cache.split, {}))
    return {"num_images": len(cache), "num_classes": cache.num_classes,
            "images_sha256": info.get("images_sha256"), "labels_sha256": info.get("labels_sha256")}


def benchmark_block(params: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``benchmark`` block that ``run_experiment`` put into a record's parameters (under ``extra``), or None."""
    extra = params.get("extra") if isinstance(params, Mapping) else None
    block = extra.get("benchmark") if isinstance(extra, Mapping) else None
    if isinstance(block, Mapping) and "row" in block and "dataset" in block:
        return dict(block)
    return None


def run_cache(run_dir: str | Path) -> Path:
    """The cache folder a run was trained on, as recorded in its ``source.json``."""
    source = Path(run_dir) / SOURCE_FILE
    if not source.is_file():
        raise ValueError(f"run {run_dir} does not say where its data lies (no {SOURCE_FILE}); "
                         "pass the data explicitly")
    return Path(json.loads(source.read_text())["cache"])
