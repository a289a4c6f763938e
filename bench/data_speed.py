"""Speed of the data pipeline: ``heatup prepare`` (decode + resize) and device-side augmentation.

In one run, on a generated CUB-layout tree of JPEGs with CUB-like sizes (300-500 px a side):

- ``prepare``: images/s of :func:`heatup_lib.data.cache.prepare_dataset` at 256 x 256, decoding
  in this process (``workers=0``) and on every core (``workers=None``); ratio parallel / serial.
- ``augment``: images/s of training batches (random 224 crop + flip + normalise, batch 32) from
  the prepared 256 x 256 uint8 cache: :class:`heatup_lib.data.augment.CachedBatches` (cache held
  on the device, and streamed from the memory map) against a torchvision CPU ``DataLoader``
  (``RandomCrop(224)``, ``RandomHorizontalFlip``, ``ToTensor``, ``Normalize`` on the same uint8
  images, one worker process per core), batches moved to the device in both; ratio ours / torchvision.

Runs on CUDA when present (``--device auto``). With ``--record`` appends the run to
``bench/RESULTS.md`` under ``## Data pipeline``.

    python bench/data_speed.py --images 100 --seconds 1     # a quick look
    python bench/data_speed.py --record                     # the recorded run
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
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
sys.path.insert(0, str(ROOT / "tests"))  # the small trees of the official layouts (tests/trees.py)

SECTION = "## Data pipeline"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(batches_of_epoch, device: torch.device, min_seconds: float, warmup_batches: int = 2) -> tuple[float, int]:
    """Images/s of consuming ``batches_of_epoch(epoch)`` (an iterable) for at least ``min_seconds``."""
    for k, _ in enumerate(batches_of_epoch(0)):
        if k + 1 >= warmup_batches:
            break
    _sync(device)
    images, epoch, start = 0, 1, time.perf_counter()
    while True:
        for X, y in batches_of_epoch(epoch):
            images += X.shape[0]
        _sync(device)
        epoch += 1
        if time.perf_counter() - start >= min_seconds:
            break
    return images / (time.perf_counter() - start), images


def bench_prepare(tree: Path, tmp: Path, workers: int | None) -> float:
    """Images/s of one complete prepare (both splits) of ``tree`` at 256 x 256."""
    from heatup_lib.data.cache import prepare_dataset

    out = tmp / f"cache_{workers}"
    start = time.perf_counter()
    prepare_dataset("cub200", tree, out, size=256, workers=workers, progress=False)
    seconds = time.perf_counter() - start
    n = sum(len(np.load(out / f"{s}_labels.npy")) for s in ("train", "test"))
    return n / seconds


class _TorchvisionPipeline(torch.utils.data.Dataset):
    """The same 256 x 256 uint8 images through torchvision's PIL transforms."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, crop: int) -> None:
        from torchvision import transforms as T

        from heatup_lib.data.augment import IMAGENET_MEAN, IMAGENET_STD

        self.images, self.labels = images, labels
        self.transform = T.Compose(
            [T.RandomCrop(crop), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
        )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(np.asarray(self.images[i]))), int(self.labels[i])


def bench_augment(cache_dir: Path, device: torch.device, batch_size: int, crop: int, seconds: float, loader_workers: int) -> dict[str, float]:
    """Images/s of CachedBatches (resident and streamed) and of a torchvision DataLoader, same data, same device."""
    from heatup_lib.data.augment import CachedBatches
    from heatup_lib.data.cache import ImageCache

    cache = ImageCache.open(cache_dir, "train")
    results = {}
    for label, on_device in (("ours_resident", True), ("ours_streamed", False)):
        src = CachedBatches(cache, batch_size, train=True, device=device, crop=crop, on_device=on_device)
        results[label], _ = _rate(lambda e: src.epoch(e, torch.Generator().manual_seed(e)), device, seconds)
    loader = torch.utils.data.DataLoader(
        _TorchvisionPipeline(cache.images, cache.labels, crop),
        batch_size=batch_size, shuffle=True, drop_last=True, num_workers=loader_workers,
        pin_memory=device.type == "cuda", persistent_workers=loader_workers > 0,
    )

    def tv_epoch(_e: int):
        for X, y in loader:
            yield X.to(device, non_blocking=True), y.to(device, non_blocking=True)

    results["torchvision"], _ = _rate(tv_epoch, device, seconds)
    return results


def _machine(device: torch.device) -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ", no GPU"
    import PIL
    import torchvision

    load = ", load average %.1f" % os.getloadavg()[0] if hasattr(os, "getloadavg") else ""
    return f"{model}, {cores} cores{load}{gpu}; torch {torch.__version__}, torchvision {torchvision.__version__}, Pillow {PIL.__version__}"


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip() or "uncommitted"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _record(path: Path, text: str) -> None:
    """Append ``text`` to this benchmark's section of RESULTS.md."""
    from _results import record_section

    record_section(path, SECTION, text)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, generate the tree, time prepare and augmentation, print (and record) the ratios."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=400, help="images in the generated tree (half train)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--crop", type=int, default=224)
    p.add_argument("--seconds", type=float, default=5.0, help="minimum timed seconds per augmentation pipeline")
    p.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda, cuda:1, ...")
    p.add_argument("--loader-workers", type=int, default=None, help="DataLoader workers (default: every core)")
    p.add_argument("--record", action="store_true", help="append the results to bench/RESULTS.md")
    p.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS.md")
    p.add_argument("--note", default="", help="a remark recorded with the results (e.g. machine load)")
    args = p.parse_args(argv)
    if args.images // 2 < args.batch_size:
        p.error(f"--images must give at least one batch of train images (>= 2 x batch size = {2 * args.batch_size}), got {args.images}")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    loader_workers = cores if args.loader_workers is None else args.loader_workers

    from trees import write_cub_tree

    with tempfile.TemporaryDirectory(prefix="heatup_data_speed_") as tmp_name:
        tmp = Path(tmp_name)
        per_class = max(1, args.images // 20)
        tree = write_cub_tree(tmp / "tree", num_classes=20, images_per_class=per_class, min_size=300, max_size=500)
        n_images = 20 * per_class
        serial = bench_prepare(tree, tmp, workers=0)
        parallel = bench_prepare(tree, tmp, workers=None)
        aug = bench_augment(tmp / "cache_None", device, args.batch_size, args.crop, args.seconds, loader_workers)

    rows = [
        ("prepare, 1 process (decode + resize to 256)", serial, "1.00 (baseline)"),
        (f"prepare, {cores} worker processes", parallel, f"{parallel / serial:.2f} x serial"),
        (f"CachedBatches, cache on {device}", aug["ours_resident"], f"{aug['ours_resident'] / aug['torchvision']:.1f} x torchvision"),
        ("CachedBatches, streamed from memmap", aug["ours_streamed"], f"{aug['ours_streamed'] / aug['torchvision']:.1f} x torchvision"),
        (f"torchvision DataLoader ({loader_workers} workers)", aug["torchvision"], "1.00 (baseline)"),
    ]
    table = "| pipeline | images/s | ratio |\n|---|---:|---|\n" + "".join(f"| {n} | {r:,.0f} | {q} |\n" for n, r, q in rows)
    command = shlex.join(["python", "bench/data_speed.py", *(argv if argv is not None else sys.argv[1:])])
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = (
        f"### {when}, {device.type}\n\n"
        f"- machine: {_machine(device)}\n- command: `{command.strip()}`\n- commit: {_git_commit()}\n"
        f"- data: generated CUB-layout tree, {n_images} JPEGs of 300-500 px; augmentation on its "
        f"{n_images // 2} train images at 256 -> {args.crop} crop, batch {args.batch_size}\n"
        + (f"- note: {args.note}\n" if args.note else "")
        + "\n" + table
    )
    print(text)
    if device.type == "cuda":
        target = 20_000
        verdict = "meets" if aug["ours_resident"] >= target else "misses"
        print(f"GPU input pipeline: {aug['ours_resident']:,.0f} images/s {verdict} the {target:,} images/s target")
    if args.record:
        _record(args.results, text)
        print(f"recorded in {args.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
