"""Speed of heatup_lib.metrics at Stanford Online Products scale, against pytorch-metric-learning.

Synthetic SOP-like test set (60,502 x 512 float32, 11,316 classes of 2-12 images in 12 super
categories, clustered so the metrics are far from 0 and 1). In one run, each job in its own
process (so that its peak RSS is its own):

- ``pml_knn``: PML's ``AccuracyCalculator`` (faiss-cpu), precision@1 + MAP@R, k="max_bin_count"
- ``ours_knn``: ``evaluate(..., "sop", with_nmi=False)``: Recall@{1,10,100,1000}, MAP@R, R-Precision
- ``pml_nmi``: PML's NMI (faiss k-means, 20 iterations, random init)
- ``ours_nmi``: our NMI (torch k-means, batched k-means++ init) and, with ``--compare-init``,
  the same with a random init
- ``ours_gpu``: every SOP metric, NMI included, on CUDA (only where CUDA is present)

Prints times, ratios (ours / PML), peak RSS and the metric values; checks that our Recall@1
and MAP@R agree with PML's precision@1 and MAP@R; with ``--record`` appends the run to this
repository's ``bench/RESULTS.md`` under ``## Metrics at SOP scale``.

    python bench/metrics_speed.py --quick            # a few seconds: sizes / 50
    python bench/metrics_speed.py --record           # full SOP scale (~20 min on 2 cores)
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


def run_job(job: str, data: Path) -> dict:
    """Run one timed job on the saved data in this process and return its numbers."""
    x = np.load(data / "x.npy")
    y = np.load(data / "y.npy")
    num_classes = int(np.unique(y).size)
    out: dict = {"job": job}
    if job == "pml_knn":
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

        calc = AccuracyCalculator(include=("precision_at_1", "mean_average_precision_at_r"),
                                  k="max_bin_count", device=torch.device("cpu"))
        t = time.perf_counter()
        acc = calc.get_accuracy(torch.from_numpy(x), torch.from_numpy(y))
        out["seconds"] = time.perf_counter() - t
        out["values"] = {"precision@1": acc["precision_at_1"], "map@r": acc["mean_average_precision_at_r"]}
    elif job == "pml_nmi":
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

        calc = AccuracyCalculator(include=("NMI",), device=torch.device("cpu"))
        t = time.perf_counter()
        acc = calc.get_accuracy(torch.from_numpy(x), torch.from_numpy(y))
        out["seconds"] = time.perf_counter() - t
        out["values"] = {"nmi": acc["NMI"]}
    elif job == "ours_knn":
        from heatup_lib.metrics import evaluate

        t = time.perf_counter()
        res = evaluate(x, y, dataset="sop", with_nmi=False)
        out["seconds"] = time.perf_counter() - t
        out["values"] = res
    elif job in ("ours_nmi", "ours_nmi_random"):
        from heatup_lib.kmeans import kmeans
        from heatup_lib.metrics import _as_embeddings, normalized_mutual_info

        init = "random" if job.endswith("random") else "k-means++"
        t = time.perf_counter()  # exactly what metrics.nmi does, keeping the k-means details
        km = kmeans(_as_embeddings(x), num_classes, seed=0, init=init, max_iter=20)
        value = normalized_mutual_info(y, km.labels.numpy())
        out["seconds"] = time.perf_counter() - t
        out["values"] = {"nmi": value, "geometric nmi": normalized_mutual_info(y, km.labels.numpy(), "geometric")}
        out["kmeans"] = {"init": init, "iterations": km.num_iter, "converged": km.converged, "inertia": km.inertia}
    elif job == "ours_gpu":
        from heatup_lib.metrics import evaluate

        xc, yc = torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda()
        evaluate(xc[:4096], yc[:4096], dataset="sop", ks=(1, 10, 100, 1000))  # warm-up (kernels, cuBLAS)
        torch.cuda.synchronize()
        t = time.perf_counter()
        res = evaluate(xc, yc, dataset="sop")
        torch.cuda.synchronize()
        out["seconds"] = time.perf_counter() - t
        out["values"] = res
        out["device"] = torch.cuda.get_device_name()
        out["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
    else:
        raise ValueError(f"unknown job {job!r}")
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
    return f"{model}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, torch threads {torch.get_num_threads()}; " + ", ".join(versions)


def _record(path: Path, text: str) -> None:
    """Append ``text`` to this benchmark's section of RESULTS.md."""
    from _results import record_section

    record_section(path, SECTION, text)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, make the data, run each job in a subprocess, print and record the comparison."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=60502, help="number of test samples (SOP: 60,502)")
    p.add_argument("--classes", type=int, default=11316, help="number of classes (SOP: 11,316)")
    p.add_argument("--dim", type=int, default=512, help="embedding dimension")
    p.add_argument("--sigma", type=float, default=2.0, help="within-class noise level of the synthetic data")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="sizes / 50: a sanity check in seconds")
    p.add_argument("--jobs", default="pml_knn,ours_knn,pml_nmi,ours_nmi,ours_gpu",
                   help="comma-separated jobs (ours_nmi_random: our k-means with a random init)")
    p.add_argument("--compare-init", action="store_true", help="also run ours_nmi_random")
    p.add_argument("--record", action="store_true", help="append the results to bench/RESULTS.md")
    p.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS.md")
    p.add_argument("--note", default="", help="a remark recorded with the results (e.g. machine load)")
    p.add_argument("--job", help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.job:  # worker mode
        print(json.dumps(run_job(args.job, args.data)))
        return 0

    if args.quick:
        args.n, args.classes = args.n // 50, args.classes // 50
    jobs = [j for j in args.jobs.split(",") if j]
    if args.compare_init and "ours_nmi_random" not in jobs:
        jobs.append("ours_nmi_random")
    if not torch.cuda.is_available():
        jobs = [j for j in jobs if j != "ours_gpu"]
    t = time.perf_counter()
    x, y = make_sop_like(args.n, args.classes, args.dim, args.seed, args.sigma)
    print(f"data: {x.shape[0]} x {x.shape[1]}, {np.unique(y).size} classes, sizes "
          f"{np.bincount(y).min()}-{np.bincount(y).max()}, made in {time.perf_counter() - t:.1f} s", flush=True)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="heatup-bench-") as tmp:
        np.save(Path(tmp) / "x.npy", x)
        np.save(Path(tmp) / "y.npy", y)
        del x
        for job in jobs:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--job", job, "--data", tmp]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{job}: FAILED\n{proc.stderr[-3000:]}", flush=True)
                continue
            results[job] = json.loads(proc.stdout.strip().splitlines()[-1])
            r = results[job]
            print(f"{job}: {r['seconds']:.2f} s, peak RSS {r['peak_rss_gib']:.2f} GiB, "
                  + ", ".join(f"{k}={v:.6f}" for k, v in r["values"].items())
                  + (f", k-means {r['kmeans']}" if "kmeans" in r else ""), flush=True)

    lines = []
    ok = True

    def ratio(a: str, b: str) -> str:
        if a in results and b in results:
            return f"{results[a]['seconds'] / results[b]['seconds']:.2f}"
        return "n/a"

    if "ours_knn" in results and "pml_knn" in results:
        ours, pml = results["ours_knn"]["values"], results["pml_knn"]["values"]
        d1 = abs(ours["recall@1"] - pml["precision@1"])
        dm = abs(ours["map@r"] - pml["map@r"])
        agree = d1 <= 1e-6 and dm <= 1e-6
        ok &= agree
        lines.append(f"- Recall@1 vs PML precision@1: |diff| = {d1:.2e}; MAP@R |diff| = {dm:.2e} "
                     f"({'agree' if agree else 'DISAGREE'} to 1e-6)")
        lines.append(f"- neighbour metrics: ours {results['ours_knn']['seconds']:.1f} s "
                     f"(R@1,10,100,1000 + MAP@R + R-Precision) vs PML {results['pml_knn']['seconds']:.1f} s "
                     f"(P@1 + MAP@R): ratio {ratio('ours_knn', 'pml_knn')} (target <= 1)")
    if "ours_nmi" in results and "pml_nmi" in results:
        lines.append(f"- NMI: ours {results['ours_nmi']['seconds']:.1f} s vs PML {results['pml_nmi']['seconds']:.1f} s: "
                     f"ratio {ratio('ours_nmi', 'pml_nmi')} (target <= 1); NMI ours "
                     f"{results['ours_nmi']['values']['nmi']:.4f} (k-means++ batched, "
                     f"{results['ours_nmi']['kmeans']['iterations']} iterations) vs PML "
                     f"{results['pml_nmi']['values']['nmi']:.4f} (faiss, random init, 20 iterations)")
    if "ours_nmi_random" in results:
        r = results["ours_nmi_random"]
        lines.append(f"- NMI with our k-means, random init: {r['values']['nmi']:.4f} in {r['seconds']:.1f} s "
                     f"({r['kmeans']['iterations']} iterations)")
    peak = max((r["peak_rss_gib"] for k, r in results.items() if k.startswith("ours")), default=float("nan"))
    lines.append(f"- peak RSS, ours: {peak:.2f} GiB (target < 4); PML: "
                 + ", ".join(f"{k} {r['peak_rss_gib']:.2f} GiB" for k, r in results.items() if k.startswith("pml")))
    if "ours_gpu" in results:
        r = results["ours_gpu"]
        lines.append(f"- GPU ({r['device']}): all SOP metrics incl. NMI in {r['seconds']:.2f} s (target < 1), "
                     f"peak GPU memory {r['peak_gpu_gib']:.2f} GiB")
    print("\n".join(lines))

    if args.record:
        cmd = "python bench/metrics_speed.py " + shlex.join(argv if argv is not None else sys.argv[1:])
        table = ["| job | seconds | peak RSS GiB | values |", "|---|---|---|---|"]
        for k, r in results.items():
            vals = ", ".join(f"{a}={b:.4f}" if isinstance(b, float) else f"{a}={b}" for a, b in r["values"].items())
            table.append(f"| {k} | {r['seconds']:.1f} | {r['peak_rss_gib']:.2f} | {vals} |")
        text = (f"### {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC\n\n"
                f"- machine: {_machine()}\n- command: `{cmd.strip()}`\n"
                f"- data: synthetic SOP-like, {args.n} x {args.dim}, {args.classes} classes, sigma {args.sigma}, seed {args.seed}\n"
                + (f"- note: {args.note}\n" if args.note else "")
                + "\n".join(lines) + "\n\n" + "\n".join(table) + "\n")
        _record(args.results, text)
        print(f"recorded in {args.results}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
