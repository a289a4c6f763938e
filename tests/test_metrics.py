"""Tests of heatup_lib.metrics against brute force in float64, hand-worked cases and sklearn."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from sklearn.metrics import normalized_mutual_info_score

from heatup_lib import metrics as M
from heatup_lib.topk import group_max, group_size, row_topk

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


# ----------------------------------------------------------------------------- references
def brute_ranking(x: np.ndarray) -> np.ndarray:
    """Full ranking (N, N-1) of the other samples: cosine in float64, ties to the lower index."""
    x = np.asarray(x, dtype=np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = x @ x.T
    n = len(x)
    out = np.empty((n, n - 1), dtype=np.int64)
    for i in range(n):
        others = np.array([j for j in range(n) if j != i])
        order = np.lexsort((others, -s[i, others]))  # primary: -similarity, then index
        out[i] = others[order]
    return out


def brute_metrics(x: np.ndarray, y: np.ndarray, ks, singletons: str = "exclude") -> dict[str, float]:
    """Recall@K, MAP@R and R-Precision from the full float64 ranking, with plain loops."""
    y = np.asarray(y)
    rank = brute_ranking(x)
    rec = {k: [] for k in ks}
    ap, rp = [], []
    for i in range(len(y)):
        rel = (y[rank[i]] == y[i]).astype(float)
        r = int(rel.sum())
        if r == 0 and singletons == "exclude":
            continue
        for k in ks:
            rec[k].append(float(rel[:k].any()))
        if r == 0:
            ap.append(0.0)
            rp.append(0.0)
            continue
        prec = [rel[: j + 1].sum() / (j + 1) for j in range(r)]
        ap.append(sum(p * rel[j] for j, p in enumerate(prec)) / r)
        rp.append(rel[:r].sum() / r)
    out = {f"recall@{k}": float(np.mean(v)) for k, v in rec.items()}
    out["map@r"] = float(np.mean(ap))
    out["r_precision"] = float(np.mean(rp))
    return out


def tie_data(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows of +-0.5 in 4-d: exactly unit norm, dot products multiples of 1/4, so ties are exact."""
    rng = np.random.default_rng(seed)
    x = rng.choice([-0.5, 0.5], size=(n, 4))
    y = rng.integers(0, 5, size=n)
    return x, y


def random_data(n: int = 80, d: int = 6, classes: int = 9, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian rows with class-dependent means, plus a few exact duplicates."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, size=n)
    x = rng.normal(size=(classes, d))[y] + rng.normal(size=(n, d))
    x[5] = x[n // 4 + 2]  # exact duplicates
    x[n // 3] = x[n // 3 + 1]
    return x, y


# ----------------------------------------------------------------------------- hand-worked
def hand_case() -> tuple[np.ndarray, np.ndarray]:
    """Five unit vectors at 0, 10, 30, 100 and 180 degrees, labelled A B A B A."""
    ang = np.deg2rad([0.0, 10.0, 30.0, 100.0, 180.0])
    return np.stack([np.cos(ang), np.sin(ang)], axis=1), np.array([0, 1, 0, 1, 0])


def test_hand_worked_example():
    # rankings by angle: 0: [1 2 3 4], 1: [0 2 3 4], 2: [1 0 3 4], 3: [2 4 1 0], 4: [3 2 1 0]
    # first correct neighbour at positions 2, 3, 2, 3, 2; R = 2, 1, 2, 1, 2;
    # AP@R = 1/4, 0, 1/4, 0, 1/4; R-Precision = 1/2, 0, 1/2, 0, 1/2
    x, y = hand_case()
    assert M.recall_at_k(x, y, ks=(1, 2, 3, 4)) == pytest.approx({1: 0.0, 2: 0.6, 3: 1.0, 4: 1.0})
    assert M.map_at_r(x, y) == pytest.approx(0.15)
    assert M.r_precision(x, y) == pytest.approx(0.3)
    _, idx = M.nearest_neighbours(x, 4)
    assert idx.tolist() == [[1, 2, 3, 4], [0, 2, 3, 4], [1, 0, 3, 4], [2, 4, 1, 0], [3, 2, 1, 0]]


def test_duplicate_of_query_is_a_neighbour_excluded_by_index():
    x = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    y = np.array([0, 1, 0, 1])
    sims, idx = M.nearest_neighbours(x, 3)
    # query 0 ties with 1 and 2 at similarity 1: lower index first, itself never
    assert idx.tolist() == [[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]]
    assert sims[:, 0].tolist() == [1.0, 1.0, 1.0, 0.0]
    # first correct neighbour: query 0 at position 2 (1 is class 1), query 1 at 3 (behind the
    # tied 0 and 2), query 2 at 1, query 3 at 2 (behind 0, tied with 1 and 2)
    assert M.recall_at_k(x, y, ks=(1, 2, 3)) == {1: 0.25, 2: 0.75, 3: 1.0}


# ----------------------------------------------------------------------------- brute force
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("make", [tie_data, random_data])
def test_neighbours_match_brute_force(make, dtype):
    x, _ = make()
    x = x.astype(dtype)
    ref = brute_ranking(x)
    for chunk in (1, 3, 7, None):
        sims, idx = M.nearest_neighbours(x, 12, chunk_size=chunk)
        if make is tie_data:  # exact ties: the order itself is defined
            np.testing.assert_array_equal(idx.numpy(), ref[:, :12])
        else:  # continuous data: compare similarities (float32 may swap near ties)
            xn = x.astype(np.float64) / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
            ref_sims = np.take_along_axis(xn @ xn.T, ref[:, :12], axis=1)
            np.testing.assert_allclose(sims.double().numpy(), ref_sims, atol=1e-6 if dtype == np.float32 else 1e-12)
        assert sims.dtype == (torch.float64 if dtype == np.float64 else torch.float32)


@pytest.mark.parametrize("make", [tie_data, random_data])
def test_metrics_match_brute_force(make):
    x, y = make()
    ks = (1, 2, 4, 8, len(y) - 1)
    ref = brute_metrics(x, y, ks)
    got = M.evaluate(x, y, ks=ks, with_nmi=False)
    for key, value in ref.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key
    assert M.recall_at_k(x, y, ks=ks) == pytest.approx({k: ref[f"recall@{k}"] for k in ks})
    assert M.map_at_r(x, y) == pytest.approx(ref["map@r"])
    assert M.r_precision(x, y) == pytest.approx(ref["r_precision"])
    # float32 computation: same values on exactly representable ties, near on random data
    got32 = M.evaluate(x.astype(np.float32), y, ks=ks, with_nmi=False)
    for key, value in ref.items():
        assert got32[key] == pytest.approx(value, abs=1e-12 if make is tie_data else 0.03), key


@pytest.mark.parametrize("list_length", [1, 5, 10_000])
@pytest.mark.parametrize("singletons", ["exclude", "miss"])
def test_counted_ranks_match_listed_ranks(monkeypatch, list_length, singletons):
    # beyond the short list the rank of the first correct neighbour is counted, not listed
    monkeypatch.setattr(M, "_LIST_LENGTH", list_length)
    for make in (tie_data, random_data):
        x, y = make(seed=7)
        y = y.copy()
        y[[1, 2]] = [50, 51]  # two singletons
        ks = (1, 3, 8, 20, len(y) - 1)
        ref = brute_metrics(x, y, ks, singletons=singletons)
        got = M.evaluate(x, y, ks=ks, with_nmi=False, singletons=singletons, chunk_size=6)
        for key, value in ref.items():
            assert got[key] == pytest.approx(value, abs=1e-12), (make.__name__, key)


def test_chunk_size_changes_nothing():
    for make in (tie_data, random_data):
        x, y = make(seed=3)
        base = M.evaluate(x, y, ks=(1, 2, 4, 8), with_nmi=False)
        base32 = M.evaluate(x.astype(np.float32), y, ks=(1, 2, 4, 8), with_nmi=False)
        for chunk in (1, 2, 5, 17, 1000):
            assert M.evaluate(x, y, ks=(1, 2, 4, 8), with_nmi=False, chunk_size=chunk) == base
            assert M.evaluate(x.astype(np.float32), y, ks=(1, 2, 4, 8), with_nmi=False, chunk_size=chunk) == base32
        b_sims, b_idx = M.nearest_neighbours(x, 10)
        for chunk in (1, 4, 9):
            sims, idx = M.nearest_neighbours(x, 10, chunk_size=chunk)
            assert torch.equal(idx, b_idx)
            # the product's blocking may change the last bit of a similarity, nothing more
            torch.testing.assert_close(sims, b_sims, rtol=0, atol=1e-14)


def many_ties(n: int = 600, classes: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows of +-1/4 in 16-d: exactly unit norm, dot products multiples of 1/16 (17 values), so exact
    ties everywhere; some rows duplicated."""
    rng = np.random.default_rng(seed)
    x = rng.choice([-0.25, 0.25], size=(n, 16))
    x[rng.integers(0, n, 30)] = x[rng.integers(0, n, 30)]
    return x, rng.integers(0, classes, size=n)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("list_length", [1, 32])
def test_many_ties_match_brute_force(monkeypatch, dtype, list_length):
    # hundreds of samples: the top k comes from real column groups whose maxima tie at the cut, the
    # best positive ties with negatives, and (tiny tiles) the counting pass runs over many tiles
    monkeypatch.setattr(M, "_LIST_LENGTH", list_length)
    monkeypatch.setattr(M, "_CPU_TILE", 512)
    x, y = many_ties()
    ks = (1, 2, 10, 50, 200, len(y) - 1)
    ref = brute_metrics(x, y, ks)
    for chunk in (7, 64, None):
        got = M.evaluate(x.astype(dtype), y, ks=ks, with_nmi=False, chunk_size=chunk)
        for key, value in ref.items():
            assert got[key] == pytest.approx(value, abs=1e-12), (key, chunk)
    _, idx = M.nearest_neighbours(x.astype(dtype), 40, chunk_size=50)
    np.testing.assert_array_equal(idx.numpy(), brute_ranking(x)[:, :40])


@pytest.mark.parametrize("list_length", [1, 32])
def test_larger_random_data_match_brute_force(monkeypatch, list_length):
    # continuous float64 data (and two duplicated rows) at a size where groups and counting matter
    monkeypatch.setattr(M, "_LIST_LENGTH", list_length)
    x, y = random_data(n=700, d=8, classes=60, seed=11)
    ks = (1, 4, 16, 64, 256)
    ref = brute_metrics(x, y, ks)
    got = M.evaluate(x, y, ks=ks, with_nmi=False, chunk_size=90)
    for key, value in ref.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key
    _, idx = M.nearest_neighbours(x, 25)
    np.testing.assert_array_equal(idx.numpy(), brute_ranking(x)[:, :25])


def test_row_topk_is_a_stable_sort():
    # any shape, k, layout, ties and -inf entries: the first k of a stable descending sort
    rng = np.random.default_rng(5)
    for trial in range(200):
        b, n = int(rng.integers(1, 6)), int(rng.integers(1, 400))
        k = int(rng.integers(1, n + 1))
        s = torch.from_numpy(rng.integers(0, 4 if trial % 2 else 1000, size=(b, n)).astype(np.float64))
        if n > 2:
            s[:, int(rng.integers(0, n))] = -np.inf
        if trial % 3 == 0:
            s = s.T.contiguous().T  # column-major, as metrics' similarity blocks are
        ref_v, ref_i = torch.sort(s, dim=1, descending=True, stable=True)
        gmax = group_max(s, group_size(n, k)) if trial % 4 == 1 else None
        v, i = row_topk(s, k, gmax)
        assert torch.equal(i, ref_i[:, :k]) and torch.equal(v, ref_v[:, :k]), (b, n, k)
    with pytest.raises(ValueError, match="k must be in"):
        row_topk(torch.zeros(2, 5), 6)


def test_input_types_agree():
    x, y = random_data(seed=1)
    ref = M.evaluate(x.astype(np.float32), y, ks=(1, 4), with_nmi=False)
    as_tensor = M.evaluate(torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y), ks=(1, 4), with_nmi=False)
    as_list = M.evaluate(x.astype(np.float32).tolist(), y.tolist(), ks=(1, 4), with_nmi=False)
    assert as_tensor == ref and as_list == ref
    # labels of any type: strings, shifted integers
    names = np.array([f"class-{v}" for v in y])
    assert M.evaluate(x.astype(np.float32), names, ks=(1, 4), with_nmi=False) == ref
    assert M.evaluate(x.astype(np.float32), y * 7 + 100, ks=(1, 4), with_nmi=False) == ref
    # half precision is computed in float32; scaling a row (by a power of two: exactly) changes nothing
    half = torch.from_numpy(x).half()
    assert M.nearest_neighbours(half, 3)[0].dtype == torch.float32
    scaled = x * 2.0 ** np.random.default_rng(0).integers(-8, 8, size=(len(x), 1))
    assert M.evaluate(scaled, y, ks=(1, 4), with_nmi=False) == M.evaluate(x, y, ks=(1, 4), with_nmi=False)


def test_extreme_magnitudes_are_normalised_exactly():
    x, y = tie_data(n=30, seed=6)
    x = x.astype(np.float32)
    big = x * np.float32(1e30)  # the sum of squares would overflow float32
    tiny = x * np.float32(1e-30)  # ... or underflow to zero
    ref = M.nearest_neighbours(x, 5)[1]
    assert torch.equal(M.nearest_neighbours(big, 5)[1], ref)
    assert torch.equal(M.nearest_neighbours(tiny, 5)[1], ref)


def test_evaluate_keys_per_dataset():
    x, y = random_data(n=1200, d=4, classes=20)
    for dataset, ks in M.DATASET_KS.items():
        out = M.evaluate(x, y, dataset=dataset)
        assert set(out) == {"nmi", "map@r", "r_precision", "num_singletons"} | {f"recall@{k}" for k in ks}
        assert all(0.0 <= v <= 1.0 for k, v in out.items() if k != "num_singletons")
    out = M.evaluate(x, y, dataset="sop")
    assert out["recall@1"] <= out["recall@10"] <= out["recall@100"] <= out["recall@1000"]


# ----------------------------------------------------------------------------- singletons
def test_singleton_policies():
    x, y = random_data(n=50, seed=2)
    y = y.copy()
    y[[3, 9]] = [100, 101]  # two classes with one member each
    ks = (1, 4)
    excl = M.evaluate(x, y, ks=ks, with_nmi=False)
    assert excl["num_singletons"] == 2.0
    ref = brute_metrics(x, y, ks, singletons="exclude")
    for key, value in ref.items():
        assert excl[key] == pytest.approx(value)
    miss = M.evaluate(x, y, ks=ks, with_nmi=False, singletons="miss")
    ref_miss = brute_metrics(x, y, ks, singletons="miss")
    for key, value in ref_miss.items():
        assert miss[key] == pytest.approx(value)
    # counting the two singletons as failures scales every value by 48 / 50
    assert miss["map@r"] == pytest.approx(excl["map@r"] * 48 / 50)
    with pytest.raises(ValueError, match="2 queries belong to classes with a single member"):
        M.map_at_r(x, y, singletons="raise")
    with pytest.raises(ValueError, match="every class has a single member"):
        M.recall_at_k(x, np.arange(len(x)), ks=(1,))
    with pytest.raises(ValueError, match="singletons must be one of"):
        M.recall_at_k(x, y, singletons="ignore")


# ----------------------------------------------------------------------------- bad input
def test_bad_input_errors():
    x, y = random_data(n=20)
    with pytest.raises(ValueError, match="got 19 labels for 20 embeddings"):
        M.recall_at_k(x, y[:-1])
    nan = x.copy()
    nan[4, 2] = np.nan
    with pytest.raises(ValueError, match=r"finite; 1 rows hold NaN or inf, e.g. rows \[4\]"):
        M.map_at_r(nan, y)
    inf = x.copy()
    inf[7, 0] = np.inf
    with pytest.raises(ValueError, match=r"rows \[7\]"):
        M.nearest_neighbours(inf, 2)
    zero = x.copy()
    zero[[2, 5]] = 0.0
    with pytest.raises(ValueError, match=r"2 rows are all zero, e.g. rows \[2, 5\]"):
        M.evaluate(zero, y)
    with pytest.raises(ValueError, match="at least 2 samples"):
        M.recall_at_k(x[:1], y[:1])
    with pytest.raises(ValueError, match="2-D"):
        M.r_precision(x[:, 0], y)
    with pytest.raises(ValueError, match="labels must be 1-D"):
        M.recall_at_k(x, y[:, None])
    with pytest.raises(ValueError, match=r"K=20 is larger than the gallery: each query has N - 1 = 19"):
        M.recall_at_k(x, y, ks=(1, 20))
    with pytest.raises(ValueError, match="K=100 is larger than the gallery"):  # SOP's K = 1, 10, 100, 1000
        M.evaluate(x, y, dataset="sop")
    with pytest.raises(ValueError, match="positive integer, got 0"):
        M.recall_at_k(x, y, ks=(0, 1))
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, N - 1 = 19\]"):
        M.nearest_neighbours(x, 20)
    with pytest.raises(ValueError, match="chunk_size must be a positive integer or None, got 0"):
        M.map_at_r(x, y, chunk_size=0)
    with pytest.raises(ValueError, match="dataset must be one of"):
        M.evaluate(x, y, dataset="imagenet")
    with pytest.raises(ValueError, match="average must be one of"):
        M.nmi(x, y, average="harmonic")
    with pytest.raises(ValueError, match="num_clusters must be an integer in"):
        M.nmi(x, y, num_clusters=21)
    with pytest.raises(ValueError, match="labels must be finite"):
        M.recall_at_k(x, np.full(20, np.nan))


# ----------------------------------------------------------------------------- NMI
@pytest.mark.parametrize("average", M.AVERAGES)
def test_nmi_matches_sklearn(average):
    rng = np.random.default_rng(0)
    for n, ka, kb in ((50, 3, 4), (500, 20, 7), (2000, 100, 100)):
        a = rng.integers(0, ka, n)
        b = np.where(rng.random(n) < 0.5, a % kb, rng.integers(0, kb, n))  # correlated
        assert M.normalized_mutual_info(a, b, average) == pytest.approx(
            normalized_mutual_info_score(a, b, average_method=average), abs=1e-12)


def test_nmi_extremes():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 10, 500)
    perm = rng.permutation(10)
    assert M.normalized_mutual_info(a, perm[a] + 3) == pytest.approx(1.0)  # same clusters, other ids
    assert M.normalized_mutual_info(a, perm[a], "geometric") == pytest.approx(1.0)
    big = rng.integers(0, 10, 50000)
    assert M.normalized_mutual_info(big, rng.integers(0, 10, 50000)) < 0.002  # independent
    assert M.normalized_mutual_info(np.zeros(5, int), np.zeros(5, int)) == 1.0  # sklearn's convention
    assert M.normalized_mutual_info(np.zeros(6, int), np.arange(6) % 2) == 0.0
    with pytest.raises(ValueError, match="same length"):
        M.normalized_mutual_info(a, a[:-1])


def test_nmi_of_embeddings():
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(6, 16)) * 10
    y = np.repeat(np.arange(6), 30)
    x = centres[y] + rng.normal(size=(180, 16)) * 0.1  # well separated directions
    assert M.nmi(x, y) == pytest.approx(1.0)
    assert M.nmi(x, y, average="geometric") == pytest.approx(1.0)
    noise = rng.normal(size=(180, 16))
    v = M.nmi(noise, y, seed=3)
    assert v == M.nmi(noise, y, seed=3)  # same seed, same clustering
    assert 0.0 <= v < 0.5


# ----------------------------------------------------------------------------- devices
@CUDA
def test_cuda_matches_cpu():
    x, y = tie_data(n=300, seed=4)
    for dtype in (torch.float32, torch.float64):
        xt = torch.from_numpy(x).to(dtype)
        s_cpu, i_cpu = M.nearest_neighbours(xt, 20, chunk_size=64)
        s_gpu, i_gpu = M.nearest_neighbours(xt.cuda(), 20)
        assert torch.equal(i_gpu.cpu(), i_cpu) and torch.equal(s_gpu.cpu(), s_cpu)
    xr, yr = random_data(n=400, seed=5)
    xt, yt = torch.from_numpy(xr), torch.from_numpy(yr)
    cpu = M.evaluate(xt, yt, ks=(1, 2, 4, 8))
    gpu = M.evaluate(xt.cuda(), yt.cuda(), ks=(1, 2, 4, 8))
    assert gpu == pytest.approx(cpu, abs=1e-12)
