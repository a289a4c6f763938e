"""k-means in torch: batched k-means++ seeding and chunked Lloyd iterations, on any device.

The clustering behind NMI. At the scale of Stanford Online Products (60,502 points, 11,316
clusters, 512 dimensions) the classical algorithms are too slow on a CPU:

- Exact k-means++ (Arthur & Vassilvitskii 2007) draws one centre per round, and each round reads
  all N points to update the squared distances D(x)^2: 11,316 sequential passes over 124 MB,
  memory-bound matrix-vector products (minutes); greedy k-means++ (sklearn's default, 2 + ln k
  candidates per round) multiplies that by about 11.
- k-means|| (Bahmani et al. 2012) oversamples in a few rounds and then must recluster its
  O(k log N) candidates down to k with k-means++: the same k sequential rounds again, on a
  smaller set.

This module's default is *batched k-means++*: the first centre is uniform, then the remaining
k - 1 are drawn in ``init_rounds`` rounds of m = (k - 1) / rounds centres each, sampled without
replacement with probability proportional to D(x)^2, after which D(x)^2 is updated with one
matrix product against the m new centres. With one centre per round (``init_rounds >= k - 1``,
the default whenever k <= 64) this *is* exact k-means++. With many centres per round the
points drawn in one round do not repel each other, but every round still favours the regions
that earlier rounds left uncovered; the whole seeding costs about one Lloyd iteration of
floating point work, done as matrix products. ``init="random"`` draws k distinct points
uniformly (what faiss does), at no cost. ``init="auto"`` (what NMI uses) takes k-means++ while a
round draws at most 32 centres and the uniform draw beyond: measured on SOP-like data
(``bench/RESULTS.md``), D^2 sampling with about 18 centres per round beat the uniform draw at
1,131 clusters, but with 177 per round (11,316 clusters, 5 points each) it gave a lower NMI than
the uniform draw for each of three seeds, and cost as much as all the Lloyd iterations.

Lloyd iterations compute distances as ||c||^2 - 2 x.c in chunks of points (never an N x k
matrix beyond the memory budget), accumulate the centre sums in float64 (CUDA adds in no
fixed order; in float64 that changes a float32 centre only in the rarest case), move an empty
cluster's centre to the point farthest from its own centre, and stop when no assignment
changes, when the inertia improves by less than ``tol`` relatively, or after ``max_iter``.
After the first pass only the centres that moved can change an assignment: a point whose own
centre moved is searched against all k centres, every other point only against the moved ones.
That gives the full search's answer at a fraction of its cost once few clusters change (on SOP
the third pass costs about a tenth of the first), so running to convergence is cheap.
Random numbers come from a CPU generator seeded by ``seed``, so a seed gives the same seeding
on every device.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["KMeansResult", "kmeans", "INITS"]

log = logging.getLogger(__name__)

INITS = ("k-means++", "random", "auto")

# init="auto": k-means++ while each seeding round draws at most this many centres, uniform beyond.
_AUTO_PER_ROUND = 32

# Bytes a chunk's (centres x points) distance block may take, per device type: on a CPU, what
# stays in a core's cache while the block is reduced.
_CPU_BUDGET = 4 * 2**20
_CUDA_BUDGET_MAX = 2 * 2**30


@dataclass(frozen=True)
class KMeansResult:
    """What :func:`kmeans` found: centres (k, D), labels (N,), inertia and iterations run."""

    centres: Tensor
    labels: Tensor
    inertia: float
    num_iter: int
    converged: bool


def _budget_rows(num_cols: int, x: Tensor) -> int:
    """Points per (num_cols x points) distance block of ``x``'s rows that fit the device's budget.

    On a CPU the budget grows with the dimension: a wider product must reuse each centre for
    more points to run at full speed (at 512-d, 352 points per block run 1.7x faster than 32).
    """
    if x.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(x.device)
        budget = min(_CUDA_BUDGET_MAX, free // 4)
    else:
        budget = _CPU_BUDGET * max(1, x.shape[1] // 64)
    bytes_per = x.element_size()
    rows = int(budget // max(1, num_cols * bytes_per * 2))
    return rows // 32 * 32 if rows >= 32 else max(1, rows)  # BLAS runs a multiple of 32 columns up to 2x faster


def as_float_matrix(x, name: str = "points") -> Tensor:
    """A finite floating (N, D) tensor from a tensor, array or list: float64 stays float64, all else float32."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    elif not isinstance(x, Tensor):
        x = torch.as_tensor(np.asarray(x))
    x = x.detach()
    if x.dtype != torch.float64:
        x = x.to(torch.float32)
    if x.dim() != 2:
        raise ValueError(f"{name} must be a 2-D array (N, D), got shape {tuple(x.shape)}")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{name} must have at least one row and one column, got shape {tuple(x.shape)}")
    bad = ~torch.isfinite(x).all(dim=1)
    if bool(bad.any()):
        rows = bad.nonzero().flatten()[:5].tolist()
        raise ValueError(f"{name} must be finite; {int(bad.sum())} rows hold NaN or inf, e.g. rows {rows}")
    return x.contiguous()


def _min_sq_dist(x: Tensor, x_sq: Tensor, c: Tensor, chunk: int) -> tuple[Tensor, Tensor]:
    """Squared distance from each point to its nearest centre, and that centre's index (first on ties).

    Each chunk of points gets a (k, b) block ||c||^2 - 2 c.x: in that shape the product runs
    about twice as fast on a CPU as in (b, k), and the reductions over the centres run vectorised
    across the points. The first nearest index comes from the minimum m without an arg-reduction:
    the largest of ramp = (k, k - 1, ..., 1) where the block equals m is k minus that index.
    """
    n, k = x.shape[0], c.shape[0]
    c_sq = (c * c).sum(dim=1, keepdim=True)  # (k, 1)
    ramp = torch.arange(k, 0, -1, dtype=x.dtype, device=x.device).unsqueeze(1)  # exact up to 2^24 in float32
    dist = torch.empty(n, dtype=x.dtype, device=x.device)
    index = torch.empty(n, dtype=torch.int64, device=x.device)
    buf = hit = None  # reused between chunks: a fresh block per chunk costs page faults
    for start in range(0, n, chunk):
        end = min(start + chunk, n)
        if buf is None or buf.shape[1] != end - start:
            buf = torch.empty(k, end - start, dtype=x.dtype, device=x.device)
            hit = torch.empty_like(buf)
        d = torch.addmm(c_sq, c, x[start:end].T, beta=1, alpha=-2, out=buf)  # (k, b)
        m = d.amin(dim=0)
        first = torch.eq(d, m, out=hit).mul_(ramp).amax(dim=0)
        dist[start:end] = (m + x_sq[start:end]).clamp_(min=0)
        index[start:end] = k - first.long()
    return dist, index


def _reassign(
    x: Tensor, x_sq: Tensor, c: Tensor, labels: Tensor, dist: Tensor, moved: Tensor, cap: int,
) -> tuple[Tensor, Tensor]:
    """Nearest centres after only the centres ``moved`` (k,) changed, from the previous ``labels`` and ``dist``.

    A point whose own centre moved is searched against every centre. Any other point's own
    centre and distance are unchanged, and no unmoved centre was nearer before (nor as near with
    a lower index), so only the moved centres can take it: it is compared with those alone.
    The result is the full search's, at the cost of (points in moved clusters x k) + (other
    points x moved centres) distances: a small fraction of a full pass once Lloyd settles.
    """
    moved_ids = moved.nonzero().flatten()  # ascending, so the first nearest is the lowest index
    if not moved_ids.numel():
        return dist, labels
    dist, labels = dist.clone(), labels.clone()
    own = moved[labels]
    pts = own.nonzero().flatten()
    if pts.numel():
        chunk = min(cap, _budget_rows(c.shape[0], x))
        dist[pts], labels[pts] = _min_sq_dist(x[pts], x_sq[pts], c, chunk)
    rest = (~own).nonzero().flatten()
    if rest.numel():
        chunk = min(cap, _budget_rows(moved_ids.numel(), x))
        d, j = _min_sq_dist(x[rest], x_sq[rest], c[moved_ids], chunk)
        cand, cur, cur_d = moved_ids[j], labels[rest], dist[rest]
        better = (d < cur_d) | ((d == cur_d) & (cand < cur))
        dist[rest[better]], labels[rest[better]] = d[better], cand[better]
    return dist, labels


def _seed_random(n: int, k: int, g: torch.Generator) -> Tensor:
    """k distinct point indices, uniformly."""
    return torch.randperm(n, generator=g)[:k]


def _seed_kmeanspp(x: Tensor, x_sq: Tensor, k: int, g: torch.Generator, rounds: int, chunk_cap: int) -> Tensor:
    """Batched k-means++: point indices of k distinct centres drawn by D^2 sampling in ``rounds`` rounds."""
    n = x.shape[0]
    eps = 1e-5 if x.dtype == torch.float32 else 1e-12
    first = int(torch.randint(n, (1,), generator=g))
    chosen = [torch.tensor([first])]
    taken = torch.zeros(n, dtype=torch.bool)
    taken[first] = True
    d2 = None
    new = torch.tensor([first])
    remaining = k - 1
    rounds = max(1, min(rounds, remaining)) if remaining else 0
    sizes = [remaining // rounds + (1 if r < remaining % rounds else 0) for r in range(rounds)]
    for m in sizes:
        c = x[new.to(x.device)]
        chunk = min(chunk_cap, _budget_rows(c.shape[0], x))
        dist, _ = _min_sq_dist(x, x_sq, c, chunk)
        # a point's distance to itself is zero up to cancellation noise: call that zero
        c_sq = (c * c).sum(dim=1).max()
        dist = torch.where(dist <= eps * (x_sq + c_sq), torch.zeros_like(dist), dist)
        d2 = dist if d2 is None else torch.minimum(d2, dist)
        w = d2.to(device="cpu", dtype=torch.float64)
        w[taken] = 0.0
        positive = int((w > 0).sum())
        if positive >= m:
            new = torch.multinomial(w, m, replacement=False, generator=g)
        else:  # fewer distinct points than centres: the rest uniformly among those not taken
            pos = w.nonzero().flatten()
            free = (~taken).nonzero().flatten()
            free = free[~torch.isin(free, pos)]
            fill = free[torch.randperm(free.numel(), generator=g)[: m - pos.numel()]]
            new = torch.cat([pos, fill])
        taken[new] = True
        chosen.append(new)
    return torch.cat(chosen)


def kmeans(
    x,
    k: int,
    seed: int = 0,
    *,
    init: str = "k-means++",
    max_iter: int = 50,
    tol: float = 1e-4,
    init_rounds: int = 64,
    chunk_size: int | None = None,
) -> KMeansResult:
    """Cluster the rows of ``x`` (N, D) into ``k`` clusters; deterministic for a given ``seed``.

    ``x`` is a torch tensor (any device; computed there) or a numpy array. float64 input is
    computed in float64, everything else in float32. ``init`` is ``"k-means++"`` (batched into
    ``init_rounds`` rounds of D^2 sampling; exact k-means++ when ``init_rounds >= k - 1``),
    ``"random"`` (k distinct points, uniformly), or ``"auto"``: k-means++ while a round draws at
    most 32 centres, uniform beyond (see the module docstring). Lloyd iterations stop when
    assignments no longer change, when the inertia improves by less than ``tol`` (relative), or
    after ``max_iter`` assignment passes. ``chunk_size`` caps the points per distance block
    (default from a memory budget).
    """
    x = as_float_matrix(x)
    n, dim = x.shape
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
        raise ValueError(f"k must be an integer in [1, N={n}], got {k!r}")
    k = int(k)
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")
    if not (isinstance(tol, (int, float)) and tol >= 0 and math.isfinite(tol)):
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
    if isinstance(init_rounds, bool) or not isinstance(init_rounds, int) or init_rounds < 1:
        raise ValueError(f"init_rounds must be an integer >= 1, got {init_rounds!r}")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")

    g = torch.Generator().manual_seed(int(seed))
    x_sq = (x * x).sum(dim=1)
    cap = chunk_size if chunk_size is not None else n
    rounds = k - 1 if k <= 64 else init_rounds
    if init == "auto":
        init = "k-means++" if k - 1 <= _AUTO_PER_ROUND * rounds else "random"
    if init == "random":
        idx = _seed_random(n, k, g)
    else:
        idx = _seed_kmeanspp(x, x_sq, k, g, rounds, cap)
    centres = x[idx.to(x.device)].clone()
    chunk = min(cap, _budget_rows(k, x))
    log.info("k-means: N=%d, D=%d, k=%d, init=%s, chunk=%d", n, dim, k, init, chunk)

    # Lloyd iterations. After the first, only the centres that moved can change an assignment,
    # so each pass searches just those (see _reassign): exact, and cheap once few points move.
    dist, labels = _min_sq_dist(x, x_sq, centres, chunk)
    inertia = float(dist.double().sum())
    converged = False
    num_iter = 1
    log.debug("k-means iteration 1: inertia %.8g", inertia)
    while num_iter < max_iter:
        new_centres = _update(x, labels, k, dist, chunk)
        moved = (new_centres != centres).any(dim=1)
        centres = new_centres
        new_dist, new_labels = _reassign(x, x_sq, centres, labels, dist, moved, cap)
        num_iter += 1
        new_inertia = float(new_dist.double().sum())
        changed = int((new_labels != labels).sum())
        log.debug("k-means iteration %d: inertia %.8g, %d centres moved, %d assignments changed",
                  num_iter, new_inertia, int(moved.sum()), changed)
        done = changed == 0 or inertia - new_inertia <= tol * inertia
        dist, labels, inertia = new_dist, new_labels, new_inertia
        if done:
            converged = True
            break
    log.info("k-means: %d iterations, inertia %.6g, converged=%s", num_iter, inertia, converged)
    return KMeansResult(centres=centres, labels=labels, inertia=inertia, num_iter=num_iter, converged=converged)


def _update(x: Tensor, labels: Tensor, k: int, dist: Tensor, chunk: int) -> Tensor:
    """New centres: means of their points (float64 sums); an empty cluster takes the farthest point."""
    n, dim = x.shape
    sums = torch.zeros(k, dim, dtype=torch.float64, device=x.device)
    step = max(chunk, 4096)
    for start in range(0, n, step):
        end = min(start + step, n)
        sums.index_add_(0, labels[start:end], x[start:end].double())
    counts = torch.bincount(labels, minlength=k)
    empty = (counts == 0).nonzero().flatten()
    centres = (sums / counts.clamp(min=1).unsqueeze(1).double()).to(x.dtype)
    if empty.numel():
        # farthest points first; stable sort so ties go to the lower index
        order = torch.sort(dist, descending=True, stable=True).indices[: empty.numel()]
        centres[empty] = x[order]
        log.debug("k-means: %d empty clusters moved to the farthest points", empty.numel())
    return centres
