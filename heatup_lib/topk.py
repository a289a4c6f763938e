"""The k largest entries of each row of a matrix, in an exact order, from its group maxima.

``torch.topk`` over the N columns of a similarity block costs, on a CPU, about half as much as
the matrix product that made the block (it copies every row into a heap of value-index pairs),
and it leaves ties in no defined order. :func:`row_topk` needs only the maxima of groups of
columns, which a caller can take while the block is still in cache (``metrics`` does):

1. Split the columns into G = ceil(N / g) groups of g consecutive columns and take each group's
   maximum.
2. The k-th largest of the G group maxima, tau, is at most the row's k-th largest entry (the k
   groups above it hold k distinct entries >= tau), so every entry of the row's top k lies in a
   group whose maximum is >= tau. When exactly k groups reach tau -- nearly always -- their k g
   entries are the only candidates, and ``topk`` runs on those (g ~ sqrt(N / k) keeps both the G
   maxima and the k g candidates few).
3. The order is exact: by value descending, equal values by the lower column. Rows whose
   candidates hold a tie are sorted exactly (by column, then stably by value); rows where more
   than k groups reach tau (group maxima tied at the cut) are sorted over all their columns.
   Both are rare with continuous data and cost little when they are not.

Every step is a device-generic torch operation, so the same code runs on a GPU.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["group_size", "group_max", "row_topk", "sort_exactly"]


def group_size(num_cols: int, k: int) -> int:
    """Columns per group: about sqrt(N / k), so that the N / g maxima and the k g candidates are both few."""
    return max(1, math.isqrt(max(1, num_cols // max(1, k))))


def group_max(s: Tensor, g: int) -> Tensor:
    """Maxima (b, ceil(N / g)) of each row's groups of g consecutive columns of ``s`` (b, N).

    The reduction follows ``s``'s memory order: the transpose of a contiguous (N, b) tensor is
    reduced vectorised across its rows and gives a column-major result.
    """
    if s.shape[0] > 1 and s.T.is_contiguous():
        return _group_max_t(s.T, g).T
    n = s.shape[1]
    full = n // g
    out = s[:, : full * g].unflatten(1, (full, g)).amax(dim=2)
    if full * g < n:
        out = torch.cat([out, s[:, full * g :].amax(dim=1, keepdim=True)], dim=1)
    return out


def _group_max_t(t: Tensor, g: int) -> Tensor:
    """Maxima (ceil(N / g), b) of groups of g consecutive rows of a contiguous ``t`` (N, b)."""
    n = t.shape[0]
    full = n // g
    out = t[: full * g].unflatten(0, (full, g)).amax(dim=1)
    if full * g < n:
        out = torch.cat([out, t[full * g :].amax(dim=0, keepdim=True)], dim=0)
    return out


def sort_exactly(vals: Tensor, cols: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The first k of each row by value descending, equal values by the lower column (cols distinct per row)."""
    order = torch.argsort(cols, dim=1)
    vals, cols = vals.gather(1, order), cols.gather(1, order)
    order = torch.sort(vals, dim=1, descending=True, stable=True).indices[:, :k]
    return vals.gather(1, order), cols.gather(1, order)


def row_topk(s: Tensor, k: int, gmax: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Values (b, k) and columns (b, k) of each row's k largest entries of ``s`` (b, N), 1 <= k <= N.

    Ordered by value descending, equal values by the lower column: the order of a stable sort.
    ``gmax`` (b, G), if given, holds :func:`group_max` of ``s`` with g = :func:`group_size` (N, k).
    ``s`` may be any strided view (e.g. the transpose of an (N, b) product); it is not changed.
    Entries may be -inf (an excluded column); NaN is not supported.
    """
    b, n = s.shape
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, N={n}], got {k}")
    g = group_size(n, k)
    if gmax is None:
        gmax = group_max(s, g)
    num_groups = gmax.shape[1]
    kg = min(k, num_groups)
    tau, gid = gmax.topk(kg, dim=1)  # (b, kg) the groups holding the top k, unordered among ties
    cols = (gid.unsqueeze(2) * g + torch.arange(g, device=s.device)).flatten(1)  # (b, kg g)
    valid = cols < n  # the last group may be short
    cand = s.gather(1, cols.clamp(max=n - 1)).masked_fill_(~valid, -math.inf)
    cols = torch.where(valid, cols, n + torch.arange(cols.shape[1], device=s.device))  # pads: distinct, >= N
    k_search = min(k + 1, cand.shape[1])  # one more than needed, to see a tie at the cut
    vals, pos = cand.topk(k_search, dim=1)  # sorted descending, ties in no defined order
    idx = cols.gather(1, pos)
    out_v, out_i = vals[:, :k].clone(), idx[:, :k].clone()
    # rows where more than kg groups reach tau: the candidates may miss some; sort the whole row
    spill = (gmax >= tau[:, -1:]).sum(dim=1) > kg
    # rows with a tie among the first k + 1 (and all candidates): sort their candidates exactly
    tied = (vals[:, 1:] == vals[:, :-1]).any(dim=1) & ~spill
    rows = tied.nonzero().flatten()
    if rows.numel():
        out_v[rows], out_i[rows] = sort_exactly(cand[rows], cols[rows], k)
    rows = spill.nonzero().flatten()
    if rows.numel():
        sv, si = torch.sort(s[rows], dim=1, descending=True, stable=True)
        out_v[rows], out_i[rows] = sv[:, :k], si[:, :k]
    return out_v, out_i
