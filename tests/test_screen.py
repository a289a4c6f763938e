"""Tests of the bfloat16 screen (heatup_lib.screen and its use in heatup_lib.metrics): the compiled
pass against plain numpy loops, the error bound against float64, and the screened neighbour
metrics against the float64 brute force of tests/test_metrics.py, on every path the screen has
(candidates kept or dropped, counts that decide, band recounts, fallbacks)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_metrics import brute_metrics, many_ties, random_data, tie_data

from heatup_lib import metrics as M
from heatup_lib import screen

LIB = screen.kernel()
pytestmark = pytest.mark.skipif(LIB is None, reason="the screen's C pass does not build here (no C compiler)")


# ----------------------------------------------------------------------------- the compiled pass
def reference_pass(tiles, th_s, th_p, k, table, cut0):
    """What screen_tile computes, with plain loops and an unbounded buffer."""
    w = th_s.shape[0]
    n_s = np.zeros(w, np.int64)
    n_p = np.zeros(w, np.int64)
    cut = cut0.astype(np.int64).copy()
    run = np.full((w, k), -(2**15), np.int64)
    taken = [[] for _ in range(w)]
    t0 = 0
    for tile in tiles:
        for r in range(tile.shape[0]):
            for c in range(w):
                v = int(tile[r, c])
                n_s[c] += v >= th_s[c]
                n_p[c] += v >= th_p[c]
                if v >= cut[c] and (k > 0 or v < th_s[c]):
                    taken[c].append((v, t0 + r))
                    if k and v > run[c, 0]:
                        run[c] = np.sort(np.append(run[c, 1:], v))
                        cut[c] = table[run[c, 0] + 2**15]
        t0 += tile.shape[0]
    return n_s, n_p, cut, [[(v, j) for v, j in tk if v >= cut[c]] for c, tk in enumerate(taken)]


def kernels():
    """The pass as built here (-march=native: AVX-512 where the CPU has it) and a plain -O2 build."""
    out = [("native", LIB)]
    generic = screen.kernel(("-O2",))
    if generic is not None:
        out.append(("generic", generic))
    return out


@pytest.mark.parametrize("mode", ["running", "band"])
def test_pass_matches_plain_loops(mode):
    rng = np.random.default_rng(0)
    w, k = 64, 3
    # bf16 patterns of similarities around 0.1-0.6, a few negative, many repeated values
    vals = np.clip(rng.normal(0.3, 0.15, size=(5, 40, w)), -0.5, 0.99).astype(np.float32)
    tiles = [(torch.from_numpy(v).bfloat16().view(torch.int16)).numpy() for v in vals]
    pos = lambda f: int(torch.tensor(f).bfloat16().view(torch.int16))  # noqa: E731
    th_s = np.array([pos(a) for a in rng.uniform(0.4, 0.7, w)], np.int16)
    th_p = np.array([pos(a) for a in rng.uniform(0.2, 0.4, w)], np.int16)
    th_s[5], th_p[5] = screen.NEVER, screen.NEVER  # counts nothing
    table = screen.cut_table(0.05).numpy()
    if mode == "running":
        kk, cut0 = k, np.full(w, screen.TAKE_ALL, np.int16)
    else:
        kk, cut0 = 0, th_p.copy()
    ref_s, ref_p, ref_cut, ref_taken = reference_pass(tiles, th_s, th_p, kk, table, cut0)
    for name, lib in kernels():
        for capacity in (200, 4):  # 4: the buffer fills and is compacted (running) or overflows (band)
            state = screen.ScreenPass(torch.from_numpy(th_s), torch.from_numpy(th_p), kk, torch.from_numpy(table),
                                      capacity, lib, cut=None if mode == "running" else torch.from_numpy(cut0))
            t0 = 0
            for tile in tiles:
                state.add(torch.from_numpy(tile), t0)
                t0 += tile.shape[0]
            np.testing.assert_array_equal(state.surely.numpy(), ref_s, err_msg=name)
            np.testing.assert_array_equal(state.possibly.numpy(), ref_p, err_msg=name)
            bits, rows, cols, cut = state.result()
            blind = state.blind.numpy().astype(bool)
            assert blind.any() == (capacity == 4), (name, capacity)
            for c in range(w):
                if blind[c]:
                    assert cut[c] == screen.TAKE_ALL
                    continue
                assert cut[c] == ref_cut[c], (name, c)
                got = sorted(zip(bits[cols == c].tolist(), rows[cols == c].tolist()))
                assert got == sorted(ref_taken[c]), (name, capacity, c)


def test_pass_refuses_bad_tiles():
    th = torch.full((32,), screen.NEVER, dtype=torch.int16)
    state = screen.ScreenPass(th, th, 2, screen.cut_table(0.01), 8, LIB)
    with pytest.raises(ValueError, match="C-contiguous int16"):
        state.add(torch.zeros(4, 64, dtype=torch.int16)[:, ::2], 0)
    with pytest.raises(ValueError, match="C-contiguous int16"):
        state.add(torch.zeros(4, 32, dtype=torch.int32), 0)
    with pytest.raises(ValueError, match="multiple of 32"):
        screen.ScreenPass(th[:20], th[:20], 2, screen.cut_table(0.01), 8, LIB)


# ----------------------------------------------------------------------------- the bound and the dots
def test_pair_dots_are_float64_dots_and_position_free():
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.normal(size=(50, 37)).astype(np.float32))
    x[7] = x[3]
    rows = torch.from_numpy(rng.integers(0, 50, size=(20, 9)))
    cols = torch.from_numpy(rng.integers(0, 50, size=(20, 9)))
    got = screen.pair_dots(x, rows, cols, LIB)
    ref = (x.double()[rows] * x.double()[cols]).sum(-1)
    assert got.dtype == torch.float64 and got.shape == rows.shape
    torch.testing.assert_close(got, ref, rtol=1e-14, atol=1e-13)
    # the same pair gives the same value wherever it sits, and equal rows equal values
    a = screen.pair_dots(x, torch.tensor([3, 7, 3, 0]), torch.tensor([0, 0, 0, 3]), LIB)
    assert a[0] == a[1] == a[2] == a[3]


def test_error_bound_covers_the_bfloat16_product():
    rng = np.random.default_rng(2)
    for d in (4, 64, 512):
        x = torch.from_numpy(rng.normal(size=(300, d)).astype(np.float32))
        x = x / torch.linalg.vector_norm(x, dim=1, keepdim=True)
        xb = x.bfloat16()
        e = screen.error_bounds(x, xb)
        v = torch.mm(xb, xb[:40].T).double()  # (300, 40): product rounded to bfloat16
        s = x.double() @ x[:40].double().T
        # the bound leaves out the product's own rounding to bfloat16: at most half a bf16 ulp, 2^-8 |v|
        excess = (v - s).abs() - e[:40][None, :] - 2.0**-8 * v.abs()
        assert float(excess.max()) <= 0, d


def test_cut_table_is_monotone_and_safe():
    e = 0.007
    table = screen.cut_table(e)
    m = torch.arange(-(2**15), 2**15)
    usable = table != screen.TAKE_ALL
    # rising with m where it narrows (elsewhere TAKE_ALL, which sends a query to the exact path)
    narrowing = table[usable].int()
    assert bool((narrowing[1:] >= narrowing[:-1]).all()) and narrowing.numel() > 10_000
    # every usable cut lies at or below pred(m) - 2e, and is a positive bfloat16
    mu = m[usable]
    assert bool((table[usable] >= 1).all())
    cut = screen.bits_to_float(table[usable])
    pred = screen.bits_to_float((mu - 1).to(torch.int16))
    assert bool((cut <= pred - 2 * e).all())
    # and it is the largest such bfloat16
    assert bool((screen.bits_to_float((table[usable].int() + 1).to(torch.int16)) > pred - 2 * e).all())


# ----------------------------------------------------------------------------- screened metrics
def screened(monkeypatch, **overrides):
    monkeypatch.setattr(M, "_SCREEN", True)
    for name, value in overrides.items():
        monkeypatch.setattr(M, name, value)


def check(x, y, ks, chunk=None, singletons="exclude"):
    ref = brute_metrics(x, y, ks, singletons=singletons)
    got = M.evaluate(x, y, ks=ks, with_nmi=False, chunk_size=chunk, singletons=singletons)
    for key, value in ref.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


@pytest.mark.parametrize("overrides", [
    {},
    {"_SCREEN_TILE_ROWS": 64, "_LIST_LENGTH": 1},
    {"_SCREEN_CAPACITY": 20, "_SCREEN_BAND_CAPACITY": 3},  # compactions, blind queries, lost bands
], ids=["default", "small-tiles", "small-buffers"])
def test_screened_metrics_match_brute_force(monkeypatch, overrides):
    screened(monkeypatch, **overrides)
    x, y = many_ties()  # exact ties everywhere: the bf16 screen sees them exactly too
    check(x.astype(np.float32), y, (1, 2, 10, 50, 200, len(y) - 1), chunk=64)
    x, y = tie_data()
    check(x.astype(np.float32), y, (1, 2, 4, 8, len(y) - 1))
    # continuous data: the reference ranks the float32 rows' float64 similarities, as the screen does
    x, y = random_data(n=900, d=24, classes=150, seed=5)
    x32 = M._as_embeddings(x.astype(np.float32))
    y = y.copy()
    y[[3, 4]] = [1000, 1001]  # two singletons
    for singletons in ("exclude", "miss"):
        check(x32.double().numpy(), y, (1, 4, 16, 100, 500), singletons=singletons)  # the exact path
        check(x32.numpy(), y, (1, 4, 16, 100, 500), singletons=singletons)


def test_screen_decides_most_queries_itself(monkeypatch):
    # the test above passes whether or not the screen does the work: here it must
    screened(monkeypatch)
    x, y = random_data(n=3000, d=32, classes=500, seed=9)
    calls = {"exact": 0, "ranks": 0}
    exact, ranks = M._exact_search, M._exact_ranks

    def count_exact(x_, classes, chunk, queries=None):
        calls["exact"] += 0 if queries is None else queries.numel()
        return exact(x_, classes, chunk, queries)

    def count_ranks(x_, classes, chunk, queries):
        calls["ranks"] += queries.numel()
        return ranks(x_, classes, chunk, queries)

    monkeypatch.setattr(M, "_exact_search", count_exact)
    monkeypatch.setattr(M, "_exact_ranks", count_ranks)
    x32 = M._as_embeddings(x.astype(np.float32))
    ks = (1, 10, 100, 1000)
    check(x32.numpy(), y, ks)
    assert calls["exact"] + calls["ranks"] < 0.05 * len(y), calls


def test_screen_leaves_long_lists_to_float32(monkeypatch):
    # MNIST-like classes of ~1,000: the candidates near the R-th similarity would overflow every buffer
    x = torch.randn(10_000, 4)
    assert M._use_screen(x, 11) == screen.available()  # by default: where bfloat16 is native
    assert not M._use_screen(x, M._SCREEN_MAX_LIST + 1)
    screened(monkeypatch)
    assert M._use_screen(x, 11)
    assert not M._use_screen(x, M._SCREEN_MAX_LIST + 1)
    assert not M._use_screen(x.double(), 11)


def test_screen_off_without_compiler(monkeypatch):
    monkeypatch.setattr(M, "_SCREEN", True)
    monkeypatch.setattr(screen, "kernel", lambda *a, **k: None)
    x = torch.randn(100, 8)
    assert not M._use_screen(x, 8)
    x, y = tie_data()
    check(x.astype(np.float32), y, (1, 2, 4))


def test_kernel_build_failure_is_reported_not_raised(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("HEATUP_CACHE", str(tmp_path / "cache"))
    with caplog.at_level("WARNING", logger="heatup_lib.screen"):
        assert screen.kernel(("-O1",)) is None
    assert "no-such-compiler" in caplog.text
