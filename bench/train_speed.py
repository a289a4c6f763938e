"""Inception v1 training speed through the real image cache and device-side batches, against a step on synthetic tensors.

On a generated CUB-sized dataset (default 5,864 train / 5,924 test images at 256x256, written as a
CUB-200-2011 tree and decoded by `heatup prepare`'s code), this measures, in one process:

- ``synthetic``: a training step (GoogLeNet + 1x1 bottleneck + normalised-softmax head, cross
  entropy, backward, optimiser step) on one fixed batch already on the device: the model's cost;
- ``pipeline``: the same steps fed by ``CachedBatches`` (random crop + flip on the device): the
  model plus the input pipeline; the pipeline's cost is (pipeline - synthetic) / synthetic;
- ``batches only``: drawing the batches without any step;
- ``fit epoch``: one epoch of ``train.fit`` (schedule, bookkeeping), the path the book uses;

at each batch size and precision (fp32; on CUDA also bf16 autocast + channels-last, the
speed-up ``fit`` uses with ``amp=True, channels_last=True``), and with ``--full-run`` the wall time of
a whole ``heatup train`` HBN run (80 epochs, batch 32, evaluations included).

GPU (one command):  python bench/train_speed.py --device cuda --record
CPU (reduced):      python bench/train_speed.py --device cpu --train 256 --test 64 --size 64 --crop 56 \
                        --batch-sizes 32 --steps 6 --warmup 2 --threads 1 --record
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from heatup_lib.data.augment import CachedBatches  # noqa: E402
from heatup_lib.data.cache import ImageCache, prepare_dataset  # noqa: E402
from heatup_lib.data.fixtures import write_cub_tree  # noqa: E402
from heatup_lib.heads import NormalizedSoftmax  # noqa: E402
from heatup_lib.models import InceptionEmbedder  # noqa: E402
from heatup_lib.schedules import Constant  # noqa: E402
from heatup_lib.train import TrainConfig, fit  # noqa: E402

SECTION = "## Inception training speed"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_cache(workdir: Path, num_train: int, num_test: int, size: int) -> Path:
    """A CUB-layout tree of generated images (100 train + 100 test classes), decoded into a cache at ``size``."""
    per_class = max(1, math.ceil(max(num_train, num_test) / 100))
    tree, cache = workdir / f"tree-{per_class}", workdir / f"cache-{per_class}-{size}"
    if not (cache / "manifest.json").is_file():
        if not (tree / "CUB_200_2011" / "images.txt").is_file():
            write_cub_tree(tree, num_classes=200, images_per_class=per_class, seed=0,
                           min_size=size, max_size=size + size // 4)
        prepare_dataset("cub200", tree, cache, size=size, progress=False)
    return cache


def build(num_classes: int, device: torch.device, channels_last: bool):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = InceptionEmbedder(64, pretrained=False, bottleneck_bias=False).to(device)
    head = NormalizedSoftmax(64, num_classes, alpha=16.0, variant="bn").to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    params = [p for m in (net, head) for p in m.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.004, momentum=0.9)
    return net, head, opt


def step(net, head, opt, X, y, amp: bool, device: torch.device) -> None:
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        logits = head(net(X))
    loss = F.cross_entropy(logits.float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def timed(fn, n: int, warmup: int, device: torch.device) -> float:
    """Seconds per call of ``fn(i)`` over ``n`` calls after ``warmup`` calls."""
    for i in range(warmup):
        fn(i)
    sync(device)
    t = time.perf_counter()
    for i in range(n):
        fn(warmup + i)
    sync(device)
    return (time.perf_counter() - t) / n


def measure(cache: ImageCache, bs: int, crop: int, device: torch.device, amp: bool, channels_last: bool,
            steps: int, warmup: int) -> dict[str, float]:
    """Images/s of the synthetic step, the pipeline-fed step and the batches alone."""
    norm = InceptionEmbedder.input_normalization
    batches = CachedBatches(cache, bs, train=True, device=device, crop=crop, channels_last=channels_last, **norm)
    if len(batches) < steps + warmup:
        raise SystemExit(f"batch size {bs}: the cache has {len(cache)} images, fewer than "
                         f"{steps + warmup} batches; lower --steps/--warmup or raise --train")
    net, head, opt = build(cache.num_classes, device, channels_last)
    X0, y0 = next(iter(batches.epoch(0, torch.Generator().manual_seed(0))))
    X0 = torch.randn_like(X0)  # synthetic tensors, the same shape/dtype/layout/device
    mf = torch.channels_last if channels_last else torch.contiguous_format
    X0 = X0.contiguous(memory_format=mf)
    synthetic = timed(lambda i: step(net, head, opt, X0, y0, amp, device), steps, warmup, device)

    def fed(n: int) -> float:
        it = batches.epoch(1, torch.Generator().manual_seed(1))
        for _ in range(warmup):
            X, y = next(it)
            step(net, head, opt, X.contiguous(memory_format=mf), y, amp, device)
        sync(device)
        t = time.perf_counter()
        for _ in range(n):
            X, y = next(it)
            step(net, head, opt, X.contiguous(memory_format=mf), y, amp, device)
        sync(device)
        return (time.perf_counter() - t) / n

    pipeline = fed(steps)
    it = batches.epoch(2, torch.Generator().manual_seed(2))
    only = timed(lambda i: next(it), steps, warmup, device)
    return {"synthetic": bs / synthetic, "pipeline": bs / pipeline, "batches_only": bs / only,
            "pipeline_cost": pipeline / synthetic - 1.0}


def fit_epoch(cache: ImageCache, bs: int, crop: int, device: torch.device, amp: bool, channels_last: bool,
              max_images: int | None) -> float:
    """Images/s of one ``train.fit`` epoch (no evaluation, no record)."""
    net, head, _ = build(cache.num_classes, device, channels_last)
    norm = InceptionEmbedder.input_normalization
    batches = CachedBatches(cache, bs, train=True, device=device, crop=crop, **norm)
    config = TrainConfig(num_epochs=1, batch_size=bs, optimizer="sgd", lr=0.004, device=str(device), amp=amp,
                         channels_last=channels_last)
    result = fit(net, head, Constant(16.0, 1), batches, config, progress=False)
    return len(batches) * bs / result.history[0]["seconds"]


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__})"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (load average {load:.1f}), "
            f"{torch.get_num_threads()} torch threads, no GPU (torch {torch.__version__})")


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip() or "none"
    except OSError:
        return "none"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--train", type=int, default=5864, help="training images (CUB: 5,864)")
    p.add_argument("--test", type=int, default=5924, help="test images (CUB: 5,924)")
    p.add_argument("--size", type=int, default=256, help="cached image side")
    p.add_argument("--crop", type=int, default=224)
    p.add_argument("--batch-sizes", default="32,256")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--workdir", default=None, help="where the generated tree and cache go (default: a temp dir)")
    p.add_argument("--no-fit", action="store_true", help="skip the train.fit epoch")
    p.add_argument("--full-run", action="store_true",
                   help="also time `heatup train --variant hbn` for 80 epochs at batch 32 with evaluations")
    p.add_argument("--record", action="store_true", help=f"append the results to bench/RESULTS.md under '{SECTION}'")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="heatup-train-speed-"))
    t0 = time.perf_counter()
    cache_dir = make_cache(workdir, args.train, args.test, args.size)
    prep = time.perf_counter() - t0
    cache = ImageCache.open(cache_dir, "train")
    modes = [("fp32", False, False)]
    if device.type == "cuda":
        modes.append(("bf16 + channels-last", True, True))
    rows = []
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        for name, amp, cl in modes:
            r = measure(cache, bs, args.crop, device, amp, cl, args.steps, args.warmup)
            r["fit"] = float("nan") if args.no_fit else fit_epoch(cache, bs, args.crop, device, amp, cl, None)
            rows.append((bs, name, r))
            print(f"batch {bs:4d} {name:22s} synthetic {r['synthetic']:8.1f} img/s  pipeline {r['pipeline']:8.1f} img/s "
                  f"(input cost {100 * r['pipeline_cost']:+.1f}%)  batches only {r['batches_only']:9.1f} img/s  "
                  f"fit epoch {r['fit']:8.1f} img/s", flush=True)
    full = None
    if args.full_run:
        t = time.perf_counter()
        cmd = [sys.executable, "-m", "heatup_lib.cli", "train", "--dataset", "cub200", "--variant", "hbn",
               "--data", str(cache_dir), "--preset", "paper", "--no-pretrained", "--device", str(device),
               "--runs-dir", str(workdir / "runs"), "--no-progress", "--image-size", str(args.size),
               "--crop-size", str(args.crop)]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        full = time.perf_counter() - t
        print(proc.stdout[-2000:], proc.stderr[-2000:])
        print(f"full HBN run (80 epochs, batch 32, evaluations every 10 epochs): {full:.0f} s, rc {proc.returncode}")
    if args.record:
        command = "python bench/train_speed.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        lines = [f"\n### {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, {machine(device)}, commit {git_commit()}",
                 f"Command: `{command}`  ",
                 f"Data: generated CUB-layout tree, {len(cache)} train images cached at {args.size}px "
                 f"(decode + cache {prep:.0f} s), crop {args.crop}; {args.steps} timed steps after {args.warmup} warm-up.",
                 "", "| batch | precision | synthetic step (img/s) | through the pipeline (img/s) | input pipeline cost | "
                 "batches alone (img/s) | fit epoch (img/s) |", "|---:|---|---:|---:|---:|---:|---:|"]
        for bs, name, r in rows:
            lines.append(f"| {bs} | {name} | {r['synthetic']:.1f} | {r['pipeline']:.1f} | {100 * r['pipeline_cost']:+.1f}% | "
                         f"{r['batches_only']:.1f} | {r['fit']:.1f} |")
        if len(modes) > 1:
            for bs in sorted({b for b, _, _ in rows}):
                base = next(r for b, n, r in rows if b == bs and n == "fp32")
                fast = next(r for b, n, r in rows if b == bs and n != "fp32")
                lines.append(f"\nBatch {bs}: bf16 + channels-last vs fp32 (same run): "
                             f"{fast['pipeline'] / base['pipeline']:.2f}x through the pipeline.")
        if full is not None:
            lines.append(f"\nFull HBN run, 80 epochs at batch 32 with evaluations, end to end: {full:.0f} s.")
        text = "\n".join(lines) + "\n"
        results = ROOT / "bench" / "RESULTS.md"
        existing = results.read_text() if results.is_file() else "# Benchmark results\n"
        if SECTION not in existing:
            existing = existing.rstrip("\n") + f"\n\n{SECTION}\n\nWritten by `bench/train_speed.py` (see its docstring).\n"
            results.write_text(existing)
        # append inside our section: after its last line, before the next "## " heading
        head, _, tail = existing.partition(SECTION)
        nxt = tail.find("\n## ")
        body, rest = (tail, "") if nxt < 0 else (tail[:nxt], tail[nxt:])
        results.write_text(head + SECTION + body.rstrip("\n") + "\n" + text + rest)
        print(f"recorded in {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
