"""Batch sources: the in-memory TensorBatches."""

from __future__ import annotations

import pytest
import torch

from heatup_lib.data.batches import TensorBatches
from heatup_lib.seeding import epoch_generator

def test_tensor_batches_order_depends_only_on_the_generator():
    X, y = torch.arange(10.0).unsqueeze(1), torch.arange(10)
    data = TensorBatches(X, y, batch_size=4)
    assert len(data) == 2 and len(TensorBatches(X, y, 4, drop_last=False)) == 3
    first = [b[1].tolist() for b in data.epoch(0, epoch_generator(0, 3))]
    again = [b[1].tolist() for b in data.epoch(0, epoch_generator(0, 3))]
    other = [b[1].tolist() for b in data.epoch(0, epoch_generator(0, 4))]
    assert first == again and first != other
    assert all(len(b) == 4 for b in first) and len(set(sum(first, []))) == 8
    unshuffled = TensorBatches(X, y, 4, shuffle=False, drop_last=False, transform=lambda x: 2 * x)
    batches = list(unshuffled.epoch(0, epoch_generator(0, 0)))
    assert [b[1].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert torch.equal(batches[2][0], torch.tensor([[16.0], [18.0]]))
    # the description (part of a run's parameters) changes when one label changes
    y2 = y.clone()
    y2[0] = 1
    assert data.describe()["sha256"] != TensorBatches(X, y2, 4).describe()["sha256"]
    # ... and so does the transform
    double = TensorBatches(X, y, 4, transform=lambda x: 2 * x).describe()
    triple = TensorBatches(X, y, 4, transform=lambda x: 3 * x).describe()
    assert double["transform"] != triple["transform"] and double["sha256"] == triple["sha256"]
    with pytest.raises(ValueError, match="batch_size=20"):
        TensorBatches(X, y, 20)
