"""Speed of heatup_lib.metrics at Stanford Online Products scale, against pytorch-metric-learning.

Synthetic SOP-like test set (60,502 x ``--dim`` float32, 11,316 classes of 2-12 images in 12
super categories). In one run, each job in its own process (so that its peak RSS is its own),
all with the same number of threads (``--threads``: torch, MKL/OpenMP and faiss):

- ``gemm``: the GEMM-only baseline: the N x N float32 similarity products in the blocks of
  the exact search, nothing else -- what an exact float32 neighbour search must at least compute
- ``gemm_bf16``: the N x N bfloat16 products in the tiles of the bfloat16 screen
  (``heatup_lib.screen``), nothing else -- the floor of the screened search
- ``pml_knn``: PML's ``AccuracyCalculator`` (faiss-cpu), precision@1 + MAP@R, k="max_bin_count"
- ``ours_knn``: ``evaluate(..., "sop", with_nmi=False)``: Recall@{1,10,100,1000}, MAP@R, R-Precision
  (screened in bfloat16 where the CPU multiplies it natively and the screen's C pass builds)
- ``ours_knn_exact``: the same with the screen off (``metrics._SCREEN = False``): the float32 path
- ``gemm_kmeans``: the k-means baseline: one N x k product (one Lloyd assignment's GEMM)
- ``pml_nmi``: PML's NMI (faiss k-means, 20 iterations, random init)
- ``ours_nmi``: our NMI, k-means as ``metrics.nmi`` runs it (``NMI_KMEANS``); with
  ``--compare-init`` also ``ours_nmi_kmeanspp`` (the same with batched k-means++ seeding)
- ``ours_gpu``: every SOP metric, NMI included, on CUDA (only where CUDA is present)

``--repeats R`` runs the jobs round-robin R times and keeps each job's fastest run (under a
varying background load the minimum is the most stable estimate). Prints each job's time, CPU
time, peak RSS and values, then the ratios against PML and against the GEMM-only baseline of
the same run, with the targets of issue 15; checks that our Recall@1 and MAP@R agree with
PML's precision@1 and MAP@R; with ``--record`` appends the run to ``bench/RESULTS.md`` under
``## Metrics at SOP scale``.

    python bench/metrics_speed.py --quick                       # a few seconds: sizes / 50
    python bench/metrics_speed.py --dim 64 --threads 1 --record # full SOP scale, the paper's 64-d
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SECTION = "## Metrics at SOP scale"
# Issue 15's targets: our time / PML's for the neighbour metrics (by dimension) and for NMI; peak RSS.
KNN_TARGET = {64: 0.3, 512: 0.5}
NMI_TARGET = 0.5
PEAK_TARGET_GIB = 2.0


def make_sop_like(n: int, num_classes: int, dim: int, seed: int, sigma: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """L2-normalised float32 embeddings (n, dim) and labels (n,): classes of 2-12 members in 12 super categories."""
    if n < 2 * num_classes or n > 12 * num_classes:
        raise ValueError(f"n must be in [2, 12] x num_classes = [{2 * num_classes}, {12 * num_classes}], got {n}")
    rng = np.random.default_rng(seed)
    # class sizes in [2, 12] with SOP's skew (many small classes), summing to n exactly
    sizes = np.clip(np.round(2 + rng.gamma(1.5, (n / num_classes - 2) / 1.5, num_classes)), 2, 12).astype(np.int64)
    while sizes.sum() != n:
        diff = n - int(sizes.sum())
        room = np.flatnonzero(sizes < 12) if diff > 0 else np.flatnonzero(sizes > 2)
        pick = rng.choice(room, size=min(abs(diff), room.size), replace=False)
        sizes[pick] += np.sign(diff)
    labels = np.repeat(np.arange(num_classes), sizes)
    g = torch.Generator().manual_seed(seed)
    supers = torch.randn(12, dim, generator=g) / dim**0.5
    super_of = torch.randint(0, 12, (num_classes,), generator=g)
    centres = torch.nn.functional.normalize(0.6 * supers[super_of] + torch.randn(num_classes, dim, generator=g) / dim**0.5, dim=1)
    spread = sigma * (0.6 + 0.8 * torch.rand(num_classes, generator=g))  # per-class noise level
    lab = torch.from_numpy(labels)
    x = torch.empty(n, dim)
    for s in range(0, n, 8192):
        e = min(s + 8192, n)
        noise = torch.randn(e - s, dim, generator=g) / dim**0.5
        x[s:e] = centres[lab[s:e]] + spread[lab[s:e], None] * noise
    x = torch.nn.functional.normalize(x, dim=1)
    perm = torch.randperm(n, generator=g).numpy()  # classes not in contiguous blocks
    return x.numpy()[perm].copy(), labels[perm].copy()


def _peak_rss_gib() -> float:
    """This process's peak resident set size in GiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _cpu_seconds() -> float:
    """User + system CPU time of this process so far, all threads together."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _gemm_only(x: np.ndarray) -> None:
    """The N x N similarity products in the blocks ``evaluate`` computes, and nothing else."""
    from heatup_lib.metrics import _as_embeddings, default_chunk_size

    xt = _as_embeddings(x)
    n = xt.shape[0]
    chunk = default_chunk_size(n, 11, xt.device, xt.element_size())
    buf = torch.empty(n, chunk)
    for start in range(0, n, chunk):
        end = min(start + chunk, n)
        torch.mm(xt, xt[start:end].T, out=buf if end - start == chunk else None)


def _gemm_bf16(x: np.ndarray) -> None:
    """The N x N bfloat16 products in the tiles the screen computes (``metrics._screened_search``), and nothing else."""
    from heatup_lib import metrics as M

    xb = M._as_embeddings(x).bfloat16()
    n, d = xb.shape
    width = -(-M._screen_chunk(n) // 32) * 32
    q = torch.zeros(d, width, dtype=torch.bfloat16)
    tile = torch.empty(M._SCREEN_TILE_ROWS, width, dtype=torch.bfloat16)
    for start in range(0, n, width):
        end = min(start + width, n)
        q[:, : end - start] = xb[start:end].T
        for t0 in range(0, n, M._SCREEN_TILE_ROWS):
            t1 = min(t0 + M._SCREEN_TILE_ROWS, n)
            torch.mm(xb[t0:t1], q, out=tile[: t1 - t0])


def _gemm_kmeans(x: np.ndarray, k: int) -> None:
    """One Lloyd assignment's product: the k x N products with k centres (here k of the points), as (k, 2048) blocks."""
    from heatup_lib.metrics import _as_embeddings

    xt = _as_embeddings(x)
    c = xt[torch.randperm(xt.shape[0], generator=torch.Generator().manual_seed(0))[:k]]
    chunk = 2048
    buf = torch.empty(k, chunk)
    for start in range(0, xt.shape[0], chunk):
        end = min(start + chunk, xt.shape[0])
        torch.mm(c, xt[start:end].T, out=buf if end - start == chunk else None)


def run_job(job: str, data: Path, threads: int) -> dict:
    """Run one timed job on the saved data in this process, with ``threads`` threads, and return its numbers."""
    torch.set_num_threads(threads)
    x = np.load(data / "x.npy")
    y = np.load(data / "y.npy")
    num_classes = int(np.unique(y).size)
    out: dict = {"job": job}
    if job.startswith("pml"):
        import faiss

        faiss.omp_set_num_threads(threads)
    t, c = time.perf_counter(), _cpu_seconds()
    if job == "gemm":
        _gemm_only(x)
        out["values"] = {}
    elif job == "gemm_bf16":
        _gemm_bf16(x)
        out["values"] = {}
    elif job == "gemm_kmeans":
        _gemm_kmeans(x, num_classes)
        out["values"] = {}
    elif job == "pml_knn":
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

        calc = AccuracyCalculator(include=("precision_at_1", "mean_average_precision_at_r"),
                                  k="max_bin_count", device=torch.device("cpu"))
        t, c = time.perf_counter(), _cpu_seconds()
        acc = calc.get_accuracy(torch.from_numpy(x), torch.from_numpy(y))
        out["values"] = {"precision@1": acc["precision_at_1"], "map@r": acc["mean_average_precision_at_r"]}
    elif job == "pml_nmi":
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

        calc = AccuracyCalculator(include=("NMI",), device=torch.device("cpu"))
        t, c = time.perf_counter(), _cpu_seconds()
        acc = calc.get_accuracy(torch.from_numpy(x), torch.from_numpy(y))
        out["values"] = {"nmi": acc["NMI"]}
    elif job in ("ours_knn", "ours_knn_exact"):
        from heatup_lib import metrics as M

        if job == "ours_knn_exact":
            M._SCREEN = False
        out["values"] = M.evaluate(x, y, dataset="sop", with_nmi=False)
        out["screened"] = M._use_screen(torch.empty(x.shape), 11)  # would the search of this size screen?
    elif job in ("ours_nmi", "ours_nmi_kmeanspp"):
        from heatup_lib.kmeans import kmeans
        from heatup_lib.metrics import NMI_KMEANS, _as_embeddings, normalized_mutual_info

        args = dict(NMI_KMEANS, **({"init": "k-means++"} if job.endswith("kmeanspp") else {}))
        km = kmeans(_as_embeddings(x), num_classes, seed=0, **args)  # what metrics.nmi does, keeping the details
        value = normalized_mutual_info(y, km.labels.numpy())
        out["values"] = {"nmi": value, "geometric nmi": normalized_mutual_info(y, km.labels.numpy(), "geometric")}
        out["kmeans"] = {"init": args["init"], "iterations": km.num_iter, "converged": km.converged,
                         "inertia": km.inertia}
    elif job == "ours_gpu":
        from heatup_lib.metrics import evaluate

        xc, yc = torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda()
        evaluate(xc[:4096], yc[:4096], dataset="sop", ks=(1, 10, 100, 1000))  # warm-up (kernels, cuBLAS)
        torch.cuda.synchronize()
        t, c = time.perf_counter(), _cpu_seconds()
        res = evaluate(xc, yc, dataset="sop")
        torch.cuda.synchronize()
        out["values"] = res
        out["device"] = torch.cuda.get_device_name()
        out["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
    else:
        raise ValueError(f"unknown job {job!r}")
    out["seconds"] = time.perf_counter() - t
    out["cpu_seconds"] = _cpu_seconds() - c
    out["peak_rss_gib"] = _peak_rss_gib()
    return out


def _machine() -> str:
    """CPU model, cores, memory, and library versions, in one line."""
    model = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    versions = [f"torch {torch.__version__}"]
    for mod in ("faiss", "pytorch_metric_learning"):
        try:
            versions.append(f"{mod} {__import__(mod).__version__}")
        except ImportError:
            pass
    return f"{model}, {os.cpu_count()} cores, {mem:.0f} GiB RAM; " + ", ".join(versions)


def _record(path: Path, text: str) -> None:
    """Append ``text`` to this benchmark's section of RESULTS.md."""
    from _results import record_section

    record_section(path, SECTION, text)


def _summary(results: dict[str, dict], dim: int) -> tuple[list[str], bool]:
    """The comparison lines (ratios against PML and against the GEMM-only baseline, with the targets) and
    whether our values agree with PML's."""
    lines: list[str] = []
    ok = True

    def secs(job: str) -> float:
        return results[job]["seconds"]

    def verdict(value: float, target: float | None) -> str:
        if target is None:
            return "no target at this dimension"
        return f"target <= {target}: {'met' if value <= target else 'MISSED'}"

    if "ours_knn" in results and "pml_knn" in results:
        ours, pml = results["ours_knn"]["values"], results["pml_knn"]["values"]
        d1 = abs(ours["recall@1"] - pml["precision@1"])
        dm = abs(ours["map@r"] - pml["map@r"])
        agree = d1 <= 1e-6 and dm <= 1e-6
        ok &= agree
        lines.append(f"- Recall@1 vs PML precision@1: |diff| = {d1:.2e}; MAP@R |diff| = {dm:.2e} "
                     f"({'agree' if agree else 'DISAGREE'} to 1e-6)")
        ratio = secs("ours_knn") / secs("pml_knn")
        lines.append(f"- neighbour metrics: ours {secs('ours_knn'):.1f} s (R@1,10,100,1000 + MAP@R + R-Precision) "
                     f"vs PML {secs('pml_knn'):.1f} s (P@1 + MAP@R): ratio {ratio:.2f} "
                     f"({verdict(ratio, KNN_TARGET.get(dim))})")
    if "ours_knn" in results and "ours_knn_exact" in results:
        a, b = results["ours_knn"]["values"], results["ours_knn_exact"]["values"]
        diff = {k: abs(a[k] - b[k]) for k in a if a[k] != b[k]}
        lines.append(f"- ours_knn (screened: {results['ours_knn'].get('screened')}) vs the float32 path: "
                     f"{secs('ours_knn') / secs('ours_knn_exact'):.2f} of its time; values "
                     + ("identical" if not diff else "differ: " + ", ".join(f"{k} by {v:.1e}" for k, v in diff.items())))
    for base, what in (("gemm", "the N x N float32 products"), ("gemm_bf16", "the N x N bfloat16 products")):
        if base in results:
            for job in ("ours_knn", "ours_knn_exact", "pml_knn"):
                if job in results:
                    lines.append(f"- {job} / {base} ({secs(base):.1f} s, {what}): {secs(job) / secs(base):.2f}")
    if "ours_nmi" in results and "pml_nmi" in results:
        ours, pml = results["ours_nmi"], results["pml_nmi"]
        ratio = secs("ours_nmi") / secs("pml_nmi")
        higher = ours["values"]["nmi"] >= pml["values"]["nmi"]
        lines.append(f"- NMI: ours {secs('ours_nmi'):.1f} s vs PML {secs('pml_nmi'):.1f} s: ratio {ratio:.2f} "
                     f"({verdict(ratio, NMI_TARGET)}); NMI ours {ours['values']['nmi']:.6f} "
                     f"({ours['kmeans']['init']} seeding, {ours['kmeans']['iterations']} passes, converged "
                     f"{ours['kmeans']['converged']}) vs PML {pml['values']['nmi']:.6f} (faiss, random init, "
                     f"20 iterations): {'at least as high' if higher else 'LOWER'}")
    if "gemm_kmeans" in results:
        for job in ("ours_nmi", "pml_nmi"):
            if job in results:
                lines.append(f"- {job} / one k-means assignment GEMM ({secs('gemm_kmeans'):.1f} s, N x k): "
                             f"{secs(job) / secs('gemm_kmeans'):.2f}")
    if "ours_nmi_kmeanspp" in results:
        r = results["ours_nmi_kmeanspp"]
        lines.append(f"- NMI with batched k-means++ seeding: {r['values']['nmi']:.6f} in {r['seconds']:.1f} s "
                     f"({r['kmeans']['iterations']} passes)")
    ours_jobs = {k: r for k, r in results.items() if k.startswith("ours") and k != "ours_gpu"}
    if ours_jobs:
        peak = max(r["peak_rss_gib"] for r in ours_jobs.values())
        lines.append(f"- peak RSS, ours: {peak:.2f} GiB (target <= {PEAK_TARGET_GIB:g}: "
                     f"{'met' if peak <= PEAK_TARGET_GIB else 'MISSED'}); PML: "
                     + ", ".join(f"{k} {r['peak_rss_gib']:.2f} GiB" for k, r in results.items() if k.startswith("pml")))
    if "ours_gpu" in results:
        r = results["ours_gpu"]
        lines.append(f"- GPU ({r['device']}): all SOP metrics incl. NMI in {r['seconds']:.2f} s (target < 1), "
                     f"peak GPU memory {r['peak_gpu_gib']:.2f} GiB")
    return lines, ok


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, make the data, run each job in a subprocess, print and record the comparison."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=60502, help="number of test samples (SOP: 60,502)")
    p.add_argument("--classes", type=int, default=11316, help="number of classes (SOP: 11,316)")
    p.add_argument("--dim", type=int, default=512, help="embedding dimension (the paper's: 64)")
    p.add_argument("--sigma", type=float, default=2.0, help="within-class noise level of the synthetic data")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="sizes / 50: a sanity check in seconds")
    p.add_argument("--jobs", default="gemm,gemm_bf16,ours_knn,ours_knn_exact,pml_knn,gemm_kmeans,ours_nmi,pml_nmi,ours_gpu",
                   help="comma-separated jobs, run in this order")
    p.add_argument("--compare-init", action="store_true", help="also run ours_nmi_kmeanspp")
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="threads for every job (torch, MKL/OpenMP, faiss); default: all cores")
    p.add_argument("--repeats", type=int, default=1, help="run the jobs round-robin this often, keep each one's fastest")
    p.add_argument("--record", action="store_true", help="append the results to bench/RESULTS.md")
    p.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS.md")
    p.add_argument("--note", default="", help="a remark recorded with the results (e.g. machine load)")
    p.add_argument("--job", help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.job:  # worker mode
        print(json.dumps(run_job(args.job, args.data, args.threads)))
        return 0

    if args.quick:
        args.n, args.classes = args.n // 50, args.classes // 50
    jobs = [j for j in args.jobs.split(",") if j]
    if args.compare_init and "ours_nmi_kmeanspp" not in jobs:
        jobs.append("ours_nmi_kmeanspp")
    if not torch.cuda.is_available():
        jobs = [j for j in jobs if j != "ours_gpu"]
    load_start = os.getloadavg()
    t = time.perf_counter()
    x, y = make_sop_like(args.n, args.classes, args.dim, args.seed, args.sigma)
    print(f"data: {x.shape[0]} x {x.shape[1]}, {np.unique(y).size} classes, sizes "
          f"{np.bincount(y).min()}-{np.bincount(y).max()}, made in {time.perf_counter() - t:.1f} s; "
          f"{args.threads} threads, load average {load_start[0]:.1f}", flush=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    runs: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="heatup-bench-") as tmp:
        np.save(Path(tmp) / "x.npy", x)
        np.save(Path(tmp) / "y.npy", y)
        del x
        for rep in range(args.repeats):
            for job in jobs:
                cmd = [sys.executable, str(Path(__file__).resolve()), "--job", job, "--data", tmp,
                       "--threads", str(args.threads)]
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if proc.returncode != 0:
                    print(f"{job}: FAILED\n{proc.stderr[-3000:]}", flush=True)
                    continue
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                runs.setdefault(job, []).append(r)
                print(f"{job} (run {rep + 1}): {r['seconds']:.2f} s, CPU {r['cpu_seconds']:.1f} s, peak RSS "
                      f"{r['peak_rss_gib']:.2f} GiB" + "".join(f", {k}={v:.6f}" for k, v in r["values"].items())
                      + (f", k-means {r['kmeans']}" if "kmeans" in r else ""), flush=True)
    load_end = os.getloadavg()
    results = {}
    for job, rs in runs.items():  # each job's fastest run, with every run's time beside it
        best = dict(min(rs, key=lambda r: r["seconds"]))
        best["all_seconds"] = [r["seconds"] for r in rs]
        best["peak_rss_gib"] = max(r["peak_rss_gib"] for r in rs)
        results[job] = best
    lines, ok = _summary(results, args.dim)
    lines.append(f"- load average: {load_start[0]:.1f} at the start, {load_end[0]:.1f} at the end "
                 f"(1-minute; {os.cpu_count()} cores)")
    print("\n".join(lines))

    if args.record:
        cmd = "python bench/metrics_speed.py " + shlex.join(argv if argv is not None else sys.argv[1:])
        table = ["| job | seconds (best) | all runs (s) | CPU s | peak RSS GiB | values |", "|---|---:|---|---:|---:|---|"]
        for k, r in results.items():
            vals = ", ".join(f"{a}={b:.4f}" if isinstance(b, float) else f"{a}={b}" for a, b in r["values"].items())
            table.append(f"| {k} | {r['seconds']:.1f} | {', '.join(f'{v:.1f}' for v in r['all_seconds'])} | "
                         f"{r['cpu_seconds']:.1f} | {r['peak_rss_gib']:.2f} | {vals} |")
        text = (f"### {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, {args.dim}-d\n\n"
                f"- machine: {_machine()}\n- command: `{cmd.strip()}`\n"
                f"- data: synthetic SOP-like, {args.n} x {args.dim}, {args.classes} classes, sigma {args.sigma}, "
                f"seed {args.seed}; {args.threads} threads per job, best of {args.repeats} round-robin runs\n"
                + (f"- note: {args.note}\n" if args.note else "")
                + "\n".join(lines) + "\n\n" + "\n".join(table) + "\n")
        _record(args.results, text)
        print(f"recorded in {args.results}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
