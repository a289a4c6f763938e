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
- Ties are exact in both dtypes; but a similarity itself may differ in its last bit between
  chunk sizes or devices (the matrix product's blocking), which can reorder two samples whose
  similarities differ by less than that rounding.
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import torch
from torch import Tensor

from heatup_lib.kmeans import as_float_matrix, kmeans
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

# Up to this max K the neighbours are listed; beyond it the rank of the first correct one is counted.
_LIST_LENGTH = 32
# Bytes a (b x b) block of the pair sweep and its work buffer may take: on a CPU about what stays in
# the last-level cache between the product and the passes over it; on a GPU a share of its memory.
_CPU_BLOCK = 16 * 2**20
_CUDA_BUDGET_MAX = 4 * 2**30


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
    """Samples per block of the pair sweep: a (b x b) block of similarities and its work buffer fit the budget.

    ``k`` (the neighbours listed) no longer changes the answer; it is kept for callers.
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = min(_CUDA_BUDGET_MAX, free // 4)
    else:
        budget = _CPU_BLOCK
    rows = min(num_gallery, math.isqrt(budget // (element_size + 4)))  # the block and a float32 buffer
    return rows // 64 * 64 if rows >= 64 else max(1, rows)  # BLAS runs a multiple of 64 columns up to 2x faster


# ----------------------------------------------------------------------------- the pair sweep
class _TopLists:
    """Each row's k nearest columns so far, in the exact order (similarity descending, lower index
    first), merged block by block; placeholders (-inf, indices N, N + 1, ...) until filled."""

    def __init__(self, n: int, k: int, dtype: torch.dtype, device: torch.device) -> None:
        self.k = k
        self.vals = torch.full((n, k), -math.inf, dtype=dtype, device=device)
        self.cols = (n + torch.arange(k, device=device)).expand(n, k).contiguous()

    def add(self, r0: int, s: Tensor, c0: int) -> None:
        """Merge block ``s`` (b, c): the similarities of rows r0.. with columns c0.."""
        b, c = s.shape
        k = min(self.k, c)
        gmax = group_max(s, group_size(c, k))
        # a row whose best entry here is below its current k-th cannot change (equal may: lower index)
        rows = (gmax.amax(dim=1) >= self.vals[r0 : r0 + b, -1]).nonzero().flatten()
        if not rows.numel():
            return
        if rows.numel() < b:
            s, gmax = s[rows], gmax[rows]
        vals, cols = row_topk(s, k, gmax)
        r = rows + r0
        self.vals[r], self.cols[r] = sort_exactly(torch.cat([self.vals[r], vals], dim=1),
                                                  torch.cat([self.cols[r], cols + c0], dim=1), self.k)


class _Counts:
    """Per row, the negatives ranked before the best positive, counted block by block against a bracket.

    The best positive's similarity p is only known once the sweep has passed all of a row's
    positives, so each block is compared with a bracket [lo, hi] around p taken from each class's
    Gram matrix (the product in another order, so within ``eps`` of the blocks' values): negatives
    above hi are counted, those inside the bracket are kept, and :meth:`ranks` resolves them
    exactly against p from the blocks themselves -- the same numbers the lists see.
    """

    def __init__(self, lo: Tensor, hi: Tensor) -> None:
        self.lo, self.hi = lo, hi  # (N,); +inf for a row without positives: nothing counts
        self.above = torch.zeros(lo.shape[0], dtype=torch.int64, device=lo.device)
        self.near: list[tuple[Tensor, Tensor, Tensor]] = []  # (row, column, similarity) inside the bracket

    def add(self, r0: int, s: Tensor, c0: int, work: Tensor) -> None:
        """Count block ``s`` (b, c; positives at -inf): rows r0.., columns c0..; ``work`` is a float32
        buffer laid out like ``s``."""
        b = s.shape[0]
        lo, hi = self.lo[r0 : r0 + b, None], self.hi[r0 : r0 + b, None]
        # 0 / 1 written into a float buffer: its row sums are exact and far faster than a bool mask's
        above = torch.gt(s, hi, out=work).sum(dim=1)
        inside = torch.ge(s, lo, out=work).sum(dim=1) - above
        self.above[r0 : r0 + b] += above.long()
        rows = (inside > 0).nonzero().flatten()
        if rows.numel():
            sub = s[rows]
            rr, cc = ((sub >= lo[rows]) & (sub <= hi[rows])).nonzero(as_tuple=True)
            self.near.append((r0 + rows[rr], c0 + cc, sub[rr, cc]))

    def ranks(self, p: Tensor, j_star: Tensor) -> Tensor:
        """0-based rank of each row's best positive (similarity p, lowest index j* among equals): the
        negatives above it, and those equal to it with a lower index."""
        rank = self.above.clone()
        if self.near:
            row, col, val = (torch.cat(t) for t in zip(*self.near))
            before = (val > p[row]) | ((val == p[row]) & (col < j_star[row]))
            rank.index_add_(0, row[before], torch.ones_like(row[before]))
        return rank


@dataclass
class _Positives:
    """Every pair of distinct same-class samples (i, j) whose entry (i, j) lies in a block pair (I <= J)
    of the sweep, grouped by block pair, and the similarity the sweep finds there."""

    i: Tensor
    j: Tensor
    bounds: Tensor  # (num_blocks^2 + 1,) on the CPU: block pair (I, J) holds pairs bounds[I nb + J] : [I nb + J + 1]
    num_blocks: int
    value: Tensor  # filled by the sweep

    def of(self, bi: int, bj: int) -> tuple[int, int]:
        """The slice of pairs whose entry lies in block pair (bi, bj)."""
        at = bi * self.num_blocks + bj
        return int(self.bounds[at]), int(self.bounds[at + 1])

    def best(self, n: int, block: int) -> tuple[Tensor, Tensor]:
        """Each row's best positive similarity p (-inf if none) and the lowest index j* among equals.

        An entry (i, j) in a block pair I < J serves row i and, transposed, row j; in a block
        pair I = I both orders are entries of their own.
        """
        other = self.i // block != self.j // block
        rows = torch.cat([self.i, self.j[other]])
        cols = torch.cat([self.j, self.i[other]])
        vals = torch.cat([self.value, self.value[other]])
        p = torch.full((n,), -math.inf, dtype=vals.dtype, device=vals.device).scatter_reduce(
            0, rows, vals, "amax")
        at = vals == p[rows]
        j_star = torch.full((n,), n, dtype=torch.int64, device=vals.device).scatter_reduce(
            0, rows[at], cols[at], "amin")
        return p, j_star


def _positive_pairs(x: Tensor, members: Tensor, block: int) -> tuple[_Counts, _Positives]:
    """The sweep's positive pairs, and a bracket around each row's best positive similarity from each
    class's Gram matrix. ``members`` (classes, largest) lists each class's samples, padded with -1."""
    n, dim = x.shape
    num_classes, m = members.shape
    p = torch.full((n,), math.inf, dtype=x.dtype, device=x.device)  # +inf: no positive, nothing counts
    pi, pj = [], []
    off = ~torch.eye(m, dtype=torch.bool, device=x.device)
    step = max(1, (64 * 2**20) // (m * (m + dim) * x.element_size()))
    for c0 in range(0, num_classes, step):
        mem = members[c0 : c0 + step]  # (cc, m)
        valid = mem >= 0
        xs = x[mem.clamp(min=0)]  # (cc, m, D)
        pair = valid[:, :, None] & valid[:, None, :] & off
        gram = torch.bmm(xs, xs.transpose(1, 2)).masked_fill(~pair, -math.inf)
        has = valid & pair.any(dim=2)
        p[mem[has]] = gram.amax(dim=2)[has]
        ci, ai, bi = pair.nonzero(as_tuple=True)
        pi.append(mem[ci, ai])
        pj.append(mem[ci, bi])
    pi, pj = torch.cat(pi), torch.cat(pj)
    # |a dot product's rounding| <= D u |x| |y| (u the unit roundoff): twice for two orders, with margin
    eps = 4 * dim * torch.finfo(x.dtype).eps / 2
    nb = -(-n // block)
    bi, bj = pi // block, pj // block
    keep = bi <= bj  # entry (i, j) with i's block after j's is the transpose of a kept one
    key = (bi * nb + bj)[keep]
    order = torch.argsort(key, stable=True)
    bounds = torch.searchsorted(key[order], torch.arange(nb * nb + 1, device=x.device)).cpu()
    pi, pj = pi[keep][order], pj[keep][order]
    counts = _Counts(p - eps, p + eps)
    return counts, _Positives(pi, pj, bounds, nb, torch.empty(pi.shape[0], dtype=x.dtype, device=x.device))


def _sweep(x: Tensor, block: int, lists: _TopLists | None, counts: _Counts | None = None,
           positives: _Positives | None = None) -> None:
    """Compute each pair's similarity once, in (b x b) blocks (I, J >= I) of normalised ``x``, and feed
    every block to the rows of I (its rows) and of J (its columns): half the product of a
    query-by-query search. The query itself is at -inf; the positives' similarities are recorded
    in ``positives``, then set to -inf for the counts.
    """
    n = x.shape[0]
    starts = list(range(0, n, block))
    buffers: dict[tuple[int, int], tuple[Tensor, Tensor]] = {}
    for bi, i0 in enumerate(starts):
        i1 = min(i0 + block, n)
        for bj in range(bi, len(starts)):
            j0, j1 = starts[bj], min(starts[bj] + block, n)
            if (i1 - i0, j1 - j0) not in buffers:
                buffers[i1 - i0, j1 - j0] = (torch.empty(i1 - i0, j1 - j0, dtype=x.dtype, device=x.device),
                                             torch.empty(i1 - i0, j1 - j0, dtype=torch.float32, device=x.device))
            s, work = buffers[i1 - i0, j1 - j0]
            torch.mm(x[i0:i1], x[j0:j1].T, out=s)
            if bi == bj:
                s.fill_diagonal_(-math.inf)  # the query itself, by index
            if lists is not None:
                lists.add(i0, s, j0)
                if bj != bi:
                    lists.add(j0, s.T, i0)
            if counts is not None:
                lo, hi = positives.of(bi, bj)
                pi, pj = positives.i[lo:hi] - i0, positives.j[lo:hi] - j0
                positives.value[lo:hi] = s[pi, pj]
                s[pi, pj] = -math.inf  # a positive never ranks before the best positive
                counts.add(i0, s, j0, work)
                if bj != bi:
                    counts.add(j0, s.T, i0, work.T)


def nearest_neighbours(embeddings, k: int, chunk_size: int | None = None) -> tuple[Tensor, Tensor]:
    """Each sample's k most cosine-similar other samples: similarities (N, k) and indices (N, k).

    The query is excluded by index; ties are broken by the lower index. Results are on the
    embeddings' device (CPU for numpy input), float32 unless the input is float64.
    ``chunk_size`` caps the samples per block of the sweep.
    """
    x = _as_embeddings(embeddings)
    n = x.shape[0]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n - 1:
        raise ValueError(f"k must be an integer in [1, N - 1 = {n - 1}] (the gallery of a query), got {k!r}")
    _check_chunk_size(chunk_size)
    k = int(k)
    lists = _TopLists(n, k, x.dtype, x.device)
    _sweep(x, chunk_size or default_chunk_size(n, k, x.device, x.element_size()), lists)
    return lists.vals, lists.cols


# ----------------------------------------------------------------------------- neighbour metrics
@dataclass(frozen=True)
class _Ranks:
    """Per query: rank of the first correct neighbour (k if none in the top k), AP@R, R-Precision."""

    first_hit: Tensor  # (N,) int64, 0-based position
    ap_at_r: Tensor  # (N,) float64
    r_prec: Tensor  # (N,) float64
    keep: Tensor  # (N,) bool: the queries the metrics average over
    num_singletons: int


def _scan(x: Tensor, codes: Tensor, max_k: int, chunk_size, singletons: str, need_r: bool) -> _Ranks:
    """One sweep over the pairs of normalised ``x`` that yields what the neighbour metrics need."""
    _check_choice("singletons", singletons, SINGLETONS)
    _check_chunk_size(chunk_size)
    n = x.shape[0]
    r = torch.bincount(codes)[codes] - 1  # (N,) other members of the query's class
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
    # The rank of each query's first correct neighbour is counted: the negatives ranked before its
    # best positive, found from a (classes x largest class) table of members. When max K is small
    # (or that table would be large) the neighbours are listed up to max K instead.
    counts = torch.bincount(codes)
    num_classes, largest = counts.numel(), int(counts.max())
    block = chunk_size or default_chunk_size(n, max(max_r, max_k), x.device, x.element_size())
    count = max_k > _LIST_LENGTH and num_classes * largest <= 16 * n + 2**20
    k_list = max_r if count else max(max_r, max_k)
    lists = _TopLists(n, k_list, x.dtype, x.device) if k_list else None
    tally = positives = None
    if count:
        order = torch.argsort(codes, stable=True)  # members of class c: order[offset[c]:offset[c + 1]]
        offset = torch.cumsum(counts, 0) - counts
        slot = torch.arange(n, device=x.device) - offset[codes[order]]
        members = torch.full((num_classes, largest), -1, dtype=torch.int64, device=x.device)
        members[codes[order], slot] = order
        tally, positives = _positive_pairs(x, members, block)
    _sweep(x, block, lists, tally, positives)
    if count:
        p, j_star = positives.best(n, block)
        outside = ~singleton & ((p < tally.lo) | (p > tally.hi))
        if bool(outside.any()):  # cannot happen while the rounding bound holds; never return a wrong rank
            raise RuntimeError(f"{int(outside.sum())} best-positive similarities left their bracket")
        first = tally.ranks(p, j_star)
    else:
        rel = codes[lists.cols.clamp(max=n - 1)] == codes[:, None]
        first = torch.where(rel, torch.arange(k_list, device=x.device), k_list).amin(dim=1)
    first_hit = first.masked_fill(singleton, n)  # a singleton never hits
    ap = torch.zeros(n, dtype=torch.float64, device=x.device)
    rp = torch.zeros(n, dtype=torch.float64, device=x.device)
    if need_r:
        pos = torch.arange(max_r, device=x.device)
        rel = codes[lists.cols[:, :max_r]] == codes[:, None]
        rel_r = rel & (pos < r[:, None])  # relevant and within the first R
        precision = rel_r.cumsum(dim=1).double() / (pos + 1).double()
        denom = r.clamp(min=1).double()
        ap = (precision * rel_r).sum(dim=1) / denom
        rp = rel_r.sum(dim=1).double() / denom
    keep = ~singleton if singletons == "exclude" else torch.ones_like(singleton)
    return _Ranks(first_hit, ap, rp, keep, num_singletons)


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
    ranks = _scan(x, codes, max(ks), chunk_size, singletons, need_r=False)
    return _recalls(ranks, ks)


def map_at_r(embeddings, labels, chunk_size: int | None = None, *, singletons: str = "exclude") -> float:
    """MAP@R (Musgrave et al. 2020): mean over queries of (1/R) sum_{i<=R} P@i [i-th neighbour correct].

    R is the number of other samples of the query's class.
    """
    x = _as_embeddings(embeddings)
    ranks = _scan(x, _as_codes(labels, x.shape[0], x.device), 1, chunk_size, singletons, need_r=True)
    return float(ranks.ap_at_r[ranks.keep].mean())


def r_precision(embeddings, labels, chunk_size: int | None = None, *, singletons: str = "exclude") -> float:
    """R-Precision (Musgrave et al. 2020): mean over queries of the correct fraction of the R nearest others."""
    x = _as_embeddings(embeddings)
    ranks = _scan(x, _as_codes(labels, x.shape[0], x.device), 1, chunk_size, singletons, need_r=True)
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
    ranks = _scan(x, codes, max(ks), chunk_size, singletons, need_r=True)
    out: dict[str, float] = {}
    if with_nmi:
        out["nmi"] = _nmi(x, codes, None, seed, average, chunk_size=chunk_size, **NMI_KMEANS)
    out.update({f"recall@{k}": v for k, v in _recalls(ranks, ks).items()})
    out["map@r"] = float(ranks.ap_at_r[ranks.keep].mean())
    out["r_precision"] = float(ranks.r_prec[ranks.keep].mean())
    out["num_singletons"] = float(ranks.num_singletons)
    return out
