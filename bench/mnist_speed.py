"""Time LeNet training on MNIST (the paper's setting: 60k images, batch 128, Adam 1e-3) through ``train.fit``.

Baseline, measured in the same run: a plain PyTorch loop (same model, head, batches and
optimiser; no schedule, bookkeeping, progress bar or records). Printed: seconds per epoch for
both and their ratio (fit / plain).

On CPU one setting (LN, alpha 16) is timed; ``--max-steps`` times only the first steps of the
epoch and extrapolates to the whole epoch (the output says so). On CUDA the paper preset's five
settings (alpha 0.25, 4, 16, 64 and 16 with heat-up) are each timed for one epoch, data kept on
the GPU; the issue's target is 0.35 s per setting-epoch (five settings x 100 epochs in 3 minutes).

    python bench/mnist_speed.py                   # full epoch, CPU or CUDA, whatever is there
    python bench/mnist_speed.py --max-steps 40    # quick CPU estimate
    python bench/mnist_speed.py --record          # also append the result to bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import os
import datetime as dt
import socket
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from heatup_lib import records  # noqa: E402
from heatup_lib.atomic import atomic_write_text  # noqa: E402
from heatup_lib.data.batches import TensorBatches  # noqa: E402
from heatup_lib.mnist_recipe import build_lenet  # noqa: E402
from heatup_lib.schedules import Constant, StepHeatUp  # noqa: E402
from heatup_lib.seeding import epoch_generator  # noqa: E402
from heatup_lib.train import TrainConfig, fit  # noqa: E402

SECTION = "## LeNet / MNIST training speed"
# The paper's MNIST settings (SPEC section 4): name -> (alpha, heat-up)
SETTINGS = {"alpha=0.25": (0.25, False), "alpha=4": (4.0, False), "alpha=16": (16.0, False),
            "alpha=64": (64.0, False), "alpha=16 heat-up": (16.0, True)}


class _Prefix:
    """The first ``max_steps`` batches of a batch source (for a quick estimate)."""

    def __init__(self, source: TensorBatches, max_steps: int) -> None:
        self.source, self.max_steps = source, min(max_steps, len(source))
        self.batch_size = source.batch_size

    def __len__(self) -> int:
        return self.max_steps

    def epoch(self, epoch, generator):
        for step, batch in enumerate(self.source.epoch(epoch, generator)):
            if step == self.max_steps:
                return
            yield batch

    def describe(self) -> dict:
        return {**self.source.describe(), "max_steps": self.max_steps}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _build(alpha: float, seed: int, device: torch.device):
    return build_lenet(10, alpha, seed, device)  # chapter 2's recipe


def plain_epoch(data, alpha: float, seed: int, device: torch.device) -> tuple[float, float]:
    """(wall, process CPU) seconds for one epoch of the plainest loop over the same batches."""
    net, head = _build(alpha, seed, device)
    opt = torch.optim.Adam(list(net.parameters()) + list(head.parameters()), lr=1e-3)
    _sync(device)
    start, cpu = time.perf_counter(), time.process_time()
    for X, y in data.epoch(0, epoch_generator(seed, 0)):
        loss = F.cross_entropy(head(net(X)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    return time.perf_counter() - start, time.process_time() - cpu


def fit_epoch(data, alpha: float, heat_up: bool, seed: int, device: torch.device) -> tuple[float, float]:
    """(wall, process CPU) seconds for one epoch through ``train.fit`` (for heat-up: the heated epoch of two)."""
    net, head = _build(alpha, seed, device)
    schedule = StepHeatUp(alpha, 2, heatup_epoch=1) if heat_up else Constant(alpha, 1)
    config = TrainConfig(lr=1e-3, seed=seed, device=str(device))
    marks = []  # (wall, cpu) at the start and after each epoch

    def mark(*args) -> None:
        _sync(device)
        marks.append((time.perf_counter(), time.process_time()))

    class Marked:  # the batch source, marking the start of the timed (last) epoch
        batch_size = data.batch_size

        def __len__(self):
            return len(data)

        def epoch(self, epoch, generator):
            if epoch == schedule.num_epochs - 1:
                mark()
            return data.epoch(epoch, generator)

    fit(net, head, schedule, Marked(), config, progress=False, callbacks=[mark])
    (w0, c0), (w1, c1) = marks[-2], marks[-1]
    return w1 - w0, c1 - c0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print (and with --record append) the result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--max-steps", type=int, default=None, help="time only the first steps and extrapolate")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--mnist-root", default=None, help="torchvision MNIST root (default: offline copy)")
    parser.add_argument("--all-settings", action="store_true", help="time all five settings (default on CUDA)")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repetitions (best is reported)")
    parser.add_argument("--record", action="store_true", help="append the result to bench/RESULTS.md")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    try:
        from heatup_lib.data.mnist import load_mnist
        images, labels = load_mnist(args.mnist_root, split="train")
        source = "MNIST train (60,000)"
    except (FileNotFoundError, ImportError) as exc:  # keep the benchmark usable without the data
        print(f"MNIST not available ({exc}); timing random tensors of the same shape")
        images, labels = torch.randint(0, 256, (60_000, 28, 28), dtype=torch.uint8), torch.randint(0, 10, (60_000,))
        source = "random tensors (60,000 x 28 x 28)"
    X = (images.unsqueeze(1).float() / 255.0).to(device)  # (N, 1, 28, 28)
    y = labels.to(device)
    full = TensorBatches(X, y, 128)
    data = full if args.max_steps is None else _Prefix(full, args.max_steps)
    scale = len(full) / len(data)

    all_settings = args.all_settings or device.type == "cuda"
    settings = SETTINGS if all_settings else {"alpha=16": SETTINGS["alpha=16"]}
    plain_epoch(_Prefix(full, 5), 16.0, 0, device)  # warm-up
    # interleaved repeats, best of each: the machine may be shared
    plain_runs, fit_runs = [], {name: [] for name in settings}
    for _ in range(args.repeats):
        plain_runs.append(plain_epoch(data, 16.0, 0, device))
        for name, (alpha, heat_up) in settings.items():
            fit_runs[name].append(fit_epoch(data, alpha, heat_up, 0, device))
    plain, plain_cpu = (min(t[i] for t in plain_runs) * scale for i in (0, 1))
    rows = [(name, min(t[0] for t in runs) * scale, min(t[1] for t in runs) * scale) for name, runs in fit_runs.items()]
    what = "full epoch" if scale == 1 else f"first {len(data)} of {len(full)} steps, extrapolated to the epoch"
    device_name = records.environment_info(device)["device_name"]
    lines = [
        f"- {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, host `{socket.gethostname()}`, {device_name} "
        f"({device}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
        f"at the end), torch {torch.__version__}, commit {records.git_commit() or 'none'}",
        f"  - command: `python bench/mnist_speed.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
        f"  - data: {source}; batch 128, Adam 1e-3, LeNet(2) + LN head; {what}",
        f"  - best of {args.repeats} interleaved runs; wall-clock (process CPU time in brackets)",
        f"  - plain PyTorch loop (baseline): {plain:.2f} s/epoch ({plain_cpu:.1f} s CPU)",
    ]
    for name, seconds, cpu in rows:
        lines.append(f"  - `train.fit`, {name}: {seconds:.2f} s/epoch ({cpu:.1f} s CPU); "
                     f"fit / plain = {seconds / plain:.2f} wall, {cpu / plain_cpu:.2f} CPU")
    if all_settings:
        total = sum(s for _, s, _ in rows)
        lines.append(f"  - five settings x 100 epochs, sequential fit: {total * 100 / 60:.1f} min "
                     f"(target 3 min, {total / len(rows):.2f} s per setting-epoch)")
    text = "\n".join(lines)
    print(text)
    if args.record:
        _append(ROOT / "bench" / "RESULTS.md", text)
    return 0


def _append(path: Path, entry: str) -> None:
    """Add ``entry`` at the end of this benchmark's section (creating the file or section if needed)."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if SECTION not in text:
        text = text.rstrip("\n") + f"\n\n{SECTION}\n`bench/mnist_speed.py`: one epoch of LeNet on MNIST " \
               "(batch 128, Adam 1e-3) through `train.fit`, against a plain loop in the same run.\n"
    start = text.index(SECTION) + len(SECTION)
    nxt = text.find("\n## ", start)
    end = len(text) if nxt == -1 else nxt
    text = text[:end].rstrip("\n") + "\n" + entry + "\n" + text[end:]
    atomic_write_text(path, text)


if __name__ == "__main__":
    sys.exit(main())
