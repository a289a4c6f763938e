"""The k largest entries of each row of a matrix, in an exact order, from one cheap pass over it.

``torch.topk`` over the N columns of a similarity block costs, on a CPU, about half as much as
the matrix product that made the block (it copies every row into a heap of value-index
pairs), and it leaves ties in no defined order. :func:`row_topk` needs one vectorised
reduction instead:

1. Split the columns into G groups of g (column j is in group j mod G; a short tail joins the
   first groups) and take each group's maximum: one pass at memory speed.
2. The k-th largest of the G group maxima, tau, is at most the row's k-th largest entry (the k
   groups above it hold k distinct entries >= tau), so every entry of the row's top k lies in a
   group whose maximum is >= tau. When exactly k groups reach tau -- nearly always -- their k g
   entries are the only candidates; ``topk`` runs on those (g ~ sqrt(N / k): k g + N / g small).
3. Order is exact: by value descending, equal values by the lower column. Rows whose candidates
   hold a tie are sorted exactly (by column, then stably by value); rows where more than k groups
   reach tau (group maxima tied at the cut) are sorted over all their columns. Both are rare
   with continuous data and cost little when they are not.

Every step is a device-generic torch operation, so the same code runs on a GPU.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["row_topk", "group_size", "empty_like_rows"]


def group_size(num_cols: int, k: int) -> int:
    """Columns per group: about sqrt(N / k), so that the N / g maxima and the k g candidates are both few."""
    return max(1, math.isqrt(max(1, num_cols // max(1, k))))


def empty_like_rows(s: Tensor, num_cols: int, dtype: torch.dtype | None = None) -> Tensor:
    """An uninitialised (b, num_cols) tensor (``s``'s dtype by default) laid out like ``s``: column-major if ``s`` is.

    A reduction over ``s``'s columns runs vectorised (and several times faster on a CPU) when its
    output has the same memory order as ``s``.
    """
    dtype = s.dtype if dtype is None else dtype
    if s.stride(0) == 1 and s.shape[0] > 1:
        return torch.empty(num_cols, s.shape[0], dtype=dtype, device=s.device).T
    return torch.empty(s.shape[0], num_cols, dtype=dtype, device=s.device)


def _sort_exactly(vals: Tensor, cols: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The first k of each row by value descending, equal values by the lower column (cols distinct per row)."""
    order = torch.argsort(cols, dim=1)
    vals, cols = vals.gather(1, order), cols.gather(1, order)
    order = torch.sort(vals, dim=1, descending=True, stable=True).indices[:, :k]
    return vals.gather(1, order), cols.gather(1, order)


def row_topk(s: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Values (b, k) and columns (b, k) of each row's k largest entries of ``s`` (b, N), 1 <= k <= N.

    Ordered by value descending, equal values by the lower column: the order of a stable sort.
    ``s`` may be any strided view (e.g. the transpose of an (N, b) product); it is not changed.
    Entries may be -inf (an excluded column); NaN is not supported.
    """
    b, n = s.shape
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, N={n}], got {k}")
    g = group_size(n, k)
    num_groups = n // g  # >= g, so a tail of fewer than g columns fits into the first groups
    main = num_groups * g
    gmax = torch.amax(s[:, :main].unflatten(1, (g, num_groups)), dim=1, out=empty_like_rows(s, num_groups))
    # (b, G); group j: columns j, j + G, j + 2G, ...
    if main < n:
        tail = n - main  # columns main + j, j < tail, join group j
        gmax[:, :tail] = torch.maximum(gmax[:, :tail], s[:, main:])
    kg = min(k, num_groups)
    tau, gid = gmax.topk(kg, dim=1)  # (b, kg) the groups holding the top k, unordered among ties
    cols = (gid.unsqueeze(2) + num_groups * torch.arange(g + 1, device=s.device)).flatten(1)  # (b, kg (g + 1))
    valid = cols < n
    cand = s.gather(1, cols.clamp(max=n - 1)).masked_fill_(~valid, -math.inf)
    cols = cols.masked_fill(~valid, n) + torch.arange(cols.shape[1], device=s.device) * (~valid)  # pads: distinct, > N - 1
    k_search = min(k + 1, cand.shape[1])  # one more than needed, to see a tie at the cut
    vals, pos = cand.topk(k_search, dim=1)  # sorted descending, ties in no defined order
    idx = cols.gather(1, pos)
    out_v, out_i = vals[:, :k].clone(), idx[:, :k].clone()
    # rows with a tie among the first k + 1: sort their candidates exactly
    tied = (vals[:, 1:] == vals[:, :-1]).any(dim=1)
    # rows where more than kg groups reach tau: the candidates may miss some; sort the whole row
    spill = (gmax >= tau[:, -1:]).sum(dim=1) > kg
    tied &= ~spill
    rows = tied.nonzero().flatten()
    if rows.numel():
        out_v[rows], out_i[rows] = _sort_exactly(cand[rows], cols[rows], k)
    rows = spill.nonzero().flatten()
    if rows.numel():
        sv, si = torch.sort(s[rows], dim=1, descending=True, stable=True)
        out_v[rows], out_i[rows] = sv[:, :k], si[:, :k]
    return out_v, out_i
