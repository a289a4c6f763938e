"""The glyph stand-in and the small CPU backbone: how the classes were chosen and how the table rows train on them.

Subcommands (run from the repository root; one torch thread unless ``--threads``):

- ``select``: rebuild :data:`heatup_lib.data.G.GLYPHS` -- measure
  :func:`~heatup_lib.data.G.glyph_similarity` over a pool of ~400 characters drawn by at
  least 8 fonts, keep characters greedily (pool order) below the threshold, take the first 200,
  shuffle them with ``numpy.random.default_rng(0)``; print the known-ambiguous pairs' scores and
  the closest kept pairs.
- ``preview``: a PNG grid of rendered stand-in images and the time to write a tree.
- ``speed``: training steps per second of the small backbone at several widths and crop sizes.
- ``train``: build the stand-in's cache once (``standin.standin_cache``) and train table rows
  (SM, LN, BN, HLN, HBN) through ``benchmark.settings_for(..., backbone="small")`` and
  ``benchmark.run_experiment`` (cache -> ``CachedBatches`` -> ``SmallConvEmbedder`` ->
  ``NormalizedSoftmax`` -> ``train.fit``; heated rows: ``StepHeatUp`` at 3/4 of the epochs,
  alpha 16 -> 4, lr x 0.1), then the test split's Recall@K, NMI, MAP@R; one JSON line per run
  with chance, the untrained network's Recall@1 (``--untrained``) and seconds.

The recommended recipe (the numbers in the report of issue 13):
  python bench/standin_study.py train --rows sm,ln,bn,hln,hbn --seeds 0 --epochs 8 \
      --eval-every 2 --untrained          # and --seeds 1 in a second process

"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from heatup_lib.data import glyphs as G  # noqa: E402
from heatup_lib.data import standin  # noqa: E402


# ------------------------------------------------------------------------------------- select
def _cps(lo: int, hi: int, skip: tuple[int, ...] = ()) -> str:
    return "".join(chr(c) for c in range(lo, hi) if c not in skip)


# The candidate pool, in order of preference (the greedy selection keeps the first of a look-alike group).
POOL_GROUPS: list[tuple[str, str]] = [
    ("latin", _cps(0x41, 0x5B) + _cps(0x30, 0x3A) + _cps(0x61, 0x7B)),
    ("greek", _cps(0x391, 0x3AA, (0x3A2,)) + _cps(0x3B1, 0x3CA)),
    ("cyrillic", _cps(0x410, 0x450)),
    ("armenian", _cps(0x531, 0x557) + _cps(0x561, 0x587)),
    ("georgian", _cps(0x10D0, 0x10F1)),
    ("latin-extra", "ßæœøþðłħŋĳÆŒØÞÐŁĦŊ"),
    ("punctuation", "#$%&@?!*+=<([{/\\|~^§¶©®°±×÷¢£¥€¿¡"),
    ("math", "∀∂∃∄∅∇∈∉∋∏∐∑−√∛∜∝∞∟∠∡∧∨∩∪∫∬∮∴∵≈≠≡≤≥≪⊂⊃⊆⊕⊖⊗⊘⊙⊥⊢⊤⋆⋈⌀⌂"),
    ("arrows", "←↑→↓↔↕↖↗↩↺⇐⇑⇒⇔⇕"),
    ("symbols", "★☆♠♣♥♦♤♧♡♢♪♫☺☻☼☀☁☂☎☐☑☒✓✗❤☯⚓⚑☢☣☮♔♕♖♗♘♙☿♀♂♃♄♅♆⚀⚁⚂⚃⚄⚅"),
    ("ipa", _cps(0x250, 0x2A9)),
]
MIN_FONTS = 8
# Pairs known to be one visual class under scale + position + mirror augmentation, and some that are not.
KNOWN_AMBIGUOUS = ["AΑ", "AА", "oο", "Oo", "Cc", "Ss", "Vv", "Ww", "Xx", "Zz", "Pp", "Uu", "Jj", "O0",
                   "Il", "l1", "I1", "bd", "pq", "ЯR", "ИN", "иu", "тm"]
KNOWN_DISTINCT = ["Kk", "Hh", "Nn", "Tt", "Bb", "Mm", "Aa", "Yy", "au", "EF", "B8", "S5", "9g"]


def cmd_select(args: argparse.Namespace) -> None:
    """Rebuild GLYPHS by measurement and print the evidence."""
    t0 = time.perf_counter()
    pool, group = [], []
    for name, chars in POOL_GROUPS:
        for c in chars:
            if c not in pool and len(G.glyph_fonts(c)) >= MIN_FONTS:
                pool.append(c)
                group.append(name)
    for pair in KNOWN_AMBIGUOUS + KNOWN_DISTINCT:
        for c in pair:
            if c not in pool:
                pool.append(c)
                group.append("reference")
    sim = G.glyph_similarity(pool)
    idx = {c: i for i, c in enumerate(pool)}
    print(f"pool: {sum(g != 'reference' for g in group)} characters with >= {MIN_FONTS} fonts; "
          f"similarity measured in {time.perf_counter() - t0:.1f} s")
    for title, pairs in (("known one-class pairs", KNOWN_AMBIGUOUS), ("distinct pairs", KNOWN_DISTINCT)):
        print(f"{title}: " + " ".join(f"{p}:{sim[idx[p[0]], idx[p[1]]]:.3f}" for p in pairs))
    kept: list[int] = []
    for i, g in enumerate(group):
        if g != "reference" and all(sim[i, j] < args.threshold for j in kept):
            kept.append(i)
    print(f"kept below {args.threshold}: {len(kept)}")
    kept = kept[: args.num_classes]
    counts: dict[str, int] = {}
    for i in kept:
        counts[group[i]] = counts.get(group[i], 0) + 1
    print("by group:", counts)
    sub = sim[np.ix_(kept, kept)].copy()
    np.fill_diagonal(sub, -1)
    iu = np.triu_indices(len(kept), 1)
    order = np.argsort(-sub[iu])[:20]
    print("closest kept pairs:", " ".join(
        f"{pool[kept[iu[0][k]]]}{pool[kept[iu[1][k]]]}:{sub[iu][k]:.3f}" for k in order))
    chars = [pool[i] for i in kept]
    perm = np.random.default_rng(0).permutation(len(chars))
    glyphs = "".join(chars[i] for i in perm)
    print("GLYPHS =", json.dumps(glyphs, ensure_ascii=False))
    print("matches the library's GLYPHS:", glyphs == G.GLYPHS)


# ------------------------------------------------------------------------------------ preview
def cmd_preview(args: argparse.Namespace) -> None:
    """Time writing a tree and save a grid of its images (one row per class)."""
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        standin.write_glyph_tree(tmp, num_classes=args.num_classes, images_per_class=args.images_per_class,
                                 size=args.size, seed=args.seed, distortion=args.distortion,
                                 clutter=args.clutter)
        seconds = time.perf_counter() - t0
        n = args.num_classes * args.images_per_class
        print(f"wrote {n} images of {args.size} px in {seconds:.1f} s ({n / seconds:.0f} images/s)")
        base = Path(tmp) / "CUB_200_2011"
        lines = (base / "images.txt").read_text().split("\n")
        rows = []
        classes = G.glyph_classes(args.num_classes)
        for cls in classes[:: max(1, len(classes) // args.rows)][: args.rows]:
            paths = [base / "images" / ln.split()[1] for ln in lines if ln and ln.split()[1].startswith(cls.folder + "/")]
            rows.append(np.concatenate([np.asarray(Image.open(p).convert("RGB")) for p in paths[: args.cols]], 1))
        Image.fromarray(np.concatenate(rows, 0)).resize(
            (rows[0].shape[1] * args.zoom, len(rows) * rows[0].shape[0] * args.zoom), Image.NEAREST).save(args.out)
        print("grid:", args.out)


# -------------------------------------------------------------------------------------- speed
def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v)


def cmd_speed(args: argparse.Namespace) -> None:
    """Training steps per second of SmallConvEmbedder + LN head on fixed random batches."""
    import torch
    import torch.nn.functional as F

    from heatup_lib.heads import NormalizedSoftmax
    from heatup_lib.models import SmallConvEmbedder

    torch.set_num_threads(args.threads)
    for widths in args.widths.split(";"):
        for crop in _ints(args.crops):
            for batch in _ints(args.batch_sizes):
                torch.manual_seed(0)
                net = SmallConvEmbedder(64, _ints(widths), convs_per_stage=args.convs)
                head = NormalizedSoftmax(64, 100)
                opt = torch.optim.Adam(list(net.parameters()) + list(head.parameters()), lr=1e-3)
                X, y = torch.randn(batch, 3, crop, crop), torch.randint(0, 100, (batch,))
                times = []
                for step in range(args.warmup + args.steps):
                    t0 = time.perf_counter()
                    loss = F.cross_entropy(head(net(X)), y)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    if step >= args.warmup:
                        times.append(time.perf_counter() - t0)
                sec = float(np.median(times))
                params = sum(p.numel() for p in net.parameters())
                print(f"widths {widths:>12} convs {args.convs} crop {crop:3d} batch {batch:4d}: "
                      f"{batch / sec:7.0f} train images/s ({params / 1e3:.0f} k parameters)", flush=True)
    print("load average:", os.getloadavg())


# -------------------------------------------------------------------------------------- train
ROWS = ("sm", "ln", "bn", "hln", "hbn")


def chance_recall_at_1(labels: np.ndarray) -> float:
    """Expected Recall@1 of a random embedding: sum_c n_c/N * (n_c - 1)/(N - 1)."""
    _, counts = np.unique(labels, return_counts=True)
    n = counts.sum()
    return float((counts / n * (counts - 1) / (n - 1)).sum())


def prepare_standin(workdir: Path, num_classes: int, images_per_class: int, size: int, seed: int,
                    distortion: float = 0.0, clutter: int = 0) -> tuple[Path, float]:
    """The stand-in's cache under ``workdir`` (standin.standin_cache: built once) and the seconds it took."""
    t0 = time.perf_counter()
    cache = standin.standin_cache(workdir, images_per_class, size, seed, num_classes=num_classes,
                                  distortion=distortion, clutter=clutter)
    return cache, time.perf_counter() - t0


def train_row(cache_path: Path, row: str, seed: int, args: argparse.Namespace) -> dict:
    """Train one table row on the prepared cache through benchmark.run_experiment; a JSON-able record."""
    import torch

    from heatup_lib import benchmark as B
    from heatup_lib import metrics
    from heatup_lib.data.cache import ImageCache
    from heatup_lib.embedding import embed_split
    from heatup_lib.heads import TABLE_ROWS, NormalizedSoftmax
    from heatup_lib.passes import settle_batch_norm
    from heatup_lib.data.augment import CachedBatches

    t_start = time.perf_counter()
    test_cache = ImageCache.open(cache_path, "test")
    y_test = test_cache.labels.numpy() if hasattr(test_cache.labels, "numpy") else test_cache.labels
    settings = B.settings_for(
        "cub200", preset="default", device="cpu", backbone="small", pretrained=False,
        num_epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
        weight_decay=args.weight_decay, alpha=args.alpha, embedding_dim=args.embedding_dim,
        image_size=args.size, crop_size=args.crop, seed=seed,
        eval_every=args.eval_every, eval_batch_size=args.eval_batch_size)
    untrained = None
    if args.untrained:
        # the untrained network: initial weights of this seed, batch norm settled on the training
        # data (as fit does before its first step), no optimisation step
        train_cache = ImageCache.open(cache_path, "train")
        variant = TABLE_ROWS[row][0]
        torch.manual_seed(seed)
        net = B.build_backbone(settings, bottleneck_bias=variant != "bn")
        head = NormalizedSoftmax(settings.embedding_dim, train_cache.num_classes, variant=variant)
        batches = CachedBatches(train_cache, settings.batch_size, train=True, crop=settings.crop_size,
                                **dict(net.input_normalization))
        settle_batch_norm(net, head, batches, settings.train)
        emb, y = embed_split(net, None, test_cache, device="cpu", crop_size=settings.crop_size,
                             batch_size=settings.eval_batch_size)
        untrained = metrics.recall_at_k(emb, y, ks=(1,))[1]
    t_fit = time.perf_counter()
    with tempfile.TemporaryDirectory() as runs:
        result = B.run_experiment("cub200", row, settings, cache_dir=cache_path, runs_dir=runs,
                                  standin=standin.STANDIN_NOTE, progress=False)
    t_end = time.perf_counter()
    m = result.metrics
    return {
        "row": row, "seed": seed, "recall@1": m["recall@1"], "recall@2": m["recall@2"],
        "recall@4": m["recall@4"], "nmi": m["nmi"], "map@r": m["map@r"],
        "chance_recall@1": chance_recall_at_1(np.asarray(y_test)), "untrained_recall@1": untrained,
        "train_accuracy": [round(h["accuracy"], 3) for h in result.history],
        "train_loss": [round(h["loss"], 3) for h in result.history],
        "curve_recall@1": [round(h["recall@1"], 4) for h in result.history if "recall@1" in h],
        "epoch_seconds": [round(h["seconds"], 1) for h in result.history],
        "fit_seconds": round(t_end - t_fit, 1), "run_seconds": round(t_end - t_start, 1),
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }


def cmd_train(args: argparse.Namespace) -> None:
    """Train the rows on one stand-in configuration; one JSON line per run."""
    import torch

    torch.set_num_threads(args.threads)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    cache, seconds = prepare_standin(workdir, args.num_classes, args.images_per_class, args.size,
                                     args.data_seed, args.distortion, args.clutter)
    setup = {k: v for k, v in vars(args).items() if k != "func"}
    print(json.dumps({"setup": setup, "data_seconds": round(seconds, 1)}), flush=True)
    for seed in _ints(args.seeds):
        for row in args.rows.split(","):
            record = train_row(cache, row, seed, args)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps({"setup": setup, **record}) + "\n")
            print(json.dumps(record), flush=True)


def main(argv: list[str] | None = None) -> None:
    """Parse the subcommand and run it."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("select", help="rebuild GLYPHS by measurement")
    p.add_argument("--threshold", type=float, default=G.SELECTION_THRESHOLD)
    p.add_argument("--num-classes", type=int, default=200)
    p.set_defaults(func=cmd_select)
    p = sub.add_parser("preview", help="time a tree and save a grid of images")
    p.add_argument("--num-classes", type=int, default=200)
    p.add_argument("--images-per-class", type=int, default=40)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--distortion", type=float, default=0.0)
    p.add_argument("--clutter", type=int, default=0)
    p.add_argument("--rows", type=int, default=16)
    p.add_argument("--cols", type=int, default=16)
    p.add_argument("--zoom", type=int, default=3)
    p.add_argument("--out", default="/tmp/standin_preview.png")
    p.set_defaults(func=cmd_preview)
    p = sub.add_parser("speed", help="training throughput of the small backbone")
    p.add_argument("--widths", default="16,32,64;32,64,128", help="';'-separated width lists")
    p.add_argument("--convs", type=int, default=2)
    p.add_argument("--crops", default="28,32")
    p.add_argument("--batch-sizes", default="64")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_speed)
    p = sub.add_parser("train", help="train table rows on a stand-in")
    p.add_argument("--workdir", default="/tmp/standin_study")
    p.add_argument("--num-classes", type=int, default=200)
    p.add_argument("--images-per-class", type=int, default=40)
    p.add_argument("--size", type=int, default=32, help="side of the written images")
    p.add_argument("--crop", type=int, default=28)
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--distortion", type=float, default=0.0)
    p.add_argument("--clutter", type=int, default=0)
    p.add_argument("--rows", default="sm,ln")
    p.add_argument("--seeds", default="0")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--optimizer", default="adam")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--alpha", type=float, default=16.0)
    p.add_argument("--embedding-dim", type=int, default=64)
    p.add_argument("--eval-batch-size", type=int, default=500)
    p.add_argument("--eval-every", type=int, default=2)
    p.add_argument("--untrained", action="store_true", help="also evaluate the untrained network")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="append the JSON lines to this file")
    p.set_defaults(func=cmd_train)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
