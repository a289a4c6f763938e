"""The image cache: same pixels as decoding again, manifest, corrupt files, idempotence, resuming after a kill."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from heatup_lib.data import cache as cache_mod
from heatup_lib.data._common import CorruptImageError, load_resized
from heatup_lib.data.cache import DATASETS, CacheError, ImageCache, prepare_dataset
from trees import write_cars_tree, write_cub_tree, write_sop_tree

WRITERS = {
    "cub200": lambda root: write_cub_tree(root, num_classes=8, images_per_class=2),
    "cars196": lambda root: write_cars_tree(root, num_classes=8, images_per_class=2, layout="kaggle"),
    "sop": lambda root: write_sop_tree(root, num_classes=8, images_per_class=2),
}


def _data_sha256(path: Path) -> str:
    arr = np.load(path, mmap_mode="r")
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


@pytest.mark.parametrize("name", list(DATASETS))
def test_cache_holds_the_decoded_pixels_and_labels(tmp_path: Path, name: str) -> None:
    root = WRITERS[name](tmp_path / "src")
    size = 40  # no fixture image is >= 2 x 40, so JPEG draft decoding cannot kick in: plain PIL is the reference
    out = prepare_dataset(name, root, tmp_path / "cache", size=size, workers=0, progress=False, chunk_size=5)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dataset"] == name and manifest["size"] == size and manifest["version"] == cache_mod.CACHE_VERSION
    assert manifest["source_root"] == str(root.resolve())
    for split in ("train", "test"):
        ds = DATASETS[name](root, split)
        c = ImageCache.open(out, split)
        assert c.images.shape == (len(ds), size, size, 3) and c.images.dtype == np.uint8
        assert c.labels.dtype == np.int64 and c.labels.tolist() == ds.targets
        assert c.class_ids == ds.class_ids and c.num_classes == ds.num_classes == 4
        info = manifest["splits"][split]
        assert info["count"] == len(ds) == 8 and info["skipped"] == []
        assert info["images_sha256"] == _data_sha256(out / info["images"])
        assert info["labels_sha256"] == _data_sha256(out / info["labels"])
        for i, (path, _) in enumerate(ds.samples):
            with Image.open(path) as img:
                ref = np.asarray(img.convert("RGB").resize((size, size), Image.BILINEAR)) if img.mode in ("RGB", "L", "CMYK") else None
            if ref is not None:
                assert np.array_equal(c.images[i], ref), path
            assert np.array_equal(c.images[i], load_resized(path, size))
    assert sorted(p.name for p in out.iterdir()) == [
        "manifest.json", "test_images.npy", "test_labels.npy", "train_images.npy", "train_labels.npy",
    ]


def test_parallel_decoding_gives_identical_cache(tmp_path: Path) -> None:
    root = write_cars_tree(tmp_path / "src", num_classes=12, images_per_class=2)
    a = prepare_dataset("cars196", root, tmp_path / "serial", size=16, workers=0, progress=False, chunk_size=4)
    b = prepare_dataset("cars196", root, tmp_path / "pool", size=16, workers=2, progress=False, chunk_size=4)
    for split in ("train", "test"):
        assert (a / f"{split}_images.npy").read_bytes() == (b / f"{split}_images.npy").read_bytes()


def test_large_images_use_draft_decoding_and_stay_close(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:300, 0:400]
    smooth = np.stack([xx * 0.5, yy * 0.7, (xx + yy) * 0.3], -1) % 256
    path = tmp_path / "big.jpg"
    Image.fromarray(np.clip(smooth + rng.normal(0, 3, smooth.shape), 0, 255).astype(np.uint8)).save(path, quality=95)
    fast = load_resized(path, 64).astype(float)
    full = np.asarray(Image.open(path).convert("RGB").resize((64, 64), Image.BILINEAR)).astype(float)
    assert fast.shape == (64, 64, 3) and np.abs(fast - full).mean() < 3.0


def test_corrupt_images_raise_or_are_skipped_and_listed(tmp_path: Path) -> None:
    root = write_cub_tree(tmp_path / "src", num_classes=4, images_per_class=3)
    train = DATASETS["cub200"](root, "train")
    bad = [train.samples[1][0], train.samples[4][0]]
    bad[0].write_bytes(bad[0].read_bytes()[: len(bad[0].read_bytes()) // 3])
    bad[1].write_bytes(b"\x89PNG not really")
    with pytest.raises(CorruptImageError) as info:
        prepare_dataset("cub200", root, tmp_path / "strict", size=16, workers=0, progress=False)
    assert str(bad[0]) in str(info.value) and str(bad[1]) in str(info.value) and "skip_corrupt" in str(info.value)
    out = prepare_dataset("cub200", root, tmp_path / "lenient", size=16, workers=0, progress=False, skip_corrupt=True, chunk_size=2)
    manifest = json.loads((out / "manifest.json").read_text())
    skipped = manifest["splits"]["train"]["skipped"]
    assert [s["path"] for s in skipped] == [p.relative_to(root / "CUB_200_2011").as_posix() for p in bad]
    c = ImageCache.open(out, "train")
    kept = [s for i, s in enumerate(train.samples) if i not in (1, 4)]
    assert len(c) == 4 and c.labels.tolist() == [label for _, label in kept]
    for i, (path, _) in enumerate(kept):
        assert np.array_equal(c.images[i], load_resized(path, 16))
    assert manifest["splits"]["train"]["count"] == 4 and manifest["splits"]["train"]["source_count"] == 6
    assert manifest["splits"]["train"]["images_sha256"] == _data_sha256(out / "train_images.npy")


def test_second_prepare_is_a_verified_no_op(tmp_path: Path, monkeypatch) -> None:
    root = write_cub_tree(tmp_path / "src", num_classes=4, images_per_class=2)
    out = prepare_dataset("cub200", root, tmp_path / "cache", size=16, workers=0, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def no_decoding(*args, **kwargs):
        raise AssertionError("a finished cache must not be decoded again")

    monkeypatch.setattr(cache_mod, "_decode_chunk", no_decoding)
    assert prepare_dataset("cub200", root, out, size=16, workers=0, progress=False, verify=True) == out
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # A flipped pixel is caught by the full verification (not by the quick check).
    images = out / "train_images.npy"
    data = bytearray(images.read_bytes())
    data[-1] ^= 0xFF
    images.write_bytes(bytes(data))
    prepare_dataset("cub200", root, out, size=16, progress=False)
    with pytest.raises(CacheError, match="train_images.npy: checksum differs"):
        prepare_dataset("cub200", root, out, size=16, progress=False, verify=True)
    with pytest.raises(CacheError, match="checksum differs"):
        ImageCache.open(out, "train").verify()
    labels = out / "test_labels.npy"
    np.save(labels, np.load(labels)[::-1].copy())
    with pytest.raises(CacheError, match="test_labels.npy: checksum differs"):
        prepare_dataset("cub200", root, out, size=16, progress=False)
    # Other settings or changed source lists never silently reuse or overwrite a cache.
    with pytest.raises(CacheError, match=r"does not match \{'dataset': 'cub200', 'size': 24"):
        prepare_dataset("cub200", root, out, size=24, progress=False)
    lines = (root / "CUB_200_2011/images.txt").read_text().splitlines()
    (root / "CUB_200_2011/images.txt").write_text("\n".join(lines[:-1]) + "\n")
    (root / "CUB_200_2011/image_class_labels.txt").write_text(
        "\n".join((root / "CUB_200_2011/image_class_labels.txt").read_text().splitlines()[:-1]) + "\n"
    )
    with pytest.raises(CacheError, match=r"source lists changed for \['test'\]"):
        prepare_dataset("cub200", root, out, size=16, progress=False)


def _count_decodes(monkeypatch) -> list[int]:
    counted: list[int] = []
    real = cache_mod._decode_chunk

    def counting(task):
        counted.append(len(task[1]))
        return real(task)

    monkeypatch.setattr(cache_mod, "_decode_chunk", counting)
    return counted


def test_prepare_killed_mid_run_resumes_where_it_stopped(tmp_path: Path, monkeypatch) -> None:
    root = write_cub_tree(tmp_path / "src", num_classes=10, images_per_class=2)  # 10 train, 10 test images
    out = tmp_path / "cache"
    child = textwrap.dedent(
        f"""
        import os, signal
        from heatup_lib.data import cache
        real, calls = cache._write_chunk, []
        def killing(*args, **kwargs):
            real(*args, **kwargs)
            calls.append(1)
            if len(calls) == 2:
                os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no finally: a real crash
        cache._write_chunk = killing
        cache.prepare_dataset("cub200", {str(root)!r}, {str(out)!r}, size=16, workers=0, progress=False, chunk_size=3)
        """
    )
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    marker = json.loads((out / "train.progress.json").read_text())
    assert marker["next"] == 6 and marker["written"] == 6 and not marker["complete"]
    assert not (out / "manifest.json").exists() and not (out / "train_images.npy").exists()
    counted = _count_decodes(monkeypatch)
    prepare_dataset("cub200", root, out, size=16, workers=0, progress=False, chunk_size=3)
    assert sum(counted) == 20 - 6  # only what the killed run had not stored
    reference = prepare_dataset("cub200", root, tmp_path / "reference", size=16, workers=0, progress=False)
    for name in ("train_images.npy", "train_labels.npy", "test_images.npy", "test_labels.npy"):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    assert not list(out.glob("*.progress.json")) and not list(out.glob("*.partial"))


def test_exception_in_test_split_keeps_finished_train_split(tmp_path: Path, monkeypatch) -> None:
    root = write_cub_tree(tmp_path / "src", num_classes=6, images_per_class=3)  # 9 train, 9 test
    corrupt = DATASETS["cub200"](root, "test").samples[4][0]
    corrupt.write_bytes(b"garbage")
    out = tmp_path / "cache"
    real, calls = cache_mod._write_chunk, []

    def failing(*args, **kwargs):
        real(*args, **kwargs)
        calls.append(1)
        if len(calls) == 5:  # 3 train chunks + 2 test chunks
            raise KeyboardInterrupt

    monkeypatch.setattr(cache_mod, "_write_chunk", failing)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset("cub200", root, out, size=16, workers=0, progress=False, chunk_size=3, skip_corrupt=True)
    monkeypatch.setattr(cache_mod, "_write_chunk", real)
    assert json.loads((out / "train.progress.json").read_text())["complete"]
    marker = json.loads((out / "test.progress.json").read_text())
    assert (marker["next"], marker["written"], len(marker["skipped"])) == (6, 5, 1)
    counted = _count_decodes(monkeypatch)
    prepare_dataset("cub200", root, out, size=16, workers=0, progress=False, chunk_size=3, skip_corrupt=True)
    assert sum(counted) == 3
    monkeypatch.undo()
    reference = prepare_dataset("cub200", root, tmp_path / "ref", size=16, workers=0, progress=False, skip_corrupt=True)
    for name in ("train_images.npy", "test_images.npy", "test_labels.npy"):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    m, r = (json.loads((d / "manifest.json").read_text()) for d in (out, reference))
    assert m["splits"] == r["splits"] and m["splits"]["test"]["count"] == 8


def test_bad_arguments_and_missing_cache(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"dataset must be one of \('cub200', 'cars196', 'sop'\), got 'mnist'"):
        prepare_dataset("mnist", tmp_path, tmp_path / "o")
    with pytest.raises(ValueError, match="size must be a positive integer, got 0"):
        prepare_dataset("cub200", tmp_path, tmp_path / "o", size=0)
    with pytest.raises(ValueError, match="workers must be None or an integer >= 0, got -1"):
        prepare_dataset("cub200", tmp_path, tmp_path / "o", workers=-1)
    with pytest.raises(FileNotFoundError, match="heatup prepare"):
        ImageCache.open(tmp_path / "nothing", "train")
    with pytest.raises(ValueError, match=r"split must be one of \('train', 'test'\), got 'all'"):
        ImageCache.open(tmp_path, "all")
    with pytest.raises(FileNotFoundError, match="CUB_200_2011/images.txt"):
        prepare_dataset("cub200", tmp_path / "nothing", tmp_path / "o")


def test_a_failed_strict_prepare_leaves_no_partial_file(tmp_path: Path) -> None:
    root = write_cub_tree(tmp_path / "src", num_classes=4, images_per_class=3)
    DATASETS["cub200"](root, "test").samples[2][0].write_bytes(b"garbage")
    out = tmp_path / "strict"
    with pytest.raises(CorruptImageError):
        prepare_dataset("cub200", root, out, size=16, workers=0, progress=False, chunk_size=2)
    assert (out / "train_images.npy").is_file()  # the finished split is kept
    assert not list(out.glob("*.partial")) and not (out / "test.progress.json").exists()


def _truncate(path: Path, keep: int | None = None) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 if keep is None else keep])


@pytest.mark.parametrize("damage, message", [
    (lambda c: _truncate(c / "train_images.npy"), r"train_images\.npy is damaged \(ValueError: mmap length"),
    (lambda c: _truncate(c / "train_images.npy", 20), r"train_images\.npy is damaged"),
    (lambda c: _truncate(c / "test_labels.npy"), r"test_labels\.npy is damaged"),
    (lambda c: np.save(c / "train_labels.npy", np.array([{"a": 1}], dtype=object)), r"train_labels\.npy is damaged"),
    (lambda c: (c / "manifest.json").write_text("{garbage"), r"manifest\.json: unreadable manifest"),
    (lambda c: (c / "manifest.json").write_text("[1, 2]"), r"manifest\.json is not the manifest of a heatup"),
    (lambda c: (c / "train_images.npy").unlink(), r"train_images\.npy is missing"),
])
def test_a_damaged_cache_is_named_when_opened_and_when_prepared_again(tmp_path: Path, damage, message) -> None:
    root = write_cub_tree(tmp_path / "src", num_classes=4, images_per_class=2)
    out = prepare_dataset("cub200", root, tmp_path / "cache", size=16, workers=0, progress=False)
    damage(out)
    split = "test" if "test_" in message else "train"
    with pytest.raises(CacheError, match=message) as info:
        ImageCache.open(out, split)
    assert "prepare" in str(info.value)
    with pytest.raises(CacheError, match=message):
        prepare_dataset("cub200", root, out, size=16, workers=0, progress=False)


def test_prepare_into_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match=r"cache folder '.*file' is a file, not a folder"):
        prepare_dataset("cub200", tmp_path, tmp_path / "file")
