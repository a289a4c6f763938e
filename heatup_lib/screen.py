"""A bfloat16 screen of cosine-similarity blocks, with an error bound that makes it exact.

On a CPU with bfloat16 matrix units (Intel AMX, AVX512-BF16) the similarity product in bfloat16
costs a fraction of the float32 one, and the passes over its result touch half the bytes. The
screen never decides anything it cannot prove: the float32 accumulation of every screened
similarity of a query q and a gallery sample j lies within ``e_q`` of the similarity ``s`` that
decides the ranking (:func:`pair_dots`: the float64 dot product of the float32 rows), where

    e_q = max_j |dx_j| + (1 + 2^-8) |dx_q| + 2 (gamma_D + gamma_D') (1 + 2^-7)

bounds the rounding of the inputs to bfloat16 (``dx = x - bf16(x)``, by Cauchy-Schwarz on unit
rows), the float32 accumulation of the product (gamma_K = K u / (1 - K u), u = 2^-24) and, with
room to spare, that of ``pair_dots`` itself. The product's final rounding to bfloat16 is not in the bound: it is
handled by comparing only against bfloat16 numbers rounded the safe way (:func:`bits_up`,
:func:`bits_down`), so that any faithful rounding of the product keeps every conclusion true.

Positive bfloat16 numbers are ordered as their bit patterns read as int16, so a block is
compared, counted and maximised as int16, the cheap integer way; negative values read as
negative int16 and fall below every positive threshold. A query whose thresholds are not
positive is not screened (the caller computes it exactly).

The pass over each tile -- two counts and the candidates of a running top k per query -- is the
C function ``screen_tile`` (``screen_kernel.c``; AVX-512 where the compiler targets it, plain
loops elsewhere), compiled on first use by :func:`kernel`: torch ops cost several passes over a
tile for what it does in one.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import math
import os
import platform
import subprocess
import tempfile
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["error_bounds", "bits_up", "bits_down", "bits_to_float", "pair_dots", "cut_table", "kernel",
           "ScreenPass", "NEVER", "TAKE_ALL", "available"]

log = logging.getLogger(__name__)

_U = 2.0**-24  # float32 unit roundoff


def available() -> bool:
    """Whether this CPU computes bfloat16 matrix products natively (oneDNN's bfloat16 support)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _gamma(k: int) -> float:
    """Higham's gamma_k: the relative error bound of a float32 sum of k terms."""
    return k * _U / (1 - k * _U)


def error_bounds(x: Tensor, xb: Tensor) -> Tensor:
    """``e_q`` (N,) float64 for unit rows ``x`` (N, D) float32 and their bfloat16 copy ``xb``."""
    dx = torch.linalg.vector_norm(x.double() - xb.double(), dim=1)
    d = x.shape[1]
    accumulation = 2 * (_gamma(d) + _gamma(d)) * (1 + 2.0**-7)
    return (float(dx.max()) + (1 + 2.0**-8) * dx + accumulation) * (1 + 2.0**-20) + 2 * _U


def bits_down(v: Tensor) -> Tensor:
    """int16 bit patterns of the largest bfloat16 <= ``v`` (float64, > 0 where it matters)."""
    f = v.float()
    f = torch.where(f.double() > v, torch.nextafter(f, torch.zeros_like(f)), f)
    return (f.view(torch.int32) >> 16).to(torch.int16)  # truncation rounds a positive number down


def bits_up(v: Tensor) -> Tensor:
    """int16 bit patterns of the smallest bfloat16 >= ``v`` (float64, > 0 where it matters)."""
    f = v.float()
    f = torch.where(f.double() < v, torch.nextafter(f, torch.full_like(f, math.inf)), f)
    b = f.view(torch.int32)
    return ((b >> 16) + ((b & 0xFFFF) != 0).int()).to(torch.int16)


def bits_to_float(bits: Tensor) -> Tensor:
    """The float64 values of bfloat16 bit patterns (int16)."""
    return (bits.int() << 16).view(torch.float32).double()


def pair_dots(x: Tensor, rows: Tensor, cols: Tensor, lib) -> Tensor:
    """Dot products x[rows] . x[cols] (float64, the shape of ``rows``) of float32 rows, pair by pair:
    the similarities that decide the ranking where the screen runs.

    Each product of two float32 numbers is exact in float64 and the sum is float64 in a fixed order
    (``screen_kernel.c``), so equal rows give equal similarities, wherever they sit.
    """
    if x.dtype != torch.float32 or not x.is_contiguous():
        raise ValueError(f"pair_dots needs C-contiguous float32 rows, got {x.dtype}")
    rows, cols = torch.broadcast_tensors(rows, cols)
    r = rows.reshape(-1).long().contiguous()
    c = cols.reshape(-1).long().contiguous()
    out = torch.empty(r.shape[0], dtype=torch.float64)
    if r.numel():
        lib.pair_dots(x.data_ptr(), x.shape[1], r.data_ptr(), c.data_ptr(), r.shape[0], out.data_ptr())
    return out.reshape(rows.shape)


NEVER = 0x7F7F  # the largest finite bfloat16's bit pattern: a count threshold nothing reaches
TAKE_ALL = -(2**15)  # a cut every entry reaches


def cut_table(e: float) -> Tensor:
    """For every int16 pattern m of a bfloat16 (index m + 2^15): the pattern of bf16_down(pred(m) - 2e).

    If at least k entries of a query's screened row are >= m, its k largest float32 similarities
    are all > pred(m) - e, so each of them is screened >= pred(m) - 2e, and so >= the cut. Where
    that cut is not positive, ``TAKE_ALL``: the screen cannot narrow the query down.
    """
    m = torch.arange(-(2**15), 2**15, dtype=torch.int32)
    cut = bits_to_float((m - 1).clamp(min=0).to(torch.int16)) - 2 * e
    tau = bits_down(cut.clamp(min=0))
    usable = (m >= 2) & (m <= NEVER) & (cut > 0) & (tau >= 1)
    return torch.where(usable, tau, torch.tensor(TAKE_ALL, dtype=torch.int16))


# ----------------------------------------------------------------------------- the compiled pass
_SOURCE = Path(__file__).with_name("screen_kernel.c")
_kernel_cache: dict[tuple[str, ...], object] = {}


def _cpu_tag() -> str:
    """What -march=native compiles for: the CPU model and flags (a shared cache may span machines)."""
    text = ""
    with contextlib.suppress(OSError):
        text = Path("/proc/cpuinfo").read_text()
    lines = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags", "Features"))][:2]
    return platform.machine() + "\n" + "\n".join(lines)


def _cache_dir() -> Path:
    """Where compiled kernels are kept: ``$HEATUP_CACHE``, else ``$XDG_CACHE_HOME/heatup``, else ``~/.cache/heatup``."""
    if os.environ.get("HEATUP_CACHE"):
        return Path(os.environ["HEATUP_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "heatup"


def kernel(flags: tuple[str, ...] = ("-O3", "-march=native")):
    """The screen's C functions (``screen_kernel.c``: ``screen_tile``, ``pair_dots``), compiled with the
    C compiler (``$CC``, else ``cc``) and loaded; None where there is no compiler or it fails (the
    caller then searches without the screen). Compiled once per source, flags and CPU; the library
    file is written atomically."""
    cc = os.environ.get("CC", "cc")
    key = (cc, *flags)
    if key in _kernel_cache:
        return _kernel_cache[key]
    source = _SOURCE.read_bytes()
    digest = hashlib.sha256(b"\0".join([source, *(f.encode() for f in key), _cpu_tag().encode()])).hexdigest()[:16]
    lib_path = _cache_dir() / f"screen-{digest}.so"
    loaded = None
    try:
        if not lib_path.exists():
            lib_path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=lib_path.parent) as tmp:
                out = Path(tmp) / lib_path.name
                subprocess.run([cc, *flags, "-shared", "-fPIC", "-o", str(out), str(_SOURCE)],
                               check=True, capture_output=True, timeout=120)
                os.replace(out, lib_path)
        lib = ctypes.CDLL(str(lib_path))
        ptr, i64 = ctypes.c_void_p, ctypes.c_int64
        lib.screen_tile.restype = ctypes.c_int
        lib.screen_tile.argtypes = [ptr, i64, i64, i64, ptr, ptr, ptr, ptr, ptr, i64, ptr, ptr, ptr, ptr, i64, ptr, ptr]
        lib.pair_dots.restype = None
        lib.pair_dots.argtypes = [ptr, i64, ptr, ptr, i64, ptr]
        loaded = lib
    except (OSError, subprocess.SubprocessError) as err:
        detail = getattr(err, "stderr", b"") or b""
        log.warning("the bfloat16 screen is off: could not build %s with %s (%s) %s",
                    _SOURCE.name, cc, err, detail.decode(errors="replace")[-500:])
    _kernel_cache[key] = loaded
    return loaded


class ScreenPass:
    """The state of one chunk's screen pass: per query column, two counts against its thresholds
    and the candidates for its k largest entries (``screen_kernel.c`` describes the rules).

    ``th_surely`` / ``th_possibly`` are int16 (width,) bit patterns (``NEVER`` counts nothing);
    ``table`` is :func:`cut_table`'s. With ``k = 0`` the cut stays ``cut`` (int16 (width,)) and the
    pass collects each column's band ``cut <= v < th_surely`` instead. ``width`` must be a multiple
    of 32, at most 4096. Tiles are int16 views of bfloat16 blocks (t, width), C-contiguous, fewer
    than 2^15 rows each.
    """

    def __init__(self, th_surely: Tensor, th_possibly: Tensor, k: int, table: Tensor, capacity: int, lib,
                 cut: Tensor | None = None):
        width = th_surely.shape[0]
        if width % 32 or width > 4096 or th_possibly.shape != th_surely.shape:
            raise ValueError(f"thresholds must be int16 (width,) with width a multiple of 32 and <= 4096, got {width}")
        self.lib, self.k, self.capacity = lib, k, capacity
        self.th_surely = th_surely.to(torch.int16).contiguous()
        self.th_possibly = th_possibly.to(torch.int16).contiguous()
        self.table = table.contiguous()
        self.surely = torch.zeros(width, dtype=torch.int32)
        self.possibly = torch.zeros(width, dtype=torch.int32)
        self.run = torch.full((width, k), TAKE_ALL, dtype=torch.int16)
        self.cut = torch.full((width,), TAKE_ALL, dtype=torch.int16) if cut is None else cut.to(torch.int16).clone()
        self.buf_v = torch.empty(width, capacity, dtype=torch.int16)
        self.buf_j = torch.empty(width, capacity, dtype=torch.int32)
        self.fill = torch.zeros(width, dtype=torch.int32)
        self.blind = torch.zeros(width, dtype=torch.uint8)

    def add(self, tile: Tensor, t0: int) -> None:
        """Screen ``tile`` (t, width) int16, gallery rows t0 .. t0 + t - 1 (one thread: two threads
        beside torch's own ran slower here)."""
        t, w = tile.shape
        if tile.dtype != torch.int16 or not tile.is_contiguous() or w != self.cut.shape[0]:
            raise ValueError(f"a tile must be C-contiguous int16 (t, {self.cut.shape[0]}), got {tile.dtype} {tuple(tile.shape)}")
        rc = self.lib.screen_tile(
            tile.data_ptr(), t, w, t0, self.th_surely.data_ptr(), self.th_possibly.data_ptr(),
            self.surely.data_ptr(), self.possibly.data_ptr(), self.run.data_ptr(), self.k, self.cut.data_ptr(),
            self.table.data_ptr(), self.buf_v.data_ptr(), self.buf_j.data_ptr(), self.capacity,
            self.fill.data_ptr(), self.blind.data_ptr())
        if rc:
            raise ValueError(f"screen_tile refused a tile of shape {(t, w)} (rows < 2^15, width a multiple of 32 <= 4096)")

    def result(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(bits, rows, cols, cut)``: each column's candidates >= its final cut (int16 patterns, gallery
        rows, columns), and the final cut (``TAKE_ALL`` where the column is blind or never narrowed)."""
        cut = self.cut.masked_fill(self.blind.bool(), TAKE_ALL)
        slot = torch.arange(self.capacity)
        keep = (slot < self.fill[:, None]) & (self.buf_v >= cut[:, None])
        cols, slots = keep.nonzero().unbind(1)
        return self.buf_v[cols, slots], self.buf_j[cols, slots].long(), cols, cut
