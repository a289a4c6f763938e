"""Retrieval and clustering metrics: Recall@K, MAP@R, R-Precision and NMI, exact and chunked.

Conventions (``../shared/SPEC.md`` section 7):

- Rows are L2-normalised here; similarity is the cosine. Every test sample is a query and the
  other N - 1 samples are its gallery: the query is excluded *by index*, never by assuming it
  ranks first (an exact duplicate ties with it).
- Neighbours are ranked by similarity, descending, ties broken by the lower gallery index, so
  every result is deterministic and independent of the chunk size and of the device.
- float64 input is computed in float64; any other type in float32. Queries are processed in
  chunks whose similarity block fits a memory budget: no N x N matrix is ever built.
- One pass over the similarity blocks serves Recall@K, MAP@R and R-Precision (:func:`evaluate`
  runs it once). The rank of a query's first correct neighbour -- all that Recall@K needs, for
  every K -- is the number of samples ranked before its best positive: one compare-and-count
  pass over the block (>= and == its similarity p, for the tie rule), no listing. MAP@R and
  R-Precision need only the top R (at most the largest class size - 1), which
  :func:`heatup_lib.topk.row_topk` finds exactly from the maxima of column groups instead of a
  ``topk`` over all N columns. A query whose first correct neighbour is within that list takes
  its rank from the list.
- On a CPU a block is the transpose of an (N, b) product, computed tile by tile: the group maxima
  and the counts are taken while a tile is in cache, so the passes after the product cost little
  next to it (``bench/metrics_speed.py`` measures the ratio).
- On a CPU that multiplies bfloat16 natively (Intel AMX / AVX512-BF16, by oneDNN's test), a
  float32 search of at least ``_SCREEN_MIN_N`` samples, whose classes are small (R at most
  ``_SCREEN_MAX_LIST``: CUB, Cars, SOP; not MNIST), screens the blocks in bfloat16
  (:mod:`heatup_lib.screen`, a small C pass compiled on first use): a proven error bound decides
  almost everything from the cheap product, and what it leaves open -- the top-R candidates, the
  ranks where some K falls inside the bound -- is decided on float64 dot products of the float32
  rows. The answer is that of an exact search on those similarities; without a C compiler the
  float32 search below runs instead.
- Ties are exact in both dtypes; but a similarity itself may differ in its last bit between
  chunk sizes or devices (the matrix product's blocking), which can reorder two samples whose
  similarities differ by less than that rounding. The screen's float64 similarities order such
  near-ties as float64 would (``bench/RESULTS.md`` has the SOP-scale comparison).
- A query whose class has no other member (a *singleton*) has no correct answer: Recall@K can
  never hit and R = 0 leaves MAP@R undefined. ``singletons="exclude"`` (default, as
  pytorch-metric-learning does) leaves such queries out of every neighbour metric and logs how
  many; ``"miss"`` scores them 0 (the older Recall@K codes did this); ``"raise"`` refuses them.
  When every query is a singleton, the neighbour metrics raise whatever the policy.
- NMI clusters the normalised embeddings with :func:`heatup_lib.kmeans.kmeans` into as many
  clusters as classes (``NMI_KMEANS``: the "auto" seeding, Lloyd passes to convergence), then
  compares clusters and labels.

Metric values are fractions in [0, 1].
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import torch
from torch import Tensor

from heatup_lib.kmeans import as_float_matrix, kmeans
from heatup_lib import screen
from heatup_lib.topk import group_max, group_size, row_topk, sort_exactly

__all__ = [
    "DATASET_KS",
    "AVERAGES",
    "default_chunk_size",
    "SINGLETONS",
    "NMI_KMEANS",
    "nearest_neighbours",
    "recall_at_k",
    "map_at_r",
    "r_precision",
    "normalized_mutual_info",
    "nmi",
    "evaluate",
]

log = logging.getLogger(__name__)

DATASET_KS: dict[str, tuple[int, ...]] = {
    "mnist": (1, 2, 4, 8),
    "cub200": (1, 2, 4, 8),
    "cars196": (1, 2, 4, 8),
    "sop": (1, 10, 100, 1000),
}
AVERAGES = ("arithmetic", "geometric", "min", "max")
SINGLETONS = ("exclude", "miss", "raise")
# The k-means behind NMI: seeding by kmeans' "auto" rule, Lloyd passes until no assignment changes.
NMI_KMEANS: Mapping[str, object] = MappingProxyType({"init": "auto", "max_iter": 100, "tol": 0.0})

# Neighbours listed per query before the rank of the first correct one is counted instead.
_LIST_LENGTH = 8
# Bytes the (chunk x N) similarity block and its top-k work space may take, per device type.
_CPU_BUDGET = 512 * 2**20
# Bytes of one tile of a similarity block per CPU thread: the passes over it run while it is in cache (L2).
_CPU_TILE = 2 * 2**20
_CUDA_BUDGET_MAX = 4 * 2**30
# The bfloat16 screen (:mod:`heatup_lib.screen`) serves float32 searches on CPUs with bfloat16
# units from this many samples on; _SCREEN = True / False forces it on / off (tests, benchmarks).
_SCREEN_MIN_N = 4096
_SCREEN: bool | None = None
# ... and where a query's list is at most this long: with R in the hundreds (MNIST's classes of
# ~1,000) the candidates near the R-th similarity overflow the buffers and every query is redone.
_SCREEN_MAX_LIST = 128
# Candidates the screen keeps per query before it drops those its cut has passed (screen_kernel.c).
_SCREEN_CAPACITY = 256
_SCREEN_TILE_ROWS = 2048
_SCREEN_BAND_CAPACITY = 4096  # band entries per query a recount collects
_TAKE_NOTHING = 2**15 - 1  # a cut no entry reaches: the padding columns of a chunk


# ----------------------------------------------------------------------------- input checks
def _as_embeddings(embeddings) -> Tensor:
    """Check (N, D) embeddings and return them L2-normalised (float64 stays float64, else float32)."""
    x = as_float_matrix(embeddings, "embeddings")
    if x.shape[0] < 2:
        raise ValueError(f"embeddings need at least 2 samples (a query and a gallery), got N={x.shape[0]}")
    scale = x.abs().amax(dim=1, keepdim=True)  # divide by it first: no overflow or underflow in the norm
    zero = scale.squeeze(1) == 0
    if bool(zero.any()):
        rows = zero.nonzero().flatten()[:5].tolist()
        raise ValueError(
            f"embeddings must have non-zero rows (they are L2-normalised); {int(zero.sum())} rows "
            f"are all zero, e.g. rows {rows}"
        )
    x = x / scale
    return (x / torch.linalg.vector_norm(x, dim=1, keepdim=True)).contiguous()


def _as_codes(labels, n: int, device: torch.device) -> Tensor:
    """Class labels (N,) of any type as int64 codes 0..C-1 on ``device``."""
    if isinstance(labels, Tensor):
        y = labels.detach()
        if y.dim() != 1:
            raise ValueError(f"labels must be 1-D (N,), got shape {tuple(y.shape)}")
        if y.is_floating_point() and not bool(torch.isfinite(y).all()):
            raise ValueError("labels must be finite, got NaN or inf")
        codes = torch.unique(y, return_inverse=True)[1] if y.numel() else y.long()
    else:
        y = np.asarray(labels)
        if y.ndim != 1:
            raise ValueError(f"labels must be 1-D (N,), got shape {y.shape}")
        if y.dtype.kind == "f" and not np.isfinite(y).all():
            raise ValueError("labels must be finite, got NaN or inf")
        codes = torch.from_numpy(np.unique(y, return_inverse=True)[1].reshape(-1).astype(np.int64))
    if codes.shape[0] != n:
        raise ValueError(f"labels must have one entry per embedding: got {codes.shape[0]} labels for {n} embeddings")
    return codes.to(device=device, dtype=torch.int64)


def _check_chunk_size(chunk_size) -> None:
    """Raise unless ``chunk_size`` is None or a positive integer."""
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1
    ):
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")


def _check_ks(ks: Sequence[int], n: int) -> tuple[int, ...]:
    """Raise unless every K is an integer in [1, N - 1] (the gallery of a query)."""
    if isinstance(ks, (int, np.integer)):
        ks = (ks,)
    ks = tuple(ks)
    if not ks:
        raise ValueError("ks must name at least one K, got an empty sequence")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"every K must be a positive integer, got {k!r} in ks={ks}")
        if k > n - 1:
            raise ValueError(f"K={k} is larger than the gallery: each query has N - 1 = {n - 1} other samples")
    return tuple(int(k) for k in ks)


def _check_choice(name: str, value, choices: Sequence[str]) -> None:
    """Raise unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


def default_chunk_size(num_gallery: int, k: int, device: torch.device, element_size: int = 4) -> int:
    """Queries per chunk so that the (chunk x N) similarities and their work space fit the memory budget."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = min(_CUDA_BUDGET_MAX, free // 4)
    else:
        budget = _CPU_BUDGET
    # the similarity block, its group maxima, the top-k candidates (values + indices, twice), and
    # on a GPU the counting pass's buffer (one tile of the whole block; a CPU's tiles are small)
    g = group_size(num_gallery, k)
    per_row = (num_gallery + num_gallery // g) * element_size + 2 * k * g * (element_size + 8)
    if device.type != "cpu":
        per_row += num_gallery * 4
    rows = int(budget // per_row)
    return rows // 64 * 64 if rows >= 64 else max(1, rows)  # BLAS runs a multiple of 64 columns up to 2x faster


# ----------------------------------------------------------------------------- neighbour search
def _tile_rows(n: int, b: int, g: int, like: Tensor) -> int:
    """Gallery rows per tile of an (N, b) block like ``like``: a multiple of g near _CPU_TILE bytes per
    thread (CPU), all N (GPU)."""
    if like.device.type != "cpu":
        return n
    tile = _CPU_TILE * torch.get_num_threads()
    return max(1, tile // (b * like.element_size() * g)) * g


def _exclude_queries(tile: Tensor, t0: int, queries: Tensor) -> None:
    """Set each query's own entry of ``tile`` (gallery rows t0.., one column per query) to -inf."""
    inside = ((queries >= t0) & (queries < t0 + tile.shape[0])).nonzero().flatten()
    if inside.numel():
        tile[queries[inside] - t0, inside] = -math.inf


def _similarity_blocks(
    x: Tensor, chunk_size: int, g: int, queries: Tensor | None = None,
) -> Iterator[tuple[int, int, Tensor, Tensor]]:
    """Yield ``(start, end, sims, gmax)`` for the queries start..end-1 of normalised ``x`` (or of the
    sample indices ``queries``): their cosine similarities (b, N) with every sample, the query
    itself at -inf, and the maxima (b, G) of groups of g consecutive columns
    (:func:`heatup_lib.topk.group_max`); valid until the next block.

    ``sims`` is the transpose of an (N, b) product, computed in tiles of gallery rows: on a CPU
    the product runs faster in that shape, and each tile's group maxima are taken while the tile
    is in cache.
    """
    n = x.shape[0]
    if queries is None:
        queries = torch.arange(n, device=x.device)
    buf = gmax = None
    for start in range(0, queries.shape[0], chunk_size):
        end = min(start + chunk_size, queries.shape[0])
        qs = queries[start:end]
        q = x[qs]
        if buf is None or buf.shape[1] != end - start:
            buf = torch.empty(n, end - start, dtype=x.dtype, device=x.device)
            gmax = torch.empty(-(-n // g), end - start, dtype=x.dtype, device=x.device)
        step = _tile_rows(n, end - start, g, x)
        for t0 in range(0, n, step):
            t1 = min(t0 + step, n)
            tile = torch.mm(x[t0:t1], q.T, out=buf[t0:t1])
            _exclude_queries(tile, t0, qs)
            gmax[t0 // g : -(-t1 // g)] = group_max(tile.T, g).T
        yield start, end, buf.T, gmax.T.contiguous()


def nearest_neighbours(embeddings, k: int, chunk_size: int | None = None) -> tuple[Tensor, Tensor]:
    """Each sample's k most cosine-similar other samples: similarities (N, k) and indices (N, k).

    The query is excluded by index; ties are broken by the lower index. Results are on the
    embeddings' device (CPU for numpy input), float32 unless the input is float64.
    """
    x = _as_embeddings(embeddings)
    n = x.shape[0]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n - 1:
        raise ValueError(f"k must be an integer in [1, N - 1 = {n - 1}] (the gallery of a query), got {k!r}")
    _check_chunk_size(chunk_size)
    k = int(k)
    chunk = chunk_size or default_chunk_size(n, k, x.device, x.element_size())
    sims = torch.empty(n, k, dtype=x.dtype, device=x.device)
    index = torch.empty(n, k, dtype=torch.int64, device=x.device)
    for start, end, s, gmax in _similarity_blocks(x, chunk, group_size(n, k)):
        sims[start:end], index[start:end] = row_topk(s, k, gmax)
    return sims, index


# ----------------------------------------------------------------------------- neighbour metrics
@dataclass(frozen=True)
class _Ranks:
    """Per query: rank of the first correct neighbour, AP@R, R-Precision.

    ``first_hit`` is the 0-based rank where it is below the list length; beyond, it is exact as
    far as Recall@K can tell: ``first_hit < K`` exactly when the rank is, for every K asked for.
    """

    first_hit: Tensor  # (N,) int64
    ap_at_r: Tensor  # (N,) float64
    r_prec: Tensor  # (N,) float64
    keep: Tensor  # (N,) bool: the queries the metrics average over
    num_singletons: int


@dataclass(frozen=True)
class _Classes:
    """What the neighbour search needs to know of the labels."""

    codes: Tensor  # (N,) int64 class codes
    singleton: Tensor  # (N,) bool: no other member of its class
    members: Tensor | None  # (C, largest) each class's samples, padded with -1; None: rank by listing only
    k_list: int  # neighbours listed per query


def _scan(x: Tensor, codes: Tensor, ks: Sequence[int], chunk_size, singletons: str, need_r: bool) -> _Ranks:
    """One chunked neighbour search over normalised ``x`` that yields what the neighbour metrics need."""
    _check_choice("singletons", singletons, SINGLETONS)
    _check_chunk_size(chunk_size)
    n = x.shape[0]
    max_k = max(ks)
    counts = torch.bincount(codes)
    r = counts[codes] - 1  # (N,) other members of the query's class
    singleton = r == 0
    num_singletons = int(singleton.sum())
    if num_singletons == n:
        raise ValueError("every class has a single member: no query has a correct neighbour, the metrics are undefined")
    if num_singletons:
        if singletons == "raise":
            raise ValueError(
                f"{num_singletons} queries belong to classes with a single member (singletons='raise'); "
                "pass singletons='exclude' to leave them out or 'miss' to count them as failures"
            )
        log.warning("%d of %d queries have no other sample of their class; singletons=%r",
                    num_singletons, n, singletons)
    max_r = int(r.max()) if need_r else 0
    # Neighbours are listed up to k_list; a query whose first correct neighbour lies beyond the
    # list gets its rank by counting the samples ranked before its best positive (cheaper than
    # listing 1000 neighbours for every query). Positives are looked up in a (classes x largest
    # class) table; when that would be large, everything is listed instead.
    num_classes, largest = counts.numel(), int(counts.max())
    k_list = max(max_r, max_k)
    members = None
    if max_k > _LIST_LENGTH and num_classes * largest <= 16 * n + 2**20:
        k_list = max(max_r, _LIST_LENGTH)
        order = torch.argsort(codes, stable=True)  # members of class c: order[offset[c]:offset[c + 1]]
        offset = torch.cumsum(counts, 0) - counts
        slot = torch.arange(n, device=x.device) - offset[codes[order]]
        members = torch.full((num_classes, largest), -1, dtype=torch.int64, device=x.device)
        members[codes[order], slot] = order
    classes = _Classes(codes, singleton, members, k_list)
    if _use_screen(x, k_list):
        rel, first = _screened_search(x, classes, tuple(ks), chunk_size)
    else:
        rel, first = _exact_search(x, classes, chunk_size)
    first_hit = first.masked_fill(singleton, n)  # a singleton never hits
    ap = torch.zeros(n, dtype=torch.float64, device=x.device)
    rp = torch.zeros(n, dtype=torch.float64, device=x.device)
    if need_r:
        pos = torch.arange(max_r, device=x.device)
        for s in range(0, n, 8192):
            rq = r[s : s + 8192]
            rel_r = rel[s : s + 8192, :max_r] & (pos < rq[:, None])  # relevant and within the first R
            hits = rel_r.cumsum(dim=1).double()
            precision = hits / (pos + 1).double()
            denom = rq.clamp(min=1).double()
            ap[s : s + 8192] = (precision * rel_r).sum(dim=1) / denom
            rp[s : s + 8192] = rel_r.sum(dim=1).double() / denom
    keep = ~singleton if singletons == "exclude" else torch.ones_like(singleton)
    return _Ranks(first_hit, ap, rp, keep, num_singletons)


def _first_listed(rel: Tensor) -> Tensor:
    """Position of the first True of each row of ``rel`` (b, k), k where there is none."""
    k = rel.shape[1]
    return torch.where(rel, torch.arange(k, device=rel.device), k).min(dim=1).values


def _exact_search(x: Tensor, classes: _Classes, chunk_size, queries: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """For each query (all samples, or ``queries``): which of its k_list nearest others share its
    class (b, k_list) bool, and the rank of its first correct neighbour -- in x's own precision."""
    n, k_list, codes = x.shape[0], classes.k_list, classes.codes
    if queries is None:
        queries = torch.arange(n, device=x.device)
    u = queries.shape[0]
    chunk = chunk_size or default_chunk_size(n, k_list, x.device, x.element_size())
    rel = torch.empty(u, k_list, dtype=torch.bool, device=x.device)
    first = torch.empty(u, dtype=torch.int64, device=x.device)
    for start, end, sims, gmax in _similarity_blocks(x, chunk, group_size(n, k_list), queries):
        qs = queries[start:end]
        _, idx = row_topk(sims, k_list, gmax)
        rel[start:end] = codes[idx] == codes[qs, None]  # neighbour j shares the query's class
        f = _first_listed(rel[start:end])
        if classes.members is not None:
            beyond = ((f == k_list) & ~classes.singleton[qs]).nonzero().flatten()
            if beyond.numel():
                f[beyond] = _rank_of_best_positive(sims, beyond, qs, codes, classes.members)
        first[start:end] = f
    return rel, first


def _count_tiles(sims: Tensor, p: Tensor, step: int) -> tuple[Tensor, Tensor]:
    """Per row of ``sims`` (b, N, the transpose of a contiguous (N, b) block): how many entries are
    >= p and how many == p (int64, (b,) each), for p (b,), tile by tile of ``step`` columns.

    Each comparison writes 0 / 1 into a small floating buffer that stays in cache; its column sums
    are exact integers. That is several times faster on a CPU than summing a bool mask of the block.
    """
    block = sims.T  # (N, b) contiguous
    n, b = block.shape
    p = p.reshape(1, b)
    work = torch.empty(min(step, n), b, dtype=torch.float32, device=block.device)
    level = torch.zeros(b, dtype=torch.int64, device=block.device)
    tied = torch.zeros(b, dtype=torch.int64, device=block.device)
    for t0 in range(0, n, step):
        tile, out = block[t0 : t0 + step], work[: min(step, n - t0)]
        level += torch.ge(tile, p, out=out).sum(dim=0).long()
        tied += torch.eq(tile, p, out=out).sum(dim=0).long()
    return level, tied


def _rank_of_best_positive(sims: Tensor, rows: Tensor, queries: Tensor, codes: Tensor, members: Tensor) -> Tensor:
    """0-based rank of the first correct neighbour of chunk rows ``rows``, by counting who ranks before it.

    ``sims`` is the chunk's (b, N) similarity block (the query at -inf, the transpose of a
    contiguous (N, b) block) of the samples ``queries`` (b,); ``members`` lists each class's
    samples, padded with -1. The first correct neighbour is the positive with the highest
    similarity p (the lowest index j* among equals); the samples before it are those with a
    similarity > p, and those equal to p with an index < j*. One compare-and-count pass over the
    block gives both (>= p and == p).
    """
    b, n = sims.shape
    query = queries[rows]
    cand = members[codes[query]]  # (u, largest) the query's class, padded with -1
    valid = (cand >= 0) & (cand != query[:, None])
    ps = sims[rows[:, None], cand.clamp(min=0)].masked_fill(~valid, -math.inf)
    p = ps.max(dim=1, keepdim=True).values  # (u, 1)
    at_p = valid & (ps == p)
    j_star = torch.where(at_p, cand, n).min(dim=1).values
    target = torch.full((b,), math.inf, dtype=sims.dtype, device=sims.device)  # other rows: nothing counts
    target[rows] = p.squeeze(1)
    level, tied = _count_tiles(sims, target, _tile_rows(n, b, 1, sims))
    level, tied = level[rows], tied[rows]  # tied: j*, positives tied with it, and negatives tied with it
    rank = level - tied
    neg_ties = (tied > at_p.sum(dim=1)).nonzero().flatten()
    if neg_ties.numel():  # rare: a negative exactly as similar as the best positive
        cols = torch.arange(n, device=sims.device)
        before = (sims[rows[neg_ties]] == p[neg_ties]) & (cols < j_star[neg_ties, None])
        rank[neg_ties] += before.sum(dim=1)
    return rank


# ----------------------------------------------------------------------------- the bfloat16 screen
def _use_screen(x: Tensor, k_list: int) -> bool:
    """Whether the neighbour search screens in bfloat16 (:mod:`heatup_lib.screen`): float32 on a CPU
    that multiplies bfloat16 natively and where the screen's pass compiles, from ``_SCREEN_MIN_N``
    samples on, with lists of at most ``_SCREEN_MAX_LIST`` (``_SCREEN`` overrides the size and the
    bfloat16 test, not the compiler or the list length)."""
    n = x.shape[0]
    fits = x.dtype == torch.float32 and x.device.type == "cpu" and 2 * k_list < n and k_list <= _SCREEN_MAX_LIST
    if _SCREEN is not None:
        return bool(_SCREEN) and fits and screen.kernel() is not None
    return fits and n >= _SCREEN_MIN_N and screen.available() and screen.kernel() is not None


def _best_positive_index(x: Tensor, queries: Tensor, classes: _Classes, lib) -> tuple[Tensor, Tensor]:
    """Each query's best positive: its similarity p (b,) to its most similar other class member
    (float64, :func:`heatup_lib.screen.pair_dots`; -inf if none), and j* (b,), the lowest index of a
    positive at p."""
    cand = classes.members[classes.codes[queries]]
    valid = (cand >= 0) & (cand != queries[:, None])
    s = screen.pair_dots(x, queries[:, None].expand_as(cand), cand.clamp(min=0), lib)
    s = s.masked_fill(~valid, -math.inf)
    p = s.max(dim=1).values
    j_star = torch.where(valid & (s == p[:, None]), cand, x.shape[0]).min(dim=1).values
    return p, j_star


def _count_thresholds(p: Tensor, e: Tensor, width: int) -> tuple[Tensor, Tensor, Tensor]:
    """int16 thresholds (width,) for the screened counts surely above / possibly at or above each query's
    best positive p (float64 (m,), -inf for none) with error bound e (m,), and which queries they
    bound (m,); ``NEVER`` for the rest and the padding columns."""
    m = p.shape[0]
    th_surely = torch.full((width,), screen.NEVER, dtype=torch.int16)
    th_possibly = th_surely.clone()
    lo, hi = screen.bits_down((p - e).clamp(min=0)), screen.bits_up((p + e).clamp(min=0))
    countable = torch.isfinite(p) & (p - e > 0) & (lo >= 1) & (hi < screen.NEVER)
    never = torch.tensor(screen.NEVER, dtype=torch.int16)
    th_possibly[:m] = torch.where(countable, lo, never)  # v >= bf16_down(p - e): possibly s >= p
    th_surely[:m] = torch.where(countable, hi + 1, never)  # v > bf16_up(p + e): surely s > p
    return th_surely, th_possibly, countable


def _screen_tiles(xb: Tensor, qs: Tensor, state: screen.ScreenPass) -> None:
    """Pass ``state`` over the bfloat16 similarities of the samples ``qs`` with every sample, tile by
    tile of gallery rows; each query's own entry is -inf, and the padding columns beyond len(qs)
    (all zero) get a cut nothing reaches."""
    n, d = xb.shape
    width = state.cut.shape[0]
    state.cut[qs.shape[0] :] = _TAKE_NOTHING
    q = torch.zeros(d, width, dtype=torch.bfloat16)
    q[:, : qs.shape[0]] = xb[qs].T
    tile_buf = torch.empty(min(_SCREEN_TILE_ROWS, n), width, dtype=torch.bfloat16)
    for t0 in range(0, n, _SCREEN_TILE_ROWS):
        t1 = min(t0 + _SCREEN_TILE_ROWS, n)
        tile = torch.mm(xb[t0:t1], q, out=tile_buf[: t1 - t0])
        _exclude_queries(tile, t0, qs)
        state.add(tile.view(torch.int16), t0)


def _screened_search(x: Tensor, classes: _Classes, ks: tuple[int, ...], chunk_size) -> tuple[Tensor, Tensor]:
    """:func:`_exact_search`'s answer, from a bfloat16 screen and exact checks (CPU, float32 ``x``).

    Per chunk of queries, their bfloat16 similarities are computed tile by tile of gallery rows,
    and each tile goes through :class:`heatup_lib.screen.ScreenPass`, which keeps per query:

    - the candidates for its top k_list, which then get their similarities as float64 dot products
      of the float32 rows (:func:`heatup_lib.screen.pair_dots`) and are sorted exactly;
    - two counts: the samples screened surely above its best positive p (> p + e) and possibly
      at or above it (>= p - e). The rank of a first correct neighbour beyond the list lies
      between them; where no K falls between them, that decides Recall@K.

    A query with a K between its counts gets its rank from a second screened pass over its band
    (:func:`_band_ranks`). A query the screen cannot bound (thresholds that are not positive, a
    buffer that overflowed) is computed by the float32 search afterwards. Nothing N x N is stored.
    """
    n = x.shape[0]
    k_list, codes, counting = classes.k_list, classes.codes, classes.members is not None
    lib = screen.kernel()
    xb = x.bfloat16()
    bound = screen.error_bounds(x, xb)
    table = screen.cut_table(float(bound.max()))
    chunk = chunk_size or _screen_chunk(n)
    width = -(-chunk // 32) * 32  # the pass takes 32 columns at a time
    rel = torch.empty(n, k_list, dtype=torch.bool)
    first = torch.empty(n, dtype=torch.int64)
    redo, recount = [], []
    ks_t = torch.tensor(ks)
    for start in range(0, n, chunk):
        end = min(start + chunk, n)
        m, qs = end - start, torch.arange(start, end)
        if counting:
            p = _best_positive_index(x, qs, classes, lib)[0]
        else:
            p = torch.full((m,), -math.inf, dtype=torch.float64)  # nothing to count
        th_surely, th_possibly, countable = _count_thresholds(p, bound[qs], width)
        state = screen.ScreenPass(th_surely, th_possibly, k_list, table, max(_SCREEN_CAPACITY, k_list + 1), lib)
        _screen_tiles(xb, qs, state)
        # the top k_list: the candidates' float64 similarities, sorted exactly
        _, jc, qc, cut = state.result()
        cut = cut[:m]
        ok = cut != screen.TAKE_ALL  # the candidates are complete
        keep = qc < m
        qc, jc = qc[keep], jc[keep]
        sims = screen.pair_dots(x, qc + start, jc, lib)
        per = torch.bincount(qc, minlength=m)
        slot = torch.arange(qc.shape[0]) - (torch.cumsum(per, 0) - per)[qc]
        width_c = max(k_list, int(per.max()) if per.numel() else 0)
        vals = torch.full((m, width_c), -math.inf, dtype=torch.float64)
        cols = (n + torch.arange(width_c)).repeat(m, 1)  # pads: distinct, after every sample
        vals[qc, slot], cols[qc, slot] = sims, jc
        _, idx = sort_exactly(vals, cols, k_list)
        rel[start:end] = codes[idx.clamp(max=n - 1)] == codes[qs, None]
        f = _first_listed(rel[start:end])
        if counting:
            beyond = (f == k_list) & ~classes.singleton[qs] & ok
            # beyond the list, the rank lies in [lo, hi]: j* itself is among the possible ones
            lo = state.surely[:m, None].long().clamp(min=k_list)
            hi = state.possibly[:m, None].long() - 1
            unsure = ((lo < ks_t) & (ks_t <= hi)).any(dim=1) | ~countable
            f = torch.where(beyond & ~unsure, lo.squeeze(1), f)
            recount.append(qs[beyond & unsure])
        first[start:end] = f
        redo.append(qs[~ok])
    redo_q = torch.cat(redo)
    if redo_q.numel():  # the screen could not bound their top k: all in float32
        rel[redo_q], first[redo_q] = _exact_search(x, classes, chunk_size, redo_q)
    recount_q = torch.cat(recount) if recount else redo_q[:0]
    lost = torch.zeros(0, dtype=torch.bool)
    if recount_q.numel():  # a K between the two counts: count the band exactly
        rank = _band_ranks(x, xb, bound, classes, recount_q, lib)
        lost = rank < 0  # unbounded, or a band too wide for the buffer: count in float32
        if bool(lost.any()):
            rank[lost] = _exact_ranks(x, classes, chunk_size, recount_q[lost])
        first[recount_q] = rank.clamp(min=k_list)
    log.debug("screen: %d of %d queries recomputed, %d recounted (%d of them in float32)",
              redo_q.numel(), n, recount_q.numel(), int(lost.sum()))
    return rel, first


def _band_ranks(x: Tensor, xb: Tensor, bound: Tensor, classes: _Classes, queries: Tensor, lib) -> Tensor:
    """Exact rank of the best positive of each of ``queries`` (not singletons), -1 where the screen
    cannot bound it or the band did not fit. A second screened pass counts the samples surely above
    the best positive p and collects the band between the thresholds, whose similarities
    (:func:`heatup_lib.screen.pair_dots`) then decide: above p, or equal to p with an index below
    j*, the lowest-indexed positive at p."""
    out = torch.empty(queries.shape[0], dtype=torch.int64)
    chunk = _screen_chunk(x.shape[0])
    no_table = torch.empty(1, dtype=torch.int16)
    for s0 in range(0, queries.shape[0], chunk):
        qs = queries[s0 : s0 + chunk]
        m = qs.shape[0]
        p, j_star = _best_positive_index(x, qs, classes, lib)
        th_surely, th_possibly, countable = _count_thresholds(p, bound[qs], -(-m // 32) * 32)
        state = screen.ScreenPass(th_surely, th_possibly, 0, no_table, _SCREEN_BAND_CAPACITY, lib, cut=th_possibly)
        _screen_tiles(xb, qs, state)
        _, jc, qc, _ = state.result()
        keep = qc < m
        qc, jc = qc[keep], jc[keep]
        s = screen.pair_dots(x, qs[qc], jc, lib)
        before = (s > p[qc]) | ((s == p[qc]) & (jc < j_star[qc]))
        rank = state.surely[:m].long() + torch.bincount(qc[before], minlength=m)
        out[s0 : s0 + m] = rank.masked_fill(state.blind[:m].bool() | ~countable, -1)
    return out


def _screen_chunk(n: int) -> int:
    """Queries per chunk of the screen: 2048, a multiple of 1024 (oneDNN's bfloat16 product runs up to 2x
    faster on those), fewer for a small gallery."""
    return min(2048, -(-n // 1024) * 1024)


def _exact_ranks(x: Tensor, classes: _Classes, chunk_size, queries: Tensor) -> Tensor:
    """float32 rank of the best positive of each of ``queries`` (none of them singletons)."""
    n = x.shape[0]
    chunk = chunk_size or default_chunk_size(n, 1, x.device, x.element_size())
    out = torch.empty(queries.shape[0], dtype=torch.int64)
    for start, end, sims, _ in _similarity_blocks(x, chunk, n, queries):
        rows = torch.arange(end - start)
        out[start:end] = _rank_of_best_positive(sims, rows, queries[start:end], classes.codes, classes.members)
    return out


def _recalls(ranks: _Ranks, ks: Sequence[int]) -> dict[int, float]:
    """Recall@K for each K from the rank of each query's first correct neighbour."""
    first = ranks.first_hit[ranks.keep]
    return {k: float((first < k).double().mean()) for k in ks}


def recall_at_k(
    embeddings, labels, ks: Sequence[int] = (1, 2, 4, 8), chunk_size: int | None = None,
    *, singletons: str = "exclude",
) -> dict[int, float]:
    """Recall@K: the fraction of queries with a same-class sample among their K nearest others."""
    x = _as_embeddings(embeddings)
    ks = _check_ks(ks, x.shape[0])
    codes = _as_codes(labels, x.shape[0], x.device)
    ranks = _scan(x, codes, ks, chunk_size, singletons, need_r=False)
    return _recalls(ranks, ks)


def map_at_r(embeddings, labels, chunk_size: int | None = None, *, singletons: str = "exclude") -> float:
    """MAP@R (Musgrave et al. 2020): mean over queries of (1/R) sum_{i<=R} P@i [i-th neighbour correct].

    R is the number of other samples of the query's class.
    """
    x = _as_embeddings(embeddings)
    ranks = _scan(x, _as_codes(labels, x.shape[0], x.device), (1,), chunk_size, singletons, need_r=True)
    return float(ranks.ap_at_r[ranks.keep].mean())


def r_precision(embeddings, labels, chunk_size: int | None = None, *, singletons: str = "exclude") -> float:
    """R-Precision (Musgrave et al. 2020): mean over queries of the correct fraction of the R nearest others."""
    x = _as_embeddings(embeddings)
    ranks = _scan(x, _as_codes(labels, x.shape[0], x.device), (1,), chunk_size, singletons, need_r=True)
    return float(ranks.r_prec[ranks.keep].mean())


# ----------------------------------------------------------------------------- clustering
def normalized_mutual_info(labels_true, labels_pred, average: str = "arithmetic") -> float:
    """NMI between two labelings, from their contingency table; matches sklearn's ``average_method``.

    ``average`` names the mean of the two entropies that normalises the mutual information:
    ``"arithmetic"`` (sklearn >= 0.22's default), ``"geometric"`` (sklearn 0.19's, which the
    paper's code used), ``"min"`` or ``"max"``. Two labelings that each put every sample in one
    group give 1, as in sklearn.
    """
    _check_choice("average", average, AVERAGES)
    a = _as_codes(labels_true, len(labels_true), torch.device("cpu")).numpy()
    b = _as_codes(labels_pred, len(labels_pred), torch.device("cpu")).numpy()
    if a.shape != b.shape:
        raise ValueError(f"labelings must have the same length, got {a.shape[0]} and {b.shape[0]}")
    n = a.shape[0]
    if n == 0:
        raise ValueError("labelings must not be empty")
    ka, kb = int(a.max()) + 1, int(b.max()) + 1
    if ka == kb == 1:
        return 1.0
    # the non-zero cells of the (ka x kb) contingency table, without building it
    cells, nij = np.unique(a.astype(np.int64) * kb + b, return_counts=True)
    ai = np.bincount(a, minlength=ka)[cells // kb].astype(np.float64)
    bj = np.bincount(b, minlength=kb)[cells % kb].astype(np.float64)
    nij = nij.astype(np.float64)
    mi = float(np.sum(nij / n * (np.log(nij) + math.log(n) - np.log(ai) - np.log(bj))))
    mi = max(mi, 0.0)

    def entropy(codes: np.ndarray) -> float:
        p = np.bincount(codes) / n
        p = p[p > 0]
        return float(-(p * np.log(p)).sum())

    ha, hb = entropy(a), entropy(b)
    if mi == 0.0:
        return 0.0
    norm = {
        "arithmetic": (ha + hb) / 2,
        "geometric": math.sqrt(ha * hb),
        "min": min(ha, hb),
        "max": max(ha, hb),
    }[average]
    return min(1.0, mi / norm) if norm > 0 else 0.0


def nmi(
    embeddings, labels, num_clusters: int | None = None, seed: int = 0, average: str = "arithmetic",
    *, init: str = NMI_KMEANS["init"], max_iter: int = NMI_KMEANS["max_iter"], tol: float = NMI_KMEANS["tol"],
    chunk_size: int | None = None,
) -> float:
    """NMI between the labels and a k-means clustering of the normalised embeddings.

    k-means (:func:`heatup_lib.kmeans.kmeans`, ``init``, ``max_iter``, ``tol``, ``seed``) runs on
    the embeddings' device with ``num_clusters`` clusters (default: the number of classes). By
    default it seeds with ``init="auto"`` and runs to convergence (no assignment changes; at most
    ``max_iter`` = 100 passes), which the incremental passes make cheap; faiss's k-means, which
    pytorch-metric-learning uses, stops after 20 iterations.
    ``average="arithmetic"`` (default) is sklearn's current normalisation;
    ``average="geometric"`` is what sklearn 0.19, used by the paper's code, computed.
    """
    _check_choice("average", average, AVERAGES)
    x = _as_embeddings(embeddings)
    codes = _as_codes(labels, x.shape[0], x.device)
    return _nmi(x, codes, num_clusters, seed, average, init=init, max_iter=max_iter, tol=tol, chunk_size=chunk_size)


def _nmi(x: Tensor, codes: Tensor, num_clusters, seed: int, average: str, **kmeans_args) -> float:
    """NMI of normalised ``x`` clustered by k-means against label ``codes``."""
    k = int(codes.max()) + 1 if num_clusters is None else num_clusters
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= x.shape[0]:
        raise ValueError(f"num_clusters must be an integer in [1, N={x.shape[0]}] or None, got {num_clusters!r}")
    result = kmeans(x, int(k), seed=seed, **kmeans_args)
    return normalized_mutual_info(codes.cpu(), result.labels.cpu(), average=average)


# ----------------------------------------------------------------------------- all at once
def evaluate(
    embeddings, labels, dataset: str = "cub200",
    *, ks: Sequence[int] | None = None, seed: int = 0, average: str = "arithmetic",
    chunk_size: int | None = None, singletons: str = "exclude", with_nmi: bool = True,
) -> dict[str, float]:
    """Every metric the paper reports for ``dataset``, plus MAP@R and R-Precision, from one search.

    Keys: ``"nmi"``, ``"recall@K"`` for K in ``DATASET_KS[dataset]`` (or ``ks``), ``"map@r"``,
    ``"r_precision"`` and ``"num_singletons"`` (how many queries had no other sample of their
    class: excluded from the neighbour metrics unless ``singletons="miss"``; a count, not a
    fraction). ``with_nmi=False`` skips the clustering.
    """
    _check_choice("dataset", dataset, tuple(DATASET_KS))
    _check_choice("average", average, AVERAGES)
    x = _as_embeddings(embeddings)
    ks = _check_ks(DATASET_KS[dataset] if ks is None else ks, x.shape[0])
    codes = _as_codes(labels, x.shape[0], x.device)
    ranks = _scan(x, codes, ks, chunk_size, singletons, need_r=True)
    out: dict[str, float] = {}
    if with_nmi:
        out["nmi"] = _nmi(x, codes, None, seed, average, chunk_size=chunk_size, **NMI_KMEANS)
    out.update({f"recall@{k}": v for k, v in _recalls(ranks, ks).items()})
    out["map@r"] = float(ranks.ap_at_r[ranks.keep].mean())
    out["r_precision"] = float(ranks.r_prec[ranks.keep].mean())
    out["num_singletons"] = float(ranks.num_singletons)
    return out
