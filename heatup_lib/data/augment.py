"""Batches from the image cache with random crop + horizontal flip done on the device, in batched tensor ops."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor

from .cache import ImageCache

__all__ = ["CachedBatches", "random_crop_flip", "center_offset", "NORMALIZATIONS", "IMAGENET_MEAN", "IMAGENET_STD"]

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# "imagenet": (x/255 - mean)/std, what torchvision's ImageNet weights expect;
# "tf": x/127.5 - 1, the TF-slim Inception convention of the authors' code (SPEC §5).
NORMALIZATIONS = ("imagenet", "tf")
_CPU_BUDGET = 4 << 30  # bytes a CPU run copies into RAM by default; larger caches stay memory-mapped


def center_offset(size: int, crop: int) -> int:
    """Offset of a centred ``crop`` in ``size`` pixels, as torchvision's ``CenterCrop`` computes it."""
    return int(round((size - crop) / 2.0))


def random_crop_flip(images: Tensor, top: Tensor, left: Tensor, flip: Tensor, crop: int) -> Tensor:
    """Cut a ``crop`` x ``crop`` window at (``top``, ``left``) from each image, mirrored where ``flip``.

    images: (B, S, S, C) any dtype; top, left: (B,) int; flip: (B,) bool. Returns (B, crop, crop, C),
    computed as one gather (no per-image loop).
    """
    b, h, w, c = images.shape
    device = images.device
    ar = torch.arange(crop, device=device)
    top, left, flip = top.to(device), left.to(device), flip.to(device)
    rows = top[:, None] + ar  # (B, crop)
    cols = left[:, None] + torch.where(flip[:, None], crop - 1 - ar, ar)  # (B, crop)
    flat = (torch.arange(b, device=device)[:, None, None] * h + rows[:, :, None]) * w + cols[:, None, :]
    return images.reshape(b * h * w, c).index_select(0, flat.reshape(-1)).reshape(b, crop, crop, c)


class CachedBatches:
    """A batch source (``len``, ``epoch(epoch, generator)``) over an ``ImageCache`` split.

    Train: a shuffled epoch, random ``crop`` window and horizontal flip per image; test: images in
    order, centre crop. Batches are float (B, 3, crop, crop) normalised as ``normalize`` says
    ("imagenet" mean/std, or "tf" = [-1, 1]; ``mean``/``std`` in [0, 1] units override imagenet's)
    and int64 labels (B,). The uint8 cache lives on ``device`` when it fits (``on_device=None``
    decides by ``memory_budget`` bytes: half the free GPU memory, or 4 GiB on a CPU); otherwise
    batches are gathered from the memory map, pinned and copied asynchronously, one batch ahead.
    All randomness is drawn from the generator passed to ``epoch``, so the same generator state
    gives the same batches on any device.
    """

    def __init__(
        self,
        cache: ImageCache,
        batch_size: int,
        train: bool,
        device: str | torch.device = "cpu",
        crop: int = 224,
        drop_last: bool | None = None,
        normalize: str = "imagenet",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        on_device: bool | None = None,
        memory_budget: int | None = None,
        channels_last: bool = False,
        flip: bool = True,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        size = cache.size
        if not isinstance(crop, int) or not 1 <= crop <= size:
            raise ValueError(f"crop must be an integer in [1, {size}] (the cache's image size), got {crop!r}")
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
        if normalize == "tf" and (mean is not None or std is not None):
            raise ValueError("mean/std apply to normalize='imagenet' only; normalize='tf' scales to [-1, 1]")
        self.cache = cache
        self.batch_size = batch_size
        self.train = bool(train)
        self.device = torch.device(device)
        self.crop = crop
        self.size = size
        self.drop_last = self.train if drop_last is None else bool(drop_last)
        self.channels_last = channels_last
        self.flip = flip
        self.dtype = dtype
        self.normalize = normalize
        if normalize == "tf":
            shift, scale = [127.5] * 3, [1 / 127.5] * 3
        else:
            m = IMAGENET_MEAN if mean is None else tuple(mean)
            s = IMAGENET_STD if std is None else tuple(std)
            if len(m) != 3 or len(s) != 3 or min(s) <= 0:
                raise ValueError(f"mean and std need 3 values each, std > 0; got mean={m}, std={s}")
            shift, scale = [255.0 * v for v in m], [1.0 / (255.0 * v) for v in s]
        self._shift = torch.tensor(shift, dtype=torch.float32, device=self.device).view(1, 3, 1, 1).to(dtype)
        self._scale = torch.tensor(scale, dtype=torch.float32, device=self.device).view(1, 3, 1, 1).to(dtype)
        self.labels = torch.from_numpy(np.ascontiguousarray(cache.labels, dtype=np.int64)).to(self.device)
        nbytes = int(cache.images.nbytes)
        if on_device is None:
            if memory_budget is None:
                if self.device.type == "cuda":
                    free, _ = torch.cuda.mem_get_info(self.device)
                    memory_budget = free // 2
                else:
                    memory_budget = _CPU_BUDGET
            on_device = nbytes <= memory_budget
        self.on_device = bool(on_device)
        self._images: Tensor | None = None
        if self.on_device:
            self._images = torch.empty(tuple(cache.images.shape), dtype=torch.uint8, device=self.device)
            step = max(1, (64 << 20) // max(1, size * size * 3))
            for i in range(0, len(cache), step):
                self._images[i : i + step].copy_(torch.from_numpy(np.array(cache.images[i : i + step])))
            log.info("image cache %s (%.2f GB) held on %s", cache.split, nbytes / 1e9, self.device)
        self._pin = self.device.type == "cuda"

    def __len__(self) -> int:
        n = len(self.cache)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    # ------------------------------------------------------------------ internals
    def _fetch(self, idx: Tensor, idx_device: Tensor) -> Tensor:
        """uint8 (B, S, S, 3) images at ``idx`` (CPU) / ``idx_device`` (same indices on the device)."""
        if self._images is not None:
            return self._images.index_select(0, idx_device)
        rows = torch.empty((len(idx), self.size, self.size, 3), dtype=torch.uint8, pin_memory=self._pin)
        np.take(self.cache.images, idx.numpy(), axis=0, out=rows.numpy())  # reads the memory map
        return rows.to(self.device, non_blocking=True)

    def _finish(self, crops: Tensor) -> Tensor:
        """(B, crop, crop, 3) uint8 -> normalised (B, 3, crop, crop) in ``dtype``."""
        b, h, w, c = crops.shape
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        x = torch.empty((b, c, h, w), dtype=self.dtype, device=crops.device, memory_format=fmt)
        x.copy_(crops.permute(0, 3, 1, 2))  # convert and transpose in one pass
        return x.sub_(self._shift).mul_(self._scale)

    def _batches(self, order: Tensor, top: Tensor, left: Tensor, flip: Tensor, drop_last: bool) -> Iterator[tuple[Tensor, Tensor]]:
        n = len(order)
        stop = (n // self.batch_size) * self.batch_size if drop_last else n
        starts = list(range(0, stop, self.batch_size))
        if not starts:
            return
        # One host-to-device copy per epoch: no per-batch copy that would synchronise with the device.
        order_d, top_d, left_d, flip_d = (t.to(self.device) for t in (order, top, left, flip))
        pool = ThreadPoolExecutor(max_workers=1) if self._images is None else None
        try:
            def load(s: int) -> Tensor:
                return self._fetch(order[s : s + self.batch_size], order_d[s : s + self.batch_size])

            pending: Future | None = pool.submit(load, starts[0]) if pool else None
            for k, s in enumerate(starts):
                if pool is not None:
                    assert pending is not None
                    x = pending.result()
                    pending = pool.submit(load, starts[k + 1]) if k + 1 < len(starts) else None
                else:
                    x = load(s)
                sl = slice(s, s + self.batch_size)
                crops = random_crop_flip(x, top_d[sl], left_d[sl], flip_d[sl], self.crop)
                yield self._finish(crops), self.labels.index_select(0, order_d[sl])
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    # ------------------------------------------------------------------ batch source
    def epoch(self, epoch: int, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
        """Batches of one epoch: shuffled with random crop/flip if ``train``, else ordered centre crops."""
        n, g = len(self.cache), generator
        if not self.train:
            off = torch.full((n,), center_offset(self.size, self.crop), dtype=torch.long)
            yield from self._batches(torch.arange(n), off, off, torch.zeros(n, dtype=torch.bool), self.drop_last)
            return
        order = torch.randperm(n, generator=g, device=g.device).cpu()
        span = self.size - self.crop + 1
        top = torch.randint(0, span, (n,), generator=g, device=g.device).cpu()
        left = torch.randint(0, span, (n,), generator=g, device=g.device).cpu()
        if self.flip:
            flip = (torch.rand(n, generator=g, device=g.device) < 0.5).cpu()
        else:
            flip = torch.zeros(n, dtype=torch.bool)
        yield from self._batches(order, top, left, flip, self.drop_last)

    def iter_eval(self) -> Iterator[tuple[Tensor, Tensor]]:
        """All images in cache order with the centre crop, the last batch possibly short (for embedding)."""
        n = len(self.cache)
        off = torch.full((n,), center_offset(self.size, self.crop), dtype=torch.long)
        yield from self._batches(torch.arange(n), off, off, torch.zeros(n, dtype=torch.bool), drop_last=False)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return self.iter_eval()

    def __repr__(self) -> str:
        return (
            f"CachedBatches({self.cache.dataset}/{self.cache.split}, n={len(self.cache)}, batch_size={self.batch_size}, "
            f"train={self.train}, crop={self.crop}, device={self.device}, on_device={self.on_device})"
        )
