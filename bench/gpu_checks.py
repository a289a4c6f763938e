"""Every check that needs a GPU, as one prepared command for a session that is lent one.

GPU time is short (a session gets about 15 minutes in all), so the checks are stages, run in the
order given, each under its own time limit, each writing its log to ``--out``:

- ``tests``: the CUDA-only tests (CUDA vs CPU parity of metrics, k-means, batches, and the
  training speed-ups following the plain trajectory);
- ``standin``: the five table rows (SM, LN, BN, HLN, HBN) on the glyph stand-in (100 + 100
  classes) with the paper's schedule (80 epochs, batch 32, 256 px cache, 224 crop, Inception from
  scratch: no ImageNet weights there); their run records, without checkpoints, are packed into
  ``records.tgz`` for ``records/``;
- ``chapters``: chapter 2's and chapter 5's MNIST runs of the ``paper`` preset (60,000 digits,
  100 epochs, the seeds of ``params/paper.yaml``; chapter 5's grid and heat-up are chapter 2's own
  runs), one after another until the time limit, exported as the records the chapters load
  (``records/mnist/paper/``) into ``chapters.tgz``;
- ``speed``: ``bench/train_speed.py`` at batch 32 (fp32, bf16) and 256 (bf16 + channels-last)
  for the plain path and each speed-up;
- ``data``, ``metrics``, ``mnist``: the GPU paths of the other bench scripts;
- ``full``: a whole 80-epoch HBN run on the CUB-sized generated data (``train_speed.py --full-run``).

Each bench stage appends to ``bench/RESULTS.md`` of the copy, which is copied to ``--out``.

Here, before the call (packs MNIST, 12 MB, for the stand-in and the MNIST bench; ``.gpu/`` is ignored)::

    python bench/gpu_checks.py --pack

On the device, with ``carry: [".gpu"]``, in two calls of under 10 minutes each (estimates: none
of this has run on a GPU yet)::

    HEATUP_GIT_COMMIT=<commit> python3 bench/gpu_checks.py tests standin --out $OUT
    HEATUP_GIT_COMMIT=<commit> python3 bench/gpu_checks.py speed data metrics --out $OUT

    HEATUP_GIT_COMMIT=<commit> python3 bench/gpu_checks.py chapters --chapters-limit 540 --out $OUT

then, here: unpack ``records.tgz`` into ``records/h200-standin/``, ``chapters.tgz`` into the
project root (it holds ``records/mnist/paper/...``; a later call trains the runs still missing),
and copy ``RESULTS.md`` over ``bench/RESULTS.md`` (it is this tree's file with the new sections
appended).

``--smoke`` runs every stage tiny on the CPU, to check the plumbing here before spending GPU time.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the device machine has no installed heatup_lib: use this checkout's
PACK = ROOT / ".gpu"
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
STAGES = ("tests", "standin", "chapters", "speed", "data", "metrics", "mnist", "full")
ROWS = ("sm", "ln", "bn", "hln", "hbn")


def pack() -> int:
    """Gzip MNIST's raw files (from ``data/``, made by ``make data``) into ``.gpu/mnist``."""
    src = ROOT / "data" / "MNIST" / "raw"
    missing = [f for f in MNIST_FILES if not (src / f).is_file()]
    if missing:
        print(f"missing {missing} under {src}: run `make data` first", file=sys.stderr)
        return 2
    (PACK / "mnist").mkdir(parents=True, exist_ok=True)
    for name in MNIST_FILES:
        with open(src / name, "rb") as fin, gzip.open(PACK / "mnist" / f"{name}.gz", "wb", compresslevel=9) as fout:
            shutil.copyfileobj(fin, fout)
    size = sum(f.stat().st_size for f in (PACK / "mnist").iterdir()) / 2**20
    print(f"packed MNIST into {PACK / 'mnist'} ({size:.1f} MiB); carry '.gpu'")
    return 0


def unpack_mnist(work: Path) -> Path:
    """The torchvision MNIST root made from ``.gpu/mnist`` (or ``data/`` when it already has the files)."""
    if all((ROOT / "data" / "MNIST" / "raw" / f).is_file() for f in MNIST_FILES):
        return ROOT / "data"
    raw = work / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in MNIST_FILES:
        packed = PACK / "mnist" / f"{name}.gz"
        if not packed.is_file():
            raise FileNotFoundError(f"{packed} is missing: run `python bench/gpu_checks.py --pack` here and carry .gpu")
        with gzip.open(packed, "rb") as fin, open(raw / name, "wb") as fout:
            shutil.copyfileobj(fin, fout)
    return work / "mnist"


def run(cmd: list[str], log: Path, limit: float) -> int:
    """Run ``cmd`` in the repository root, its output to ``log`` (the end also printed); its exit status, 124 on timeout."""
    print(f"$ {' '.join(cmd)}  (limit {limit:.0f} s, log {log.name})", flush=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    t = time.perf_counter()
    with open(log, "w") as out:
        try:
            rc = subprocess.run(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True, env=env,
                                timeout=limit).returncode
        except subprocess.TimeoutExpired:
            rc = 124
    lines = [line for line in log.read_text().splitlines() if not line.startswith(("W1", "  warnings.warn"))]
    print("\n".join(lines[-25:]))
    print(f"-> rc {rc} in {time.perf_counter() - t:.0f} s", flush=True)
    return rc


def standin(out: Path, work: Path, smoke: bool, compile_mode: str, limit: float) -> int:
    """Train the five rows on the stand-in and pack their records (no checkpoints) into ``out/records.tgz``.

    No new row starts once ``limit`` seconds have passed (the records of the finished rows are kept).
    """
    import torch

    from heatup_lib import benchmark as B
    from heatup_lib.data.standin import STANDIN_NOTE, standin_cache
    from heatup_lib.embedding import SOURCE_FILE

    device = "cpu" if smoke else "cuda"
    overrides = dict(pretrained=False, compile=compile_mode)
    ipc, size = 40, 256
    if smoke:
        overrides.update(num_epochs=2, batch_size=8, image_size=40, crop_size=32, eval_every=1)
        ipc, size = 8, 40
    cache = standin_cache(work / "standin", images_per_class=ipc, image_size=size, seed=0, workers=None)
    runs = work / "standin-runs"
    summary = {}
    start = time.perf_counter()
    for row in ROWS:
        if time.perf_counter() - start > limit:
            print(f"standin: {limit:.0f} s passed, {row} and the rows after it not started", flush=True)
            break
        t = time.perf_counter()
        settings = B.settings_for("cub200", "paper", device=device, **overrides)
        result = B.run_experiment("cub200", row, settings, cache_dir=cache, runs_dir=runs, preset="paper",
                                  standin=STANDIN_NOTE, progress=False)
        summary[row] = {"seconds": round(time.perf_counter() - t, 1), "run": result.run_dir.name,
                        **{k: round(100 * v, 2) for k, v in result.metrics.items() if isinstance(v, float)}}
        print(row, json.dumps(summary[row]), flush=True)
    (out / "standin.json").write_text(json.dumps({"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                                                  "compile": compile_mode, "rows": summary}, indent=1))
    with tarfile.open(out / "records.tgz", "w:gz") as tar:
        for run_dir in sorted(p for p in runs.iterdir() if (p / "metrics.json").is_file()):
            for f in sorted(run_dir.iterdir()):
                if f.name not in ("checkpoint.pt", SOURCE_FILE):
                    tar.add(f, arcname=f"{run_dir.name}/{f.name}")
    return 0 if len(summary) == len(ROWS) else 1


def chapters(out: Path, work: Path, smoke: bool, limit: float) -> int:
    """Train chapter 2's and 5's MNIST runs of the paper preset (smoke: the smoke preset, on the CPU) and pack their records.

    Runs already in ``records/`` are skipped; no new run starts once ``limit`` seconds have passed.
    """
    from heatup_lib import mnist_recipe as R
    from heatup_lib import mnist_runs as M
    from heatup_lib.presets import load_preset
    from heatup_lib.recorded import export_all, find
    from heatup_lib.study import mnist_parameters, study_methods

    p = load_preset("smoke" if smoke else "paper")
    device, root, seeds = ("cpu" if smoke else "cuda"), str(unpack_mnist(work)), list(range(p["mnist_seeds"]))
    ch2 = R.MnistSettings.from_parameters(p)
    ch5 = R.MnistSettings.from_parameters(mnist_parameters(p))
    methods = [m for family in study_methods(p["study_alphas"], p["mnist_heatup_alpha"]).values() for m in family]
    jobs = M.chapter_jobs(ch2, seeds, preset=p["preset"], mnist_root=root, device=device)
    jobs += M.chapter_jobs(ch5, list(range(p["study_seeds"])), preset=p["preset"], mnist_root=root, device=device,
                           names=methods, keep_weights=False)
    runs, start, done = work / "chapter-runs", time.perf_counter(), 0
    recorded = [(ROOT / "records", "committed"), (runs, "local")]
    todo = [j for j in jobs if find(R.job_params(j), recorded, need=("test_features",)) is None]
    print(f"chapters: {len(jobs)} runs, {len(todo)} not yet recorded", flush=True)
    for job in todo:
        if time.perf_counter() - start > limit:
            print(f"chapters: {limit:.0f} s passed, {len(todo) - done} runs not started", flush=True)
            break
        t = time.perf_counter()
        R.run_job(job, runs)
        done += 1
        print(f"{job.name} ({job.settings.num_epochs} epochs): {time.perf_counter() - t:.0f} s", flush=True)
    exported = export_all(runs, work / "export" / "records", "mnist", p["preset"])
    with tarfile.open(out / "chapters.tgz", "w:gz") as tar:
        for path in exported:
            tar.add(path, arcname=str(path.relative_to(work / "export")))
    return 0 if done == len(todo) else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stages", nargs="*", default=["tests", "standin"], help=f"any of {STAGES} (default: tests standin)")
    p.add_argument("--out", default=os.environ.get("OUT", "gpu-out"), help="where logs and results go ($OUT)")
    p.add_argument("--work", default=None, help="scratch folder (default: OUT/../heatup-gpu-work)")
    p.add_argument("--pack", action="store_true", help="pack MNIST into .gpu/ for the call, then stop")
    p.add_argument("--smoke", action="store_true", help="every stage tiny, on the CPU (a rehearsal here)")
    p.add_argument("--standin-compile", default="auto", choices=("auto", "off", "reduce-overhead"),
                   help="compile mode of the stand-in runs; auto: reduce-overhead if the tests stage passed "
                   "in this call (it checks that path against the plain one), else off")
    p.add_argument("--standin-limit", type=float, default=420, help="no new stand-in row after this many seconds")
    p.add_argument("--chapters-limit", type=float, default=480, help="no new chapter run after this many seconds")
    args = p.parse_args()
    if args.pack:
        return pack()
    bad = [s for s in args.stages if s not in STAGES]
    if bad:
        print(f"unknown stage(s) {bad}; stages: {list(STAGES)}", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work).resolve() if args.work else out.parent / "heatup-gpu-work"
    work.mkdir(parents=True, exist_ok=True)
    py, smoke = sys.executable, args.smoke
    dev = "cpu" if smoke else "cuda"
    note = ["--note", "H200 session, all GPU checks in one call (bench/gpu_checks.py)"] if not smoke else []
    speed_small = ["--train", "256", "--test", "64", "--size", "64", "--crop", "56", "--steps", "2", "--warmup", "1",
                   "--speedups", "plain,fused", "--threads", "2"] if smoke else ["--steps", "30", "--warmup", "5"]
    record = [] if smoke else ["--record"]
    status = {}
    for stage in args.stages:
        log = out / f"{stage}.log"
        if stage == "tests":
            rc = run([py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "cuda", "tests/test_metrics.py",
                      "tests/test_kmeans.py", "tests/test_augment.py", "tests/test_train.py"], log, 240)
            rc = 0 if smoke and rc == 5 else rc  # no CUDA test selected on the CPU
        elif stage == "standin":
            mode = args.standin_compile
            if mode == "auto":
                mode = "reduce-overhead" if status.get("tests") == 0 and not smoke else "off"
            rc = standin(out, work, smoke, mode, args.standin_limit)
        elif stage == "chapters":
            rc = chapters(out, work, smoke, args.chapters_limit)
        elif stage == "speed":
            cmd = [py, "bench/train_speed.py", "--device", dev, "--workdir", str(work / "speed"), *speed_small, *record, *note]
            rc = run(cmd + ["--batch-sizes", "32" if not smoke else "16",
                            "--precisions", "fp32,bf16" if not smoke else "fp32"], log, 330)
            if rc == 0 and not smoke:
                rc = run(cmd + ["--batch-sizes", "256", "--precisions", "bf16", "--speedups", "plain,fused,cudagraphs"],
                         out / "speed256.log", 270)
        elif stage == "data":
            rc = run([py, "bench/data_speed.py", "--device", dev, *(["--images", "128", "--seconds", "1", "--batch-size", "8"] if smoke else []),
                      *record, *note], log, 180)
        elif stage == "metrics":
            rc = run([py, "bench/metrics_speed.py", "--jobs", "ours_gpu" if not smoke else "ours_knn",
                      *(["--quick"] if smoke else []), *record, *note], log, 180)
        elif stage == "mnist":
            root = unpack_mnist(work)
            rc = run([py, "bench/mnist_speed.py", "--device", dev, "--mnist-root", str(root),
                      *(["--max-steps", "2", "--repeats", "1"] if smoke else ["--all-settings"]), *record], log, 300)
        else:  # full
            rc = run([py, "bench/train_speed.py", "--device", dev, "--workdir", str(work / "speed"), *speed_small,
                      "--batch-sizes", "32", "--precisions", "bf16" if not smoke else "fp32", "--speedups", "plain",
                      "--fit", "none", "--full-run", "--full-run-args", "--compile reduce-overhead" if not smoke else "--epochs 2",
                      *record, *note], log, 420)
        status[stage] = rc
    if (ROOT / "bench" / "RESULTS.md").is_file():
        shutil.copy(ROOT / "bench" / "RESULTS.md", out / "RESULTS.md")
    (out / "status.json").write_text(json.dumps(status))
    print("stages:", status)
    return 0 if all(rc == 0 for rc in status.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
