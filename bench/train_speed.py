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
speed-up ``fit`` uses with ``amp=True, channels_last=True``) and for each speed-up of ``--speedups``,
each added on top of the previous ones and measured in the same run against ``plain`` (the
library's own step, ``step.train_step`` on ``step.training_model``, with the options of
:class:`heatup_lib.train.TrainConfig`):

- ``plain``: eager PyTorch, the path to read and debug;
- ``fused``: the optimiser's fused kernel (``fused=True``);
- ``cudnn``: cuDNN times its convolution algorithms once per shape (``cudnn_benchmark=True``; CUDA only);
- ``compile``: ``torch.compile`` of the network (``compile="default"``);
- ``cudagraphs``: ``compile="reduce-overhead"``, which also replays the compiled forward and
  backward as CUDA graphs (CUDA only).

With ``--full-run`` it times a whole ``heatup train`` HBN run (80 epochs, batch 32, evaluations
included; ``--full-run-args`` adds flags such as ``--compile reduce-overhead``).

GPU (one command):  python bench/train_speed.py --device cuda --record
CPU (reduced):      python bench/train_speed.py --device cpu --train 256 --test 64 --size 64 --crop 56 \
                        --batch-sizes 32 --steps 6 --warmup 2 --threads 1 --speedups plain,fused --record
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the small trees of the official layouts (tests/trees.py)

from heatup_lib.data.augment import CachedBatches  # noqa: E402
from heatup_lib.data.cache import ImageCache, prepare_dataset  # noqa: E402
from trees import write_cub_tree  # noqa: E402
from heatup_lib.heads import NormalizedSoftmax  # noqa: E402
from heatup_lib.models import InceptionEmbedder  # noqa: E402
from heatup_lib.schedules import Constant  # noqa: E402
from heatup_lib.step import make_optimizer, train_step, training_model  # noqa: E402
from heatup_lib.train import TrainConfig, fit  # noqa: E402

# Each speed-up adds to the ones before it: the TrainConfig fields it sets.
SPEEDUPS: dict[str, dict[str, object]] = {
    "plain": {},
    "fused": {"fused": True},
    "cudnn": {"fused": True, "cudnn_benchmark": True},
    "compile": {"fused": True, "cudnn_benchmark": True, "compile": "default"},
    "cudagraphs": {"fused": True, "cudnn_benchmark": True, "compile": "reduce-overhead"},
}

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


def config_for(device: torch.device, amp: bool, channels_last: bool, speedup: str) -> TrainConfig:
    """The TrainConfig of a measurement: the paper's CUB optimiser plus the speed-up's options."""
    return TrainConfig(optimizer="sgd", lr=0.004, device=str(device), amp=amp, channels_last=channels_last,
                       **SPEEDUPS[speedup])


def net_and_head(num_classes: int) -> tuple[InceptionEmbedder, NormalizedSoftmax]:
    """GoogLeNet from scratch (seed 0) with a 64-d bottleneck, and a BN head at alpha 16."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        net = InceptionEmbedder(64, pretrained=False, bottleneck_bias=False)
    return net, NormalizedSoftmax(64, num_classes, alpha=16.0, variant="bn")


def build(num_classes: int, device: torch.device, config: TrainConfig):
    """GoogLeNet + BN head, the training module (compiled per config) and the optimiser, as ``fit`` builds them."""
    net, head = (m.to(device) for m in net_and_head(num_classes))
    if config.channels_last:
        net = net.to(memory_format=torch.channels_last)
    params = [p for m in (net, head) for p in m.parameters() if p.requires_grad]
    return training_model(net, head, config, device), make_optimizer(params, config)


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


def measure(cache: ImageCache, config: TrainConfig, bs: int, crop: int, device: torch.device, steps: int,
            warmup: int) -> dict[str, float]:
    """Images/s of the synthetic step, the pipeline-fed step and the batches alone, and the first (compiling) steps' seconds."""
    mf = torch.channels_last if config.channels_last else torch.contiguous_format
    norm = InceptionEmbedder.input_normalization
    batches = CachedBatches(cache, bs, train=True, device=device, crop=crop, channels_last=config.channels_last, **norm)
    if len(batches) < steps + warmup:
        raise SystemExit(f"batch size {bs}: the cache has {len(cache)} images, fewer than "
                         f"{steps + warmup} batches; lower --steps/--warmup or raise --train")
    model, opt = build(cache.num_classes, device, config)
    torch.backends.cudnn.benchmark = config.cudnn_benchmark  # as fit sets it for its run
    X0, y0 = next(iter(batches.epoch(0, torch.Generator().manual_seed(0))))
    X0 = torch.randn_like(X0).contiguous(memory_format=mf)  # synthetic tensors, same shape/dtype/layout/device
    t = time.perf_counter()
    for _ in range(3):  # compilation and graph capture happen here
        train_step(model, opt, X0, y0, amp=config.amp)
    sync(device)
    first = time.perf_counter() - t
    synthetic = timed(lambda i: train_step(model, opt, X0, y0, amp=config.amp), steps, warmup, device)

    def fed(n: int) -> float:
        it = batches.epoch(1, torch.Generator().manual_seed(1))
        for _ in range(warmup):
            X, y = next(it)
            train_step(model, opt, X.contiguous(memory_format=mf), y, amp=config.amp)
        sync(device)
        t = time.perf_counter()
        for _ in range(n):
            X, y = next(it)
            train_step(model, opt, X.contiguous(memory_format=mf), y, amp=config.amp)
        sync(device)
        return (time.perf_counter() - t) / n

    pipeline = fed(steps)
    it = batches.epoch(2, torch.Generator().manual_seed(2))
    only = timed(lambda i: next(it), steps, warmup, device)
    return {"synthetic": bs / synthetic, "pipeline": bs / pipeline, "batches_only": bs / only,
            "pipeline_cost": pipeline / synthetic - 1.0, "first_steps_s": first}


def fit_epoch(cache: ImageCache, config: TrainConfig, bs: int, crop: int, device: torch.device) -> float:
    """Images/s of one ``train.fit`` epoch (no evaluation, no record; compilation included)."""
    net, head = net_and_head(cache.num_classes)
    norm = InceptionEmbedder.input_normalization
    batches = CachedBatches(cache, bs, train=True, device=device, crop=crop, **norm)
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
    p.add_argument("--precisions", default=None,
                   help="fp32 and/or bf16 (bf16 autocast + channels-last, CUDA only); default: fp32, plus bf16 on CUDA")
    p.add_argument("--speedups", default=None,
                   help=f"comma list of {list(SPEEDUPS)}, each on top of the previous (default: plain,fused,cudnn,cudagraphs on CUDA, "
                   "plain,fused,compile on CPU)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--workdir", default=None, help="where the generated tree and cache go (default: a temp dir)")
    p.add_argument("--fit", default="plain,last", help="speed-ups also timed through one train.fit epoch "
                   "('last': the last of --speedups; 'none': skip)")
    p.add_argument("--full-run", action="store_true",
                   help="also time `heatup train --row hbn` for 80 epochs at batch 32 with evaluations")
    p.add_argument("--full-run-args", default="", help="extra `heatup train` flags for --full-run, e.g. "
                   "'--compile reduce-overhead'")
    p.add_argument("--note", default="", help="a remark recorded with the results")
    p.add_argument("--record", action="store_true", help=f"append the results to bench/RESULTS.md under '{SECTION}'")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    on_cuda = device.type == "cuda"
    default = ("plain", "fused", "cudnn", "cudagraphs") if on_cuda else ("plain", "fused", "compile")
    speedups = (args.speedups or ",".join(default)).split(",")
    precisions = (args.precisions or ("fp32,bf16" if on_cuda else "fp32")).split(",")
    bad = [k for k in speedups if k not in SPEEDUPS] + [k for k in precisions if k not in ("fp32", "bf16")]
    if bad:
        raise SystemExit(f"unknown speed-up or precision {bad}; speed-ups: {list(SPEEDUPS)}, precisions: fp32, bf16")
    fit_for = {s for s in args.fit.split(",") if s in SPEEDUPS} | ({speedups[-1]} if "last" in args.fit else set())
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="heatup-train-speed-"))
    t0 = time.perf_counter()
    cache_dir = make_cache(workdir, args.train, args.test, args.size)
    prep = time.perf_counter() - t0
    cache = ImageCache.open(cache_dir, "train")
    rows = []
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        for precision in precisions:
            low = precision == "bf16"
            for speedup in speedups:
                config = config_for(device, low, low, speedup)
                r = measure(cache, config, bs, args.crop, device, args.steps, args.warmup)
                r["fit"] = fit_epoch(cache, config, bs, args.crop, device) if speedup in fit_for else float("nan")
                rows.append((bs, precision, speedup, r))
                print(f"batch {bs:4d} {precision:4s} {speedup:10s} synthetic {r['synthetic']:8.1f} img/s  "
                      f"pipeline {r['pipeline']:8.1f} img/s (input cost {100 * r['pipeline_cost']:+.1f}%)  "
                      f"batches only {r['batches_only']:9.1f} img/s  fit epoch {r['fit']:8.1f} img/s  "
                      f"first 3 steps {r['first_steps_s']:.1f} s", flush=True)
    full = None
    if args.full_run:
        t = time.perf_counter()
        cmd = [sys.executable, "-m", "heatup_lib.cli", "train", "--dataset", "cub200", "--row", "hbn",
               "--data", str(cache_dir), "--preset", "paper", "--no-pretrained", "--device", str(device),
               "--runs-dir", str(workdir / "runs"), "--no-progress", "--image-size", str(args.size),
               "--crop-size", str(args.crop), *shlex.split(args.full_run_args)]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        full = time.perf_counter() - t
        print(proc.stdout[-2000:], proc.stderr[-2000:])
        print(f"full HBN run (80 epochs, batch 32, evaluations every 10 epochs): {full:.0f} s, rc {proc.returncode}")
        if proc.returncode != 0:
            full = None
    if args.record:
        from _results import record_section

        command = "python bench/train_speed.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        lines = [f"### {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, {machine(device)}, commit {git_commit()}",
                 "", f"- command: `{command}`",
                 f"- data: generated CUB-layout tree, {len(cache)} train images cached at {args.size}px "
                 f"(decode + cache {prep:.0f} s), crop {args.crop}; {args.steps} timed steps after {args.warmup} warm-up"]
        if args.note:
            lines.append(f"- note: {args.note}")
        lines += ["", "| batch | precision | speed-up | synthetic step (img/s) | vs plain | through the pipeline (img/s) "
                  "| input pipeline cost | batches alone (img/s) | fit epoch (img/s) | first 3 steps (s) |",
                  "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for bs, precision, speedup, r in rows:
            base = next((q for b, pr, sp, q in rows if (b, pr, sp) == (bs, precision, "plain")), None)
            ratio = f"{r['synthetic'] / base['synthetic']:.2f}x" if base else "n/a"
            lines.append(f"| {bs} | {precision} | {speedup} | {r['synthetic']:.1f} | {ratio} | {r['pipeline']:.1f} | "
                         f"{100 * r['pipeline_cost']:+.1f}% | {r['batches_only']:.1f} | {r['fit']:.1f} | "
                         f"{r['first_steps_s']:.1f} |")
        if full is not None:
            lines.append(f"\nFull HBN run, 80 epochs at batch 32 with evaluations, end to end "
                         f"(`heatup train ... {args.full_run_args}`): {full:.0f} s.")
        results = ROOT / "bench" / "RESULTS.md"
        record_section(results, SECTION, "\n".join(lines) + "\n")
        print(f"recorded in {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
