"""The preprocessed image cache: every image decoded once, resized to S x S, stored as uint8 .npy memmaps.

Layout of a cache folder ``out`` (one dataset, one size)::

    manifest.json             dataset, source, size, counts, class ids, checksums, version
    train_images.npy          uint8 (N, S, S, 3), memory-mappable (np.load(..., mmap_mode="r"))
    train_labels.npy          int64 (N,), 0..C-1 within the split
    test_images.npy, test_labels.npy

``prepare_dataset`` writes it in chunks with a progress marker (``<split>.progress.json``) so an
interrupted run continues where it stopped; a second call on a finished cache only verifies it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..atomic import atomic_write_bytes, atomic_write_json, ensure_folder, remove_stale_temps
from ._common import CorruptImageError, ImageListDataset, load_resized
from .cars import Cars196
from .cub import CUB200
from .sop import StanfordOnlineProducts

__all__ = ["DATASETS", "CACHE_SPLITS", "CACHE_VERSION", "prepare_dataset", "ImageCache", "CacheError", "dataset_class"]

log = logging.getLogger(__name__)

DATASETS: dict[str, type[ImageListDataset]] = {
    "cub200": CUB200,
    "cars196": Cars196,
    "sop": StanfordOnlineProducts,
}
CACHE_SPLITS = ("train", "test")
CACHE_VERSION = 1
RESIZE = "PIL bilinear to S x S (aspect ratio not kept), JPEG draft decoding at >= S"
_BLOCK = 1 << 24


class CacheError(ValueError):
    """A cache folder that is incomplete, corrupted, or was built for other settings."""


def dataset_class(name: str) -> type[ImageListDataset]:
    """The reader class registered under ``name`` in ``DATASETS``."""
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {tuple(DATASETS)}, got {name!r}")
    return DATASETS[name]


# --------------------------------------------------------------------------- helpers
def _sha256_file(path: Path, offset: int = 0) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(offset)
        while block := f.read(_BLOCK):
            h.update(block)
    return h.hexdigest()


def _damaged(path: Path, err: BaseException) -> CacheError:
    """The error for a cache file that cannot be read (it names the file and what to do)."""
    return CacheError(f"{path} is damaged ({type(err).__name__}: {err}); delete {path.parent} and "
                      "prepare the cache again")


def _npy_offset(path: Path) -> int:
    """Byte offset of the data in an .npy file (``CacheError`` when it has no readable header)."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                np.lib.format.read_array_header_1_0(f)
            else:
                np.lib.format.read_array_header_2_0(f)
            return f.tell()
    except (ValueError, EOFError) as err:
        raise _damaged(path, err) from None


def _load_npy(path: Path, mmap: bool) -> np.ndarray:
    """``np.load`` of a cache array (never unpickling); ``CacheError`` naming a damaged file."""
    if not path.is_file():
        raise CacheError(f"{path} is missing; delete {path.parent} and prepare the cache again")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, EOFError, OSError) as err:
        raise _damaged(path, err) from None


def _read_manifest(path: Path) -> dict[str, Any]:
    """A cache folder's manifest, checked for the keys the reader uses (else ``CacheError``)."""
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise CacheError(f"{path}: unreadable manifest ({err}); delete {path.parent} and prepare "
                         "again") from None
    splits = manifest.get("splits") if isinstance(manifest, dict) else None
    if not isinstance(splits, dict) or not all(isinstance(splits.get(s), dict)
                                                 for s in CACHE_SPLITS):
        raise CacheError(f"{path} is not the manifest of a heatup image cache (no 'splits' with "
                         f"{list(CACHE_SPLITS)}); delete {path.parent} and prepare again")
    keys = ("images", "labels", "count", "num_classes", "class_ids", "labels_sha256")
    for split in CACHE_SPLITS:
        missing = [k for k in keys if k not in splits[split]]
        if missing:
            raise CacheError(f"{path}: split {split!r} lacks {missing}; delete {path.parent} and "
                             "prepare again")
    return manifest


def _npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _save_npy_atomic(path: Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def _source_digest(dataset: ImageListDataset) -> str:
    """Digest of the ordered (relative path, label) list: changes when the source tree's lists change."""
    h = hashlib.sha256()
    base = Path(getattr(dataset, "base", dataset.root))
    for path, label in dataset.samples:
        try:
            rel = path.relative_to(base).as_posix()
        except ValueError:
            rel = path.as_posix()
        h.update(f"{rel}\t{label}\n".encode())
    return h.hexdigest()


def _decode_chunk(task: tuple[int, Sequence[str], int]) -> tuple[int, np.ndarray, list[tuple[int, str]]]:
    """Decode and resize one chunk of images: ``(start, uint8 (k, S, S, 3), [(row, error), ...])``."""
    start, paths, size = task
    out = np.zeros((len(paths), size, size, 3), dtype=np.uint8)
    failures: list[tuple[int, str]] = []
    for j, path in enumerate(paths):
        try:
            out[j] = load_resized(path, size)
        except (CorruptImageError, OSError) as exc:
            failures.append((j, str(exc)))
    return start, out, failures


def _watch_parent(parent: int) -> None:
    """Exit this worker as soon as its parent process is gone."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _worker_init(parent: int) -> None:
    """In a decoding worker: leave Ctrl-C to the parent, never outlive it (even when SIGKILLed)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:  # Linux: the kernel sends this worker SIGKILL when the parent dies
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _default_workers() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


@dataclass
class _SplitState:
    """Progress of one split, saved after every chunk (``<split>.progress.json``)."""

    dataset: str
    split: str
    size: int
    source_sha256: str
    num_source: int
    next: int = 0
    written: int = 0
    skipped: list[list[Any]] = field(default_factory=list)  # [source index, relative path, error]
    complete: bool = False
    images_sha256: str = ""
    labels_sha256: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form for JSON."""
        return dict(self.__dict__)


def _write_chunk(images: np.ndarray, state: _SplitState, rows: np.ndarray, progress_path: Path, next_index: int, skipped: list[list[Any]]) -> None:
    """Store decoded ``rows`` after the rows already written, then record progress atomically."""
    images[state.written : state.written + len(rows)] = rows
    images.flush()
    state.written += len(rows)
    state.next = next_index
    state.skipped.extend(skipped)
    atomic_write_json(progress_path, state.to_dict())


def _finalise_images(partial: Path, final: Path, shape: tuple[int, ...]) -> None:
    """Shrink the preallocated array to the rows actually written and move it into place."""
    offset = _npy_offset(partial)
    header = _npy_header(shape, np.uint8)
    nbytes = int(np.prod(shape))
    if len(header) == offset:
        with open(partial, "r+b") as f:
            f.write(header)
            f.truncate(offset + nbytes)
            f.flush()
            os.fsync(f.fileno())
    else:  # header length changed (rare): copy the rows into a fresh file
        src = np.load(partial, mmap_mode="r")
        tmp = partial.with_name(partial.name + ".shrink")
        dst = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        for i in range(0, shape[0], 1024):
            dst[i : i + 1024] = src[i : i + 1024]
        dst.flush()
        del src, dst
        os.replace(tmp, partial)
    os.replace(partial, final)


def _prepare_split(
    name: str,
    dataset: ImageListDataset,
    out: Path,
    size: int,
    workers: int,
    skip_corrupt: bool,
    progress: bool,
    chunk_size: int,
) -> dict[str, Any]:
    split = dataset.split
    n = len(dataset)
    progress_path = out / f"{split}.progress.json"
    partial = out / f"{split}_images.npy.partial"
    final_images, final_labels = out / f"{split}_images.npy", out / f"{split}_labels.npy"
    digest = _source_digest(dataset)
    shape = (max(n, 1), size, size, 3)  # one spare row keeps an empty split mappable
    state = _SplitState(name, split, size, digest, n)
    saved = None
    if progress_path.is_file():
        try:
            saved = _SplitState(**json.loads(progress_path.read_text()))
        except (TypeError, ValueError):
            saved = None
        if saved is None or (saved.dataset, saved.size, saved.source_sha256, saved.num_source) != (name, size, digest, n):
            log.warning("%s: progress marker is for other settings or unreadable; starting %s again", progress_path, split)
            saved = None
    if saved is not None and saved.complete and final_images.is_file() and final_labels.is_file():
        state = saved
    else:
        images = None
        if saved is not None and not saved.complete and saved.next > 0 and partial.is_file():
            images = np.lib.format.open_memmap(partial, mode="r+")
            if images.shape == shape and images.dtype == np.uint8:
                state = saved
                log.info("%s %s: resuming at image %d of %d", name, split, state.next, n)
            else:
                del images
                images = None
        if images is None:
            partial.unlink(missing_ok=True)
            images = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=shape)
        base = Path(getattr(dataset, "base", dataset.root))
        paths = [str(p) for p, _ in dataset.samples]
        # Chunks small enough to keep every worker busy, at most chunk_size (the resume granularity).
        step = max(1, min(chunk_size, math.ceil((n - state.next) / (4 * workers)))) if workers > 1 else chunk_size
        tasks = [(s, paths[s : s + step], size) for s in range(state.next, n, step)]
        bar = tqdm(total=n, initial=state.next, desc=f"{name} {split}", unit="img", disable=not progress)
        pool = None
        if workers > 1 and len(tasks) > 1:
            pool = ProcessPoolExecutor(max_workers=workers, initializer=_worker_init,
                                       initargs=(os.getpid(),))
        try:
            results: Iterator = pool.map(_decode_chunk, tasks) if pool else map(_decode_chunk, tasks)
            for start, rows, failures in results:
                skipped = []
                if failures:
                    named = [(start + j, dataset.samples[start + j][0], err) for j, err in failures]
                    if not skip_corrupt:
                        listing = "\n  ".join(f"{p}: {err}" for _, p, err in named)
                        del images  # a strict failure keeps nothing of this split
                        partial.unlink(missing_ok=True)
                        progress_path.unlink(missing_ok=True)
                        raise CorruptImageError(
                            f"{name} {split}: {len(named)} image(s) cannot be decoded:\n  {listing}\n"
                            "Replace them, or pass skip_corrupt=True (heatup prepare --skip-corrupt) to leave them out; "
                            "skipped files are listed in the cache manifest."
                        )
                    bad = {j for j, _ in failures}
                    rows = rows[[j for j in range(len(rows)) if j not in bad]]
                    for i, p, err in named:
                        log.warning("skipping corrupt image %s: %s", p, err)
                        rel = Path(p).relative_to(base).as_posix() if Path(p).is_relative_to(base) else str(p)
                        skipped.append([i, rel, err])
                _write_chunk(images, state, rows, progress_path, start + len(rows) + len(failures), skipped)
                bar.update(len(rows) + len(failures))
        finally:
            bar.close()
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        del images
        skipped_rows = {int(s[0]) for s in state.skipped}
        labels = np.array([lab for i, (_, lab) in enumerate(dataset.samples) if i not in skipped_rows], dtype=np.int64)
        if len(labels) != state.written:
            raise CacheError(f"{partial}: {state.written} rows written but {len(labels)} labels; delete {out} and prepare again")
        _finalise_images(partial, final_images, (state.written, size, size, 3))
        _save_npy_atomic(final_labels, labels)
        state.images_sha256 = _sha256_file(final_images, _npy_offset(final_images))
        state.labels_sha256 = _sha256_file(final_labels, _npy_offset(final_labels))
        state.complete = True
        atomic_write_json(progress_path, state.to_dict())
    return {
        "count": state.written,
        "source_count": n,
        "num_classes": dataset.num_classes,
        "class_ids": list(dataset.class_ids),
        "images": final_images.name,
        "labels": final_labels.name,
        "shape": [state.written, size, size, 3],
        "images_sha256": state.images_sha256,
        "labels_sha256": state.labels_sha256,
        "source_sha256": digest,
        "skipped": [{"path": rel, "error": err} for _, rel, err in state.skipped],
    }


def _check_files(out: Path, manifest: dict[str, Any], verify: bool) -> None:
    """Raise ``CacheError`` unless the split files agree with ``manifest`` (full checksums if ``verify``)."""
    size = manifest["size"]
    for split, info in manifest["splits"].items():
        images_path, labels_path = out / info["images"], out / info["labels"]
        images = _load_npy(images_path, mmap=True)
        _load_npy(labels_path, mmap=True)
        expected = (info["count"], size, size, 3)
        if images.shape != expected or images.dtype != np.uint8:
            raise CacheError(f"{images_path}: shape {images.shape} dtype {images.dtype}, manifest says {expected} uint8")
        del images
        if _sha256_file(labels_path, _npy_offset(labels_path)) != info["labels_sha256"]:
            raise CacheError(f"{labels_path}: checksum differs from the manifest; delete {out} and prepare again")
        if verify and _sha256_file(images_path, _npy_offset(images_path)) != info["images_sha256"]:
            raise CacheError(f"{images_path}: checksum differs from the manifest; delete {out} and prepare again")


def prepare_dataset(
    name: str,
    root: str | os.PathLike,
    out: str | os.PathLike,
    size: int = 256,
    workers: int | None = None,
    skip_corrupt: bool = False,
    progress: bool = True,
    chunk_size: int = 256,
    verify: bool = False,
) -> Path:
    """Decode every image of dataset ``name`` under ``root`` once, resize to ``size`` x ``size``, cache it in ``out``.

    Resumable (an interrupted run continues from its last finished chunk) and idempotent (a
    finished cache with the same dataset, size and source lists is only checked; ``verify=True``
    also recomputes the image checksums). ``workers=None`` decodes on every CPU core; 0 or 1
    decodes in this process. Corrupt images raise ``CorruptImageError`` naming them unless
    ``skip_corrupt``, which leaves them out and lists them in the manifest. Returns ``out``.
    """
    cls = dataset_class(name)
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    if workers is not None and (not isinstance(workers, int) or workers < 0):
        raise ValueError(f"workers must be None or an integer >= 0, got {workers!r}")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    n_workers = _default_workers() if workers is None else workers
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"cache folder {str(out)!r} is a file, not a folder; choose "
                                 "another out")
    manifest_path = out / "manifest.json"
    datasets = {split: cls(root, split) for split in CACHE_SPLITS}
    digests = {split: _source_digest(ds) for split, ds in datasets.items()}
    if manifest_path.is_file():
        manifest = _read_manifest(manifest_path)
        wanted = {"dataset": name, "size": size, "version": CACHE_VERSION}
        have = {k: manifest.get(k) for k in wanted}
        stale = {s: digests[s] != manifest.get("splits", {}).get(s, {}).get("source_sha256") for s in CACHE_SPLITS}
        if have != wanted or any(stale.values()):
            reason = f"it holds {have}" if have != wanted else f"the source lists changed for {[s for s, v in stale.items() if v]}"
            raise CacheError(
                f"{out} already holds a cache that does not match {wanted} ({reason}); "
                "choose another --out or delete that folder"
            )
        _check_files(out, manifest, verify)
        log.info("%s: cache already complete and verified", out)
        return out
    ensure_folder(out, "cache folder")
    remove_stale_temps(out)
    splits = {
        split: _prepare_split(name, ds, out, size, n_workers, skip_corrupt, progress, chunk_size)
        for split, ds in datasets.items()
    }
    first = datasets["train"]
    manifest = {
        "format": "heatup-image-cache",
        "version": CACHE_VERSION,
        "dataset": name,
        "source_root": str(Path(root).expanduser().resolve()),
        "source_base": str(Path(getattr(first, "base", first.root)).resolve()),
        "size": size,
        "resize": RESIZE,
        "splits": splits,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_json(manifest_path, manifest)
    for split in CACHE_SPLITS:
        (out / f"{split}.progress.json").unlink(missing_ok=True)
    return out


# --------------------------------------------------------------------------- reading
@dataclass
class ImageCache:
    """One split of a prepared cache: ``images`` uint8 memmap (N, S, S, 3), ``labels`` int64 (N,)."""

    path: Path
    split: str
    images: np.ndarray
    labels: np.ndarray
    manifest: dict[str, Any]

    @classmethod
    def open(cls, path: str | os.PathLike, split: str) -> ImageCache:
        """Open split ``split`` ("train" or "test") of the cache folder ``path`` (memory-mapped, read-only)."""
        if split not in CACHE_SPLITS:
            raise ValueError(f"split must be one of {CACHE_SPLITS}, got {split!r}")
        path = Path(path).expanduser()
        manifest_path = path / "manifest.json"
        if not manifest_path.is_file():
            raise FileNotFoundError(
                f"no image cache at {str(path)!r} (missing manifest.json); build one with "
                f"`heatup prepare DATASET --root <dataset folder> --out {path}`"
            )
        manifest = _read_manifest(manifest_path)
        if manifest.get("version") != CACHE_VERSION:
            raise CacheError(f"{manifest_path}: cache version {manifest.get('version')!r}, this library reads {CACHE_VERSION}")
        info = manifest["splits"][split]
        images = _load_npy(path / info["images"], mmap=True)
        labels = _load_npy(path / info["labels"], mmap=False)
        size, count, classes = manifest.get("size"), info["count"], info["num_classes"]
        again = f"delete {path} and prepare the cache again"
        if images.dtype != np.uint8 or images.shape[1:] != (size, size, 3):
            raise CacheError(f"{path / info['images']}: {images.dtype} {images.shape}, the "
                             f"manifest says uint8 (N, {size}, {size}, 3); {again}")
        if labels.ndim != 1 or not images.shape[0] == labels.shape[0] == count:
            raise CacheError(f"{path}: {split} has {images.shape[0]} images, {labels.shape} "
                             f"labels, manifest {count}; {again}")
        in_range = not len(labels) or 0 <= labels.min() <= labels.max() < classes
        if labels.dtype.kind not in "iu" or not in_range:
            raise CacheError(f"{path / info['labels']}: labels must be integers in [0, {classes}); "
                             f"{again}")
        return cls(path, split, images, labels.astype(np.int64, copy=False), manifest)

    @property
    def size(self) -> int:
        """Side S of the stored images."""
        return int(self.images.shape[1])

    @property
    def class_ids(self) -> list[int]:
        """Original dataset class id of each label 0..C-1."""
        return list(self.manifest["splits"][self.split]["class_ids"])

    @property
    def num_classes(self) -> int:
        """Number of classes C in this split."""
        return int(self.manifest["splits"][self.split]["num_classes"])

    @property
    def dataset(self) -> str:
        """Dataset name ("cub200", "cars196" or "sop")."""
        return str(self.manifest["dataset"])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def verify(self) -> None:
        """Recompute this split's checksums and raise ``CacheError`` if they differ from the manifest."""
        info = self.manifest["splits"][self.split]
        for key, name in (("images_sha256", info["images"]), ("labels_sha256", info["labels"])):
            p = self.path / name
            if _sha256_file(p, _npy_offset(p)) != info[key]:
                raise CacheError(f"{p}: checksum differs from the manifest")

    def __repr__(self) -> str:
        return f"ImageCache({str(self.path)!r}, split={self.split!r}, images={len(self)}, size={self.size}, classes={self.num_classes})"
