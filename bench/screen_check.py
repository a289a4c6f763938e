"""Where the bfloat16 screen and the float32 search disagree at SOP scale, which one float64 agrees with.

Runs the neighbour search twice on the SOP-like data of ``metrics_speed.py`` -- screened
(``metrics._SCREEN = True``) and float32 (``False``) -- and lists the queries whose AP@R,
R-Precision or any Recall@K decision differs. For each, it ranks the gallery by float64 dot
products of the normalised float32 rows (ties to the lower index) and prints the three answers.

    python bench/screen_check.py --dim 512
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from metrics_speed import make_sop_like  # noqa: E402

from heatup_lib import metrics as M  # noqa: E402

KS = (1, 10, 100, 1000)


def float64_answer(x64: torch.Tensor, codes: np.ndarray, q: int) -> tuple[float, int]:
    """AP@R and the rank of the first correct neighbour of query q, from float64 similarities."""
    s = (x64 @ x64[q]).numpy()
    s[q] = -np.inf
    order = np.lexsort((np.arange(len(s)), -s))
    rel = codes[order[:-1]] == codes[q]  # the query itself is last
    r = int(rel.sum())
    prec = np.cumsum(rel[:r]) / np.arange(1, r + 1)
    return float((prec * rel[:r]).sum() / r), int(np.argmax(rel))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--n", type=int, default=60502)
    p.add_argument("--classes", type=int, default=11316)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    x, y = make_sop_like(args.n, args.classes, args.dim, seed=0, sigma=2.0)
    xt = M._as_embeddings(x)
    codes = M._as_codes(y, xt.shape[0], xt.device)
    ranks = {}
    for flag in (True, False):
        M._SCREEN = flag
        ranks[flag] = M._scan(xt, codes, KS, None, "exclude", need_r=True)
    a, b = ranks[True], ranks[False]
    decide = torch.stack([(a.first_hit < k) != (b.first_hit < k) for k in KS]).any(dim=0)
    differ = ((a.ap_at_r != b.ap_at_r) | (a.r_prec != b.r_prec) | decide).nonzero().flatten().tolist()
    print(f"{args.n} x {args.dim}: {len(differ)} queries differ between the screened and the float32 search")
    x64, labels = xt.double(), codes.numpy()
    agree = 0
    for q in differ:
        ap64, first64 = float64_answer(x64, labels, q)
        ok = ap64 == float(a.ap_at_r[q]) and all((first64 < k) == bool(a.first_hit[q] < k) for k in KS)
        agree += ok
        print(f"query {q}: AP@R float64 {ap64:.6f}, screened {float(a.ap_at_r[q]):.6f}, float32 "
              f"{float(b.ap_at_r[q]):.6f}; first correct neighbour at {first64} (float64), "
              f"{int(b.first_hit[q])} (float32)")
    print(f"the screened answer equals float64's on {agree} of {len(differ)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
