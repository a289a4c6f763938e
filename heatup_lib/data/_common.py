"""Shared machinery of the benchmark readers: list-file checks, RGB decoding, safe archives, downloads."""

from __future__ import annotations

import logging
import os
import stat
import tarfile
import urllib.error
import zipfile
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

__all__ = [
    "SPLITS",
    "DatasetNotFoundError",
    "ListFileError",
    "CorruptImageError",
    "UnsafeArchiveError",
    "DownloadError",
    "check_split",
    "check_relpath",
    "UniqueImages",
    "read_list_file",
    "to_rgb",
    "load_rgb",
    "load_resized",
    "resize_rgb",
    "safe_extract",
    "download_archives",
    "ImageListDataset",
]

log = logging.getLogger(__name__)

SPLITS = ("train", "test", "all")

class DatasetNotFoundError(FileNotFoundError):
    """A dataset root that is missing or lacks files the reader needs."""


class ListFileError(ValueError):
    """A bad line in an official list or annotation file (the message names the file and line)."""


class CorruptImageError(ValueError):
    """An image file that exists but cannot be decoded (the message names the file)."""


class UnsafeArchiveError(ValueError):
    """An archive member that would be written outside the extraction folder."""


class DownloadError(RuntimeError):
    """A download that failed (no network, dead address, wrong checksum)."""


def check_split(split: str) -> str:
    """Return ``split`` if it is one of ``SPLITS``, else raise ``ValueError``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def missing_root_error(
    dataset: str, root: Path, expected: Sequence[str], where: str, layout: str = ""
) -> DatasetNotFoundError:
    """Build the one error raised for a missing or incomplete dataset root."""
    root = Path(root)
    if not root.exists():
        found = "the folder does not exist"
    elif not root.is_dir():
        found = "it is not a folder"
    else:
        entries = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
        shown = ", ".join(entries[:20]) + (f", ... ({len(entries)} entries)" if len(entries) > 20 else "")
        found = f"it contains: {shown}" if entries else "it is empty"
    lines = [
        f"{dataset}: no usable copy of the dataset under root={str(root)!r}.",
        "Expected (relative to root): " + ", ".join(expected) + ".",
        f"Found: {found}.",
    ]
    if layout:
        lines.append(layout)
    lines.append(f"Where to get it: {where}")
    return DatasetNotFoundError("\n".join(lines))


class UniqueImages:
    """What a reader has listed so far: an image id or file listed twice is a ``ListFileError``.

    A file is known by its device and inode, so that one image under two names (``a//b.jpg``,
    a link) is caught too: a test image listed twice would be its own nearest neighbour.
    """

    def __init__(self) -> None:
        self._ids: dict[tuple[str, int], str] = {}
        self._files: dict[tuple[int, int], tuple[str, str]] = {}

    def add_id(self, image_id: int, scope: str, where: str, line: str) -> None:
        """Record ``image_id`` of the list ``scope``; a second time raises ``ListFileError``."""
        first = self._ids.setdefault((scope, image_id), where)
        if first != where:
            raise ListFileError(f"{where}: duplicate image id {image_id} (first at {first}): "
                                f"{line!r}")

    def add_file(self, info: os.stat_result, rel: str, where: str, line: str) -> None:
        """Record file ``rel`` (``os.stat``); the same file again is a ``ListFileError``."""
        first_rel, first = self._files.setdefault((info.st_dev, info.st_ino), (rel, where))
        if first != where:
            raise ListFileError(f"{where}: image {rel!r} is the file already listed at {first} as "
                                f"{first_rel!r}; each image may be listed once: {line!r}")


def check_relpath(
    rel: str, base: Path, list_file: Path, line_no: int, line: str,
    unique: UniqueImages | None = None,
) -> Path:
    """Resolve a path read from a list file under ``base``; reject absolute, ``..``, missing paths.

    With ``unique``, a file listed before (under any name) is rejected too.
    """
    posix, windows = PurePosixPath(rel), PureWindowsPath(rel)
    where = f"{list_file}:{line_no}"
    if posix.is_absolute() or windows.is_absolute() or windows.drive:
        raise ListFileError(f"{where}: absolute image path {rel!r} (paths must be relative to {base}): {line!r}")
    if ".." in posix.parts or ".." in windows.parts:
        raise ListFileError(f"{where}: image path {rel!r} leaves the dataset folder ('..'): {line!r}")
    path = base / posix
    try:
        info = os.stat(path)
    except OSError:
        info = None
    if info is None or not stat.S_ISREG(info.st_mode):
        raise ListFileError(f"{where}: image {rel!r} listed but missing (looked for {path})")
    if unique is not None:
        unique.add_file(info, rel, where, line)
    return path


def read_list_file(
    path: Path, num_fields: int | Sequence[int], header: Sequence[str] | None = None
) -> list[tuple[int, str, list[str]]]:
    """Read a whitespace-separated list file: ``(line_no, line, fields)`` for each non-blank line.

    ``num_fields`` is the accepted field count (or counts); ``header`` is the exact first line
    (split into words) when the file has one. Malformed lines raise ``ListFileError``.
    """
    path = Path(path)
    counts = (num_fields,) if isinstance(num_fields, int) else tuple(num_fields)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ListFileError(f"{path}: not UTF-8 text ({exc})") from exc
    rows: list[tuple[int, str, list[str]]] = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if header is not None and line_no == 1:
            if [f.lower() for f in fields] != [h.lower() for h in header]:
                raise ListFileError(
                    f"{path}:1: malformed header {line!r}, expected {' '.join(header)!r}"
                )
            continue
        if len(fields) not in counts:
            raise ListFileError(
                f"{path}:{line_no}: malformed line {line!r}: expected {' or '.join(map(str, counts))} "
                f"whitespace-separated fields, got {len(fields)}"
            )
        rows.append((line_no, line, fields))
    if header is not None and not text.strip():
        raise ListFileError(f"{path}: empty file, expected the header {' '.join(header)!r}")
    return rows


def parse_int(value: str, path: Path, line_no: int, line: str, what: str) -> int:
    """Parse an integer field of a list file or raise ``ListFileError`` naming file and line."""
    try:
        return int(value)
    except ValueError:
        raise ListFileError(f"{path}:{line_no}: malformed line {line!r}: {what} {value!r} is not an integer") from None


def check_label(value: int, low: int, high: int, path: Path, line_no: int, line: str) -> int:
    """Return ``value`` if ``low <= value <= high`` else raise ``ListFileError``."""
    if not low <= value <= high:
        raise ListFileError(f"{path}:{line_no}: class id {value} out of range [{low}, {high}]: {line!r}")
    return value


# --------------------------------------------------------------------------- images
def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB: transparency is composited on white, 16-bit grey is rescaled."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0
        grey = np.clip(np.round(a * (255.0 / peak)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if img.mode == "F":
        a = np.asarray(img, dtype=np.float64)
        return Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8), mode="L").convert("RGB")
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode == "P" and "transparency" in img.info
    )
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def load_rgb(path: str | os.PathLike, draft_size: int | None = None) -> Image.Image:
    """Decode an image file into RGB; raise ``CorruptImageError`` naming the file if it cannot be read.

    ``draft_size`` lets the JPEG decoder skip detail beyond that size (the image stays at least
    that large on both sides), which makes decoding for a small resize several times faster.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            if draft_size is not None and img.format == "JPEG":
                img.draft(img.mode, (draft_size, draft_size))
            img.load()
            return to_rgb(img)
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise CorruptImageError(f"corrupt or unreadable image {path}: {exc}") from exc


def resize_rgb(img: Image.Image, size: int) -> np.ndarray:
    """Resize an RGB image to ``size`` x ``size`` (aspect ratio not kept, SPEC §5); uint8 (S, S, 3)."""
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8).reshape(size, size, 3)


def load_resized(path: str | os.PathLike, size: int) -> np.ndarray:
    """Decode ``path`` and resize it exactly as the cache does: uint8 (size, size, 3)."""
    return resize_rgb(load_rgb(path, draft_size=size), size)


# --------------------------------------------------------------------------- archives
def _member_problem(name: str, dest: Path) -> str | None:
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if posix.is_absolute() or windows.is_absolute() or windows.drive:
        return "absolute path"
    if ".." in posix.parts or ".." in windows.parts:
        return "path with '..'"
    target = (dest / posix).resolve()
    if target != dest and dest not in target.parents:
        return "path outside the extraction folder"
    return None


def _link_problem(member_name: str, link: str, dest: Path, hard: bool) -> str | None:
    if PurePosixPath(link).is_absolute():
        return f"link to absolute path {link!r}"
    base = dest if hard else (dest / PurePosixPath(member_name)).parent
    target = (base / link).resolve()
    if target != dest and dest not in target.parents:
        return f"link to {link!r} outside the extraction folder"
    return None


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Extract a .tar(.gz/.bz2/.xz) or .zip archive into ``dest``, refusing any member that escapes it.

    Rejected: absolute paths, ``..`` components, links pointing outside ``dest``, device files.
    The whole archive is checked before anything is written.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    dest = dest.resolve()
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:
                problem = _member_problem(info.filename, dest)
                mode = info.external_attr >> 16
                if problem is None and stat.S_ISLNK(mode):
                    problem = "symbolic link (not allowed in zip archives)"
                if problem:
                    raise UnsafeArchiveError(f"{archive}: refusing member {info.filename!r}: {problem}")
            zf.extractall(dest)
        return dest
    try:
        tf = tarfile.open(archive)
    except tarfile.TarError as exc:
        raise UnsafeArchiveError(f"{archive}: not a readable tar or zip archive ({exc})") from exc
    with tf:
        members = tf.getmembers()
        for m in members:
            problem = _member_problem(m.name, dest)
            if problem is None and (m.issym() or m.islnk()):
                problem = _link_problem(m.name, m.linkname, dest, hard=m.islnk())
            if problem is None and not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
                problem = "special file (device or fifo)"
            if problem:
                raise UnsafeArchiveError(f"{archive}: refusing member {m.name!r}: {problem}")
        if hasattr(tarfile, "data_filter"):
            tf.extractall(dest, members=members, filter="data")
        else:  # pragma: no cover - Python without PEP 706
            tf.extractall(dest, members=members)
    return dest


def download_archives(
    dataset: str,
    files: Iterable[tuple[Sequence[str], str, str | None]],
    root: Path,
    extract: bool = True,
    manual: str = "",
) -> None:
    """Fetch each ``(mirrors, filename, md5)`` into ``root`` (trying mirrors in order), verify, extract.

    A file already present with the right checksum is not fetched again. Failure raises one
    ``DownloadError`` naming every address tried and how to get the data by hand.
    """
    from torchvision.datasets.utils import check_integrity, download_url

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for mirrors, filename, md5 in files:
        target = root / filename
        errors: list[str] = []
        if not (target.is_file() and check_integrity(str(target), md5)):
            for url in mirrors:
                try:
                    download_url(url, str(root), filename=filename, md5=md5)
                except (urllib.error.URLError, OSError, RuntimeError, ValueError) as exc:
                    errors.append(f"{url}: {exc}")
                    log.warning("download of %s failed: %s", url, exc)
                    continue
                if check_integrity(str(target), md5):
                    break
                errors.append(f"{url}: checksum mismatch (expected md5 {md5})")
                target.unlink(missing_ok=True)
            else:
                raise DownloadError(
                    f"{dataset}: could not download {filename}; tried:\n  "
                    + "\n  ".join(errors)
                    + f"\nThe historical addresses of this dataset move or die; {manual}"
                )
        if extract and filename.endswith((".tgz", ".tar", ".tar.gz", ".zip", ".tar.bz2", ".tar.xz")):
            log.info("extracting %s", target)
            safe_extract(target, root)


# --------------------------------------------------------------------------- dataset base
class ImageListDataset(Dataset):
    """Base of the readers: finds (or downloads) the dataset under ``root``, reads its samples.

    A reader names its files (``expected``, ``where``; ``mirrors``, ``filename`` and ``md5`` of
    its archive), says where its base folder is (by default ``root/base_folder`` or ``root``
    itself, whichever holds every ``required`` entry, a trailing ``/`` marking a folder) and reads
    it (:meth:`_load`); images are decoded to RGB on access.
    """

    name: str = ""
    expected: tuple[str, ...] = ()
    where: str = ""
    base_folder: str = ""
    required: tuple[str, ...] = ()
    mirrors: tuple[str, ...] = ()
    filename: str = ""
    md5: str | None = None

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        transform: Callable[[Image.Image], Any] | None = None,
        target_transform: Callable[[int], Any] | None = None,
        download: bool = False,
    ) -> None:
        self.root = Path(root).expanduser()
        self.split = check_split(split)
        self.transform = transform
        self.target_transform = target_transform
        self.samples: list[tuple[Path, int]] = []
        self.class_ids: list[int] = []
        self.classes: list[str] = []
        title = type(self).__name__
        if download and self._find_base() is None:
            download_archives(title, self.archives(), self.root, manual="get " + self.where)
        found = self._find_base()
        if found is None:
            raise missing_root_error(title, self.root, self.expected, self.where,
                                     layout=self._missing_hint())
        self._load(found)

    def archives(self) -> list[tuple[Sequence[str], str, str | None]]:
        """The ``(mirrors, filename, md5)`` of the files ``download=True`` fetches."""
        return [(self.mirrors, self.filename, self.md5)] if self.filename else []

    def _find_base(self) -> Any:
        """Where the dataset lies under ``root`` (what :meth:`_load` takes), or None."""
        for base in (self.root / self.base_folder, self.root):
            if all((base / r).is_dir() if r.endswith("/") else (base / r).is_file()
                   for r in self.required):
                return base
        return None

    def _load(self, found: Any) -> None:
        """Read the list files at ``found`` into ``samples``, ``class_ids`` and ``classes``."""
        raise NotImplementedError

    def _missing_hint(self) -> str:
        """A line that says what is wrong with an incomplete root (empty: nothing particular)."""
        return ""

    def _set_records(
        self,
        records: Sequence[tuple[Path, int]],
        names: dict[int, str],
        train_classes: Collection[int],
    ) -> None:
        """Keep this split's records (train: ``train_classes``, test: the others, all: every one).

        Original class ids become labels 0..C-1 (sorted by id).
        """
        train = set(train_classes)
        if self.split == "all":
            kept = list(records)
        else:
            kept = [(p, c) for p, c in records if (c in train) == (self.split == "train")]
        self.class_ids = sorted({c for _, c in kept})
        index = {c: i for i, c in enumerate(self.class_ids)}
        self.samples = [(p, index[c]) for p, c in kept]
        self.classes = [names.get(c, str(c)) for c in self.class_ids]

    @property
    def targets(self) -> list[int]:
        """Labels 0..C-1 of every sample, in order."""
        return [label for _, label in self.samples]

    @property
    def num_classes(self) -> int:
        """Number of classes in this split."""
        return len(self.class_ids)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        path, label = self.samples[index]
        img: Any = load_rgb(path)
        target: Any = label
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return img, target

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, "
            f"images={len(self)}, classes={self.num_classes})"
        )
