"""CachedBatches: crops are real sub-windows, flips flip, eval is the centre crop, batches are reproducible."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from heatup_lib.data.augment import IMAGENET_MEAN, IMAGENET_STD, CachedBatches, center_offset, random_crop_flip
from heatup_lib.data.cache import ImageCache, prepare_dataset
from trees import write_cub_tree

SIZE, CROP = 20, 14


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("aug")
    root = write_cub_tree(tmp / "src", num_classes=6, images_per_class=4, seed=3)  # 12 train, 12 test
    return prepare_dataset("cub200", root, tmp / "cache", size=SIZE, workers=0, progress=False)


def _to_uint8(X: torch.Tensor, normalize: str = "imagenet") -> np.ndarray:
    """Undo the normalisation: (B, 3, H, W) float -> (B, H, W, 3) uint8."""
    if normalize == "tf":
        x = (X.double() + 1) * 127.5
    else:
        m = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
        s = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
        x = (X.double() * s + m) * 255
    r = x.round()
    assert (x - r).abs().max() < 1e-3  # exact integers before normalisation
    return r.clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _locate(window: np.ndarray, images: np.ndarray) -> list[tuple[int, int, int, bool]]:
    """Every (image, top, left, flipped) whose crop equals ``window``, by brute force."""
    crop = window.shape[0]
    hits = []
    for i, img in enumerate(images):
        for top in range(img.shape[0] - crop + 1):
            for left in range(img.shape[1] - crop + 1):
                w = img[top : top + crop, left : left + crop]
                if np.array_equal(w, window):
                    hits.append((i, top, left, False))
                if np.array_equal(w[:, ::-1], window):
                    hits.append((i, top, left, True))
    return hits


def test_random_crop_flip_matches_a_per_image_loop() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (7, 11, 11, 3), generator=g, dtype=torch.uint8)
    top, left = torch.randint(0, 5, (7,), generator=g), torch.randint(0, 5, (7,), generator=g)
    flip = torch.tensor([True, False, True, True, False, False, True])
    out = random_crop_flip(x, top, left, flip, 7)
    for b in range(7):
        ref = x[b, top[b] : top[b] + 7, left[b] : left[b] + 7]
        if flip[b]:
            ref = ref.flip(1)
        assert torch.equal(out[b], ref)


def test_train_batches_are_real_windows_of_a_shuffled_epoch(cache_dir: Path) -> None:
    c = ImageCache.open(cache_dir, "train")
    images = np.asarray(c.images)
    batches = CachedBatches(c, batch_size=5, train=True, crop=CROP)
    assert len(batches) == 2 and batches.drop_last  # 12 // 5
    seen, flips, offsets = [], set(), set()
    for X, y in batches.epoch(0, torch.Generator().manual_seed(0)):
        assert X.shape == (5, 3, CROP, CROP) and X.dtype == torch.float32 and y.dtype == torch.int64
        for window, label in zip(_to_uint8(X), y.tolist()):
            hits = _locate(window, images)
            assert len(hits) >= 1, "crop is not a sub-window of any cached image"
            i, top, left, flipped = hits[0]
            assert c.labels[i] == label
            seen.append(i)
            flips.add(flipped)
            offsets.add((top, left))
    assert len(seen) == 10 and len(set(seen)) == 10  # without replacement
    assert flips == {False, True} and len(offsets) > 3
    full = CachedBatches(c, batch_size=5, train=True, crop=CROP, drop_last=False)
    assert len(full) == 3 and sum(len(y) for _, y in full.epoch(0, torch.Generator().manual_seed(0))) == 12


def test_same_generator_same_batches_different_seed_different(cache_dir: Path) -> None:
    c = ImageCache.open(cache_dir, "train")
    b = CachedBatches(c, batch_size=4, train=True, crop=CROP)
    run = lambda seed: [(X.clone(), y.clone()) for X, y in b.epoch(3, torch.Generator().manual_seed(seed))]
    first, again, other = run(7), run(7), run(8)
    assert all(torch.equal(a[0], b_[0]) and torch.equal(a[1], b_[1]) for a, b_ in zip(first, again))
    assert not all(torch.equal(a[0], b_[0]) for a, b_ in zip(first, other))
    streamed = CachedBatches(c, batch_size=4, train=True, crop=CROP, on_device=False)
    assert not streamed.on_device and b.on_device
    again_streamed = [(X, y) for X, y in streamed.epoch(3, torch.Generator().manual_seed(7))]
    assert all(torch.equal(a[0], s[0]) and torch.equal(a[1], s[1]) for a, s in zip(first, again_streamed))


def test_eval_is_ordered_centre_crop(cache_dir: Path) -> None:
    c = ImageCache.open(cache_dir, "test")
    b = CachedBatches(c, batch_size=5, train=False, crop=CROP, on_device=False)
    assert len(b) == 3 and not b.drop_last
    off = center_offset(SIZE, CROP)
    assert off == 3
    got = list(b.epoch(0, torch.Generator().manual_seed(0)))
    assert [len(y) for _, y in got] == [5, 5, 2]
    X = torch.cat([x for x, _ in got])
    assert np.array_equal(_to_uint8(X), np.asarray(c.images)[:, off : off + CROP, off : off + CROP])
    assert torch.cat([y for _, y in got]).tolist() == c.labels.tolist()
    assert all(torch.equal(a[0], e[0]) for a, e in zip(got, b.iter_eval()))
    # A train source can also be iterated in order for embedding.
    t = CachedBatches(ImageCache.open(cache_dir, "train"), batch_size=5, train=True, crop=CROP)
    assert sum(len(y) for _, y in t.iter_eval()) == 12


def test_normalisations_and_channels_last(cache_dir: Path) -> None:
    c = ImageCache.open(cache_dir, "test")
    ref = np.asarray(c.images)[:4, 3 : 3 + CROP, 3 : 3 + CROP].astype(np.float64)
    X, _ = next(iter(CachedBatches(c, 4, train=False, crop=CROP, normalize="tf")))
    assert torch.allclose(X.double(), torch.from_numpy(ref / 127.5 - 1).permute(0, 3, 1, 2), atol=1e-6)
    assert X.min() >= -1 and X.max() <= 1
    Xi, _ = next(iter(CachedBatches(c, 4, train=False, crop=CROP)))
    manual = (torch.from_numpy(ref / 255) - torch.tensor(IMAGENET_MEAN, dtype=torch.float64)) / torch.tensor(IMAGENET_STD, dtype=torch.float64)
    assert torch.allclose(Xi.double(), manual.permute(0, 3, 1, 2), atol=1e-5)
    Xm, _ = next(iter(CachedBatches(c, 4, train=False, crop=CROP, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))))
    assert torch.allclose(Xm, X, atol=1e-5)  # mean = std = 0.5 is the same [-1, 1] scaling
    Xc, _ = next(iter(CachedBatches(c, 4, train=False, crop=CROP, channels_last=True)))
    assert Xc.is_contiguous(memory_format=torch.channels_last) and not Xc.is_contiguous()
    assert Xi.is_contiguous() and torch.equal(Xc, Xi)


def test_bad_arguments(cache_dir: Path) -> None:
    c = ImageCache.open(cache_dir, "train")
    with pytest.raises(ValueError, match=r"crop must be an integer in \[1, 20\]"):
        CachedBatches(c, 4, train=True, crop=224)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        CachedBatches(c, 0, train=True, crop=CROP)
    with pytest.raises(ValueError, match=r"normalize must be one of \('imagenet', 'tf'\), got 'caffe'"):
        CachedBatches(c, 4, train=True, crop=CROP, normalize="caffe")
    small = CachedBatches(c, 4, train=True, crop=CROP, memory_budget=100)
    assert not small.on_device  # 12 x 20 x 20 x 3 bytes exceed a 100-byte budget


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batches_equal_cpu_batches(cache_dir: Path) -> None:
    c = ImageCache.open(cache_dir, "train")
    cpu = CachedBatches(c, 4, train=True, crop=CROP)
    for on_device in (True, False):
        gpu = CachedBatches(c, 4, train=True, crop=CROP, device="cuda", on_device=on_device)
        for (a, ya), (b, yb) in zip(cpu.epoch(0, torch.Generator().manual_seed(5)), gpu.epoch(0, torch.Generator().manual_seed(5))):
            assert b.is_cuda and torch.allclose(a, b.cpu(), atol=1e-6) and torch.equal(ya, yb.cpu())
