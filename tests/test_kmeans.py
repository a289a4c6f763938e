"""Tests of heatup_lib.kmeans: recovery of known centres, determinism, seeding, edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from heatup_lib.kmeans import _min_sq_dist, _reassign, _update, kmeans
from heatup_lib.metrics import normalized_mutual_info

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def blobs(num_centres: int = 6, per: int = 50, dim: int = 8, spread: float = 0.05, seed: int = 0):
    """Well separated Gaussian blobs: centres (k, D) at distance >> spread, points (N, D), labels (N,)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_centres, dim)) * 5
    y = np.repeat(np.arange(num_centres), per)
    x = centres[y] + rng.normal(size=(len(y), dim)) * spread
    perm = rng.permutation(len(y))
    return x[perm], y[perm], centres


def test_recovers_known_centres():
    x, y, centres = blobs()
    res = kmeans(x, 6, seed=0)
    assert res.converged and res.num_iter <= 50
    found = res.centres.double().numpy()
    cost = ((found[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    assert np.sqrt(cost[rows, cols]).max() < 0.05  # each true centre found, up to the sample mean's noise
    assert normalized_mutual_info(y, res.labels.numpy()) == pytest.approx(1.0)
    # the inertia is the sum of squared distances to the assigned centres
    inertia = ((x - found[res.labels.numpy()]) ** 2).sum()
    assert res.inertia == pytest.approx(inertia, rel=1e-4)


def test_lloyd_reaches_a_fixed_point():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 3))
    res = kmeans(x, 7, seed=2, tol=0.0, max_iter=200)
    assert res.converged
    labels = res.labels.numpy()
    c = res.centres.numpy()
    # every centre is the mean of its points, and every point is nearest its own centre
    for j in range(7):
        np.testing.assert_allclose(c[j], x[labels == j].mean(axis=0), atol=1e-5)
    d = ((x[:, None, :] - c[None]) ** 2).sum(-1)
    assert (d[np.arange(len(x)), labels] <= d.min(axis=1) + 1e-6).all()


@pytest.mark.parametrize("init", ["k-means++", "random"])
def test_same_seed_same_result(init):
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.normal(size=(400, 5)).astype(np.float32))
    a = kmeans(x, 30, seed=5, init=init)
    b = kmeans(x, 30, seed=5, init=init)
    assert torch.equal(a.labels, b.labels) and torch.equal(a.centres, b.centres) and a.inertia == b.inertia
    c = kmeans(x, 30, seed=6, init=init)
    assert not torch.equal(a.centres, c.centres)


def test_kmeanspp_covers_blobs_better_than_random():
    # 100 tiny blobs, 3 points each: a seeding that puts two centres in one blob cannot recover
    x, y, _ = blobs(num_centres=100, per=3, dim=16, spread=0.01, seed=4)
    covered = {}
    for init, rounds in (("random", 64), ("k-means++", 99), ("k-means++", 8)):
        res = kmeans(x, 100, seed=0, init=init, init_rounds=rounds, max_iter=1)
        # blobs that came out as exactly one cluster
        members = {}
        for i, c in enumerate(res.labels.tolist()):
            members.setdefault(c, set()).add(i)
        blobs_ = {b: set(np.flatnonzero(y == b).tolist()) for b in range(100)}
        covered[init, rounds] = sum(m in blobs_.values() for m in members.values())
    # exact k-means++ (one centre per round) puts one centre in every blob
    assert covered["k-means++", 99] == 100
    # batched k-means++ (8 rounds) does far better than uniform seeding
    assert covered["k-means++", 8] > covered["random", 64] + 10


def test_k_equals_n_and_duplicates():
    x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    res = kmeans(x, 4, seed=0)
    assert res.inertia == pytest.approx(0.0, abs=1e-9)
    assert sorted(res.labels.tolist()) == [0, 1, 2, 3]
    dup = np.repeat(np.array([[0.0, 0.0], [3.0, 4.0]]), 5, axis=0)  # two distinct points, k = 3
    res = kmeans(dup, 3, seed=1)
    assert res.inertia == pytest.approx(0.0, abs=1e-9)
    assert normalized_mutual_info(np.repeat([0, 1], 5), res.labels.numpy()) == pytest.approx(1.0)


def test_empty_cluster_takes_the_farthest_point():
    x = torch.tensor([[0.0], [1.0], [10.0], [2.0]])
    labels = torch.tensor([0, 0, 0, 0])  # cluster 1 empty
    dist = torch.tensor([1.0, 0.0, 81.0, 1.0])
    c = _update(x, labels, 2, dist, chunk=2)
    assert c.tolist() == [[3.25], [10.0]]


def test_reassign_matches_a_full_search():
    # after some centres move, searching only those (and the points they owned) gives the full answer
    rng = np.random.default_rng(9)
    x = torch.from_numpy(rng.integers(-4, 5, size=(500, 6)).astype(np.float64))  # exact arithmetic
    x_sq = (x * x).sum(dim=1)
    old = x[rng.choice(500, 40, replace=False)].clone()
    dist, labels = _min_sq_dist(x, x_sq, old, 64)
    moved = torch.zeros(40, dtype=torch.bool)
    moved[[3, 7, 20, 39]] = True
    new = old.clone()
    new[[3, 7, 20]] += torch.from_numpy(rng.integers(-2, 3, size=(3, 6)).astype(np.float64))
    new[39] = old[5]  # on top of an unmoved centre: the tied points stay with the lower index, 5
    new[3] = old[30]  # ... and here move to the lower index, 3
    got_d, got_l = _reassign(x, x_sq, new, labels, dist, moved, 64)
    ref_d, ref_l = _min_sq_dist(x, x_sq, new, 64)
    assert torch.equal(got_l, ref_l) and torch.equal(got_d, ref_d)
    assert (got_l == 39).sum() == 0 and (labels == 30).any() and not (got_l == 30).any()
    # nothing moved: nothing to do
    d, l = _reassign(x, x_sq, old, labels, dist, torch.zeros(40, dtype=torch.bool), 64)
    assert torch.equal(l, labels) and torch.equal(d, dist)


def test_auto_init():
    # k-means++ while a seeding round draws at most 32 centres, a uniform draw beyond
    x = np.random.default_rng(10).normal(size=(300, 4))
    for k, rounds, like in ((65, 2, "k-means++"), (66, 2, "random"), (50, 1, "k-means++")):
        auto = kmeans(x, k, seed=3, init="auto", init_rounds=rounds, max_iter=1)
        ref = kmeans(x, k, seed=3, init=like, init_rounds=rounds, max_iter=1)
        assert torch.equal(auto.centres, ref.centres), (k, rounds)


def test_bad_input_errors():
    x = np.random.default_rng(0).normal(size=(10, 2))
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, N=10\], got 11"):
        kmeans(x, 11)
    with pytest.raises(ValueError, match="got 0"):
        kmeans(x, 0)
    with pytest.raises(ValueError, match="init must be one of"):
        kmeans(x, 2, init="kmeans||")
    with pytest.raises(ValueError, match="max_iter must be an integer >= 1"):
        kmeans(x, 2, max_iter=0)
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"rows hold NaN or inf, e.g. rows \[3\]"):
        kmeans(bad, 2)
    with pytest.raises(ValueError, match="2-D"):
        kmeans(x[:, 0], 2)


def test_chunk_size_changes_nothing():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(200, 4))
    ref = kmeans(x, 9, seed=1)
    for chunk in (1, 13, 64):
        res = kmeans(x, 9, seed=1, chunk_size=chunk)
        assert torch.equal(res.labels, ref.labels)
        torch.testing.assert_close(res.centres, ref.centres, rtol=0, atol=1e-12)


@CUDA
def test_cuda_matches_cpu():
    x, y, _ = blobs(num_centres=50, per=20, dim=32, seed=8)
    xt = torch.from_numpy(x)  # float64: the same seeding and assignments on both devices
    cpu = kmeans(xt, 50, seed=0)
    gpu = kmeans(xt.cuda(), 50, seed=0)
    assert torch.equal(gpu.labels.cpu(), cpu.labels)
    torch.testing.assert_close(gpu.centres.cpu(), cpu.centres, rtol=0, atol=1e-9)
