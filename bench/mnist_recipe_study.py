"""Why alpha=16 on a 2-d LeNet embedding trains slowly, and which recipe within the paper's method trains it (issue 19).

Every run trains LeNet(2) + an L2-normalised softmax head ("ln") with Adam on MNIST, one torch
thread, for a fixed number of *training images seen* (the budget), so recipes with other batch
sizes or subsets compare fairly. A recipe (:class:`Recipe`) is the paper's method plus choices
the paper leaves open or the authors' TF-slim release made: initialisation, input scaling, a
class bias after alpha, L2 weight decay, learning rate, batch size, an alpha warm-up, class
weights spread evenly over the circle, batch norm on the 2-d bottleneck, PReLU.

Subcommands (each writes its section of the JSON file ``--out``, with machine, date, torch
version, git commit, load average and the exact command):

    diagnose  per-step dynamics of a few recipes/alphas: class-weight angles, feature norm,
              gradient norms w.r.t. f and f_hat, the angle each feature moves per step
    study     the candidate table: test accuracy (10,000 digits), min centre angle, compactness,
              Recall@1, seconds, for each recipe on one budget and seed(s)
    check     one recipe on the chapter's settings (alpha 0.25, 4, 16, 64, 16 with heat-up), all
              digits and zero-shot (train 0-4, embed test 5-9)
    curve     test accuracy of alpha=16 against images seen, full 60k set vs a subset
    speed     images/s of one training process (one thread), with and without channels-last,
              and of ``--parallel`` such processes at once

    OMP_NUM_THREADS=1 python bench/mnist_recipe_study.py study --images 60000 --seeds 0
    python bench/mnist_recipe_study.py study --candidates baseline,authors --images 60000

Nothing here changes the library: options the library lacks (class bias init, even class
weights, bottleneck batch norm, TF-slim init, alpha warm-up) are implemented below.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from heatup_lib import records  # noqa: E402
from heatup_lib.geometry import angular_summary, unit_angle  # noqa: E402
from heatup_lib.heads import NormalizedSoftmax  # noqa: E402
from heatup_lib.atomic import atomic_write_json  # noqa: E402
from heatup_lib.metrics import recall_at_k  # noqa: E402
from heatup_lib.models import LeNet  # noqa: E402
from heatup_lib.data.batches import TensorBatches  # noqa: E402
from heatup_lib.seeding import epoch_generator  # noqa: E402

DEFAULT_OUT = ROOT / "records" / "02_mnist" / "recipe_study.json"
INITS = ("torch", "tf")            # PyTorch's default / TF-slim variance scaling (He, truncated)
INPUTS = ("unit", "signed")        # x/255 in [0, 1] / the authors' 2x/255 - 1 in [-1, 1]
CLASS_INITS = ("random", "even")   # the head's default / evenly spaced directions on the circle


# --- recipes ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Recipe:
    """A way to train LeNet(2) + "ln" head within the paper's method (alpha is the run's, not the recipe's)."""

    init: str = "torch"
    inputs: str = "unit"
    bias: bool = False               # class bias added after alpha (authors' code)
    weight_decay: float = 0.0        # L2 (TF-slim l2_regularizer) on conv and fc weights
    lr: float = 1e-3
    batch_size: int = 128
    warmup_images: int = 0           # alpha rises geometrically from warmup_alpha to alpha
    warmup_alpha: float = 1.0
    class_init: str = "random"
    bottleneck_bn: bool = False      # batch norm (shift, no scale) on f before normalising
    activation: str = "relu"
    adam_eps: float = 1e-8
    lr_warmup_images: int = 0        # learning rate rises linearly from 0 over these images

    def __post_init__(self) -> None:
        if self.init not in INITS or self.inputs not in INPUTS or self.class_init not in CLASS_INITS:
            raise ValueError(f"bad recipe {self}: init in {INITS}, inputs in {INPUTS}, "
                             f"class_init in {CLASS_INITS}")

    def differences(self) -> dict[str, Any]:
        """The fields that differ from the library's current recipe."""
        base = Recipe()
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) != getattr(base, f.name)}


BASELINE = Recipe()
AUTHORS = Recipe(init="tf", inputs="signed", bias=True)  # what the release's MNIST run optimises
CANDIDATES: dict[str, Recipe] = {
    "baseline": BASELINE,
    "tf-init": Recipe(init="tf"),
    "signed-inputs": Recipe(inputs="signed"),
    "class-bias": Recipe(bias=True),
    "weight-decay": Recipe(weight_decay=4e-5),
    "authors": AUTHORS,
    "authors+wd": dataclasses.replace(AUTHORS, weight_decay=4e-5),
    "lr3e-4": Recipe(lr=3e-4),
    "lr3e-3": Recipe(lr=3e-3),
    "batch32": Recipe(batch_size=32),
    "batch64": Recipe(batch_size=64),
    "alpha-warmup": Recipe(warmup_images=15_000, warmup_alpha=1.0),
    "lr-warmup": Recipe(lr_warmup_images=6_400),
    "even-classes": Recipe(class_init="even"),
    "bottleneck-bn": Recipe(bottleneck_bn=True),
    "prelu": Recipe(activation="prelu"),
    "prelu+bias": Recipe(activation="prelu", bias=True),
    # combinations of what helped on its own
    "even+alpha-warmup": Recipe(class_init="even", warmup_images=15_000, warmup_alpha=1.0),
    "tf-init+even": Recipe(init="tf", class_init="even"),
    "authors+even": dataclasses.replace(AUTHORS, class_init="even"),
    "authors+alpha-warmup": dataclasses.replace(AUTHORS, warmup_images=15_000, warmup_alpha=1.0),
}


# --- model pieces the library does not have ------------------------------------------------

class BottleneckBN(nn.Module):
    """LeNet followed by batch norm on its feature: a learnable shift, no scale (TF-slim's batch_norm defaults)."""

    def __init__(self, net: LeNet, momentum: float = 0.05, eps: float = 1e-3) -> None:
        super().__init__()
        self.net = net
        self.embedding_dim = net.embedding_dim
        self.bn = nn.BatchNorm1d(net.embedding_dim, momentum=momentum, eps=eps)
        self.bn.weight.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        """Batch-normalised features (N, D)."""
        return self.bn(self.net(x))


def tf_slim_init_(net: nn.Module) -> None:
    """TF-slim ``variance_scaling_initializer()`` on conv/fc weights (truncated normal, std sqrt(1.3 * 2 / fan_in)) and zero biases."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            std = math.sqrt(1.3 * 2.0 / fan_in)
            nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
            nn.init.zeros_(m.bias)


def even_class_weights(num_classes: int, generator: torch.Generator) -> Tensor:
    """Unit class weights (C, 2) at angles offset + 2 pi k / C (a random offset)."""
    offset = float(torch.rand((), generator=generator)) * 2 * math.pi
    angles = offset + 2 * math.pi * torch.arange(num_classes, dtype=torch.float64) / num_classes
    return torch.stack([angles.cos(), angles.sin()], dim=1).float()


def build(recipe: Recipe, num_classes: int, alpha: float, seed: int) -> tuple[nn.Module, NormalizedSoftmax]:
    """Network and head of ``recipe``, initialised from ``seed``."""
    torch.manual_seed(seed)
    net: nn.Module = LeNet(2, activation=recipe.activation)
    if recipe.init == "tf":
        tf_slim_init_(net)
    head = NormalizedSoftmax(2, num_classes, alpha=alpha, variant="ln", bias=recipe.bias)
    with torch.no_grad():
        if recipe.init == "tf":  # TF's variance_scaling_initializer: a Gaussian direction per class
            head.weight.normal_()
        if recipe.class_init == "even":
            head.weight.copy_(even_class_weights(num_classes, torch.Generator().manual_seed(seed)))
    if recipe.bottleneck_bn:
        net = BottleneckBN(net)
    return net, head


def make_optimizer(net: nn.Module, head: nn.Module, recipe: Recipe) -> torch.optim.Adam:
    """Adam; L2 weight decay (coupled, as TF's regulariser added to the loss) only on conv and fc weights."""
    decayed = [m.weight for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    ids = {id(p) for p in decayed}
    rest = [p for p in list(net.parameters()) + list(head.parameters())
            if p.requires_grad and id(p) not in ids]
    groups = [{"params": decayed, "weight_decay": recipe.weight_decay},
              {"params": rest, "weight_decay": 0.0}]
    return torch.optim.Adam(groups, lr=recipe.lr, eps=recipe.adam_eps)


def input_transform(recipe: Recipe):
    """uint8 (N, 28, 28) -> float (N, 1, 28, 28), in [0, 1] or [-1, 1]."""
    if recipe.inputs == "unit":
        return lambda X: X.unsqueeze(1).float().div_(255.0)
    return lambda X: X.unsqueeze(1).float().mul_(2.0 / 255.0).sub_(1.0)


# --- schedules over images seen -------------------------------------------------------------

@dataclass(frozen=True)
class Plan:
    """alpha and learning-rate factor as functions of images seen: optional warm-up, optional step heat-up."""

    alpha: float
    images: int
    heatup_at: float | None = None   # fraction of the budget where alpha x 0.25, lr x 0.1
    warmup_images: int = 0
    warmup_alpha: float = 1.0
    lr_warmup_images: int = 0

    def at(self, seen: int) -> tuple[float, float]:
        """(alpha, lr factor) after ``seen`` images."""
        if self.heatup_at is not None and seen >= self.heatup_at * self.images:
            return self.alpha * 0.25, 0.1
        alpha, lr = self.alpha, 1.0
        if self.warmup_images and seen < self.warmup_images:
            t = seen / self.warmup_images
            low = min(self.warmup_alpha, self.alpha)
            alpha = low * (self.alpha / low) ** t
        if self.lr_warmup_images and seen < self.lr_warmup_images:
            lr = (seen + 1) / self.lr_warmup_images
        return alpha, lr


# --- data and evaluation --------------------------------------------------------------------

def load_data(root: str | None) -> dict[str, Tensor]:
    """MNIST as uint8 tensors: train (60,000) and test (10,000)."""
    from heatup_lib.data.mnist import load_mnist

    X, y = load_mnist(root, "train")
    Xt, yt = load_mnist(root, "test")
    return {"X": X, "y": y, "Xt": Xt, "yt": yt}


def subset(X: Tensor, y: Tensor, size: int, seed: int, classes: int | None = None) -> tuple[Tensor, Tensor]:
    """A seeded random subset of ``size`` images (of the digits < ``classes`` if given)."""
    if classes is not None:
        keep = y < classes
        X, y = X[keep], y[keep]
    if size >= len(y):
        return X, y
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:size]
    return X[idx], y[idx]


@torch.no_grad()
def embed(net: nn.Module, X: Tensor, transform, batch: int = 256,
          channels_last: bool = False) -> Tensor:
    """Un-normalised features (N, 2) in eval mode."""
    was = net.training
    net.eval()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out = torch.cat([net(transform(x).contiguous(memory_format=fmt)) for x in X.split(batch)])
    net.train(was)
    return out


@torch.no_grad()
def evaluate(net: nn.Module, head: NormalizedSoftmax, X: Tensor, y: Tensor, transform,
             classify: bool = True, recall: bool = True, channels_last: bool = False) -> dict[str, float]:
    """Test accuracy (head's logits, bias included), Recall@1, compactness and centre angles (degrees)."""
    f = embed(net, X, transform, channels_last=channels_last)
    emb = F.normalize(f, dim=1)
    out: dict[str, float] = {}
    if classify:
        was = head.training
        head.eval()
        out["accuracy"] = float((head(f).argmax(1) == y).double().mean())
        head.train(was)
    if recall:
        out["recall@1"] = recall_at_k(emb, y, ks=(1,))[1]
    out.update(angular_summary(emb, y))
    out["feature_norm_median"] = float(f.norm(dim=1).median())
    return out


def weight_angles(head: NormalizedSoftmax) -> list[float]:
    """Angles (degrees, in [0, 360)) of the normalised class weights."""
    w = F.normalize(head.weight.detach(), dim=1)
    return [round(float(a) % 360.0, 3) for a in torch.rad2deg(torch.atan2(w[:, 1], w[:, 0]))]


def min_pair_angle(units: Tensor) -> float:
    """Smallest angle (degrees) between rows of a (C, 2) unit matrix."""
    a = unit_angle(units.unsqueeze(0), units.unsqueeze(1))
    a = a + torch.eye(len(units)) * 10.0
    return float(torch.rad2deg(a.min()))


# --- one run ------------------------------------------------------------------------------------

@dataclass
class RunResult:
    """What one run returns: final metrics, evaluations along the way, the diagnostic trace, timing."""

    final: dict[str, float]
    evals: list[dict[str, float]] = field(default_factory=list)
    trace: list[dict[str, Any]] = field(default_factory=list)
    train_accuracy_last: float = float("nan")
    train_loss_last: float = float("nan")
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    images_per_second: float = 0.0
    weight_angles_final: list[float] = field(default_factory=list)


def train_run(recipe: Recipe, plan: Plan, X: Tensor, y: Tensor, Xt: Tensor, yt: Tensor, seed: int,
              num_classes: int = 10, eval_at: tuple[float, ...] = (1.0,), diag_every: int = 0,
              classify: bool = True, channels_last: bool = False, untimed_steps: int = 0) -> RunResult:
    """Train ``recipe`` on (X, y) for ``plan.images`` images seen; evaluate on (Xt, yt) at the fractions ``eval_at``."""
    net, head = build(recipe, num_classes, plan.alpha, seed)
    if channels_last:
        net.to(memory_format=torch.channels_last)
    opt = make_optimizer(net, head, recipe)
    transform = input_transform(recipe)
    data = TensorBatches(X, y, recipe.batch_size, transform=transform)
    bs = recipe.batch_size
    num_steps = plan.images // bs
    eval_steps = {max(1, round(frac * num_steps)): frac for frac in eval_at}
    plan = dataclasses.replace(plan, warmup_images=recipe.warmup_images,
                               warmup_alpha=recipe.warmup_alpha,
                               lr_warmup_images=recipe.lr_warmup_images)
    result = RunResult(final={})
    window = max(1, min(50, num_steps // 5))  # running training accuracy over the last steps
    recent: list[tuple[float, float, int]] = []
    train_seconds, cpu_seconds = 0.0, 0.0
    step, epoch = 0, 0
    net.train()
    head.train()
    while step < num_steps:
        for Xb, yb in data.epoch(epoch, epoch_generator(seed, epoch)):
            if step >= num_steps:
                break
            if channels_last:
                Xb = Xb.contiguous(memory_format=torch.channels_last)
            t0, c0 = time.perf_counter(), time.process_time()
            alpha, lr_factor = plan.at(step * bs)
            head.alpha = alpha
            for g in opt.param_groups:
                g["lr"] = recipe.lr * lr_factor
            diag = diag_every and step % diag_every == 0
            f = net(Xb)
            if diag:
                f.retain_grad()
            logits = head(f)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if diag:
                record = _diagnostics(step, bs, f, logits, yb, head, alpha, loss)
                w_before = F.normalize(head.weight.detach(), dim=1).clone()
                f_before = F.normalize(f.detach(), dim=1)
            opt.step()
            with torch.no_grad():
                recent.append((float(loss) * len(yb), float((logits.argmax(1) == yb).sum()), len(yb)))
                recent = recent[-window:]
            if step >= untimed_steps:
                train_seconds += time.perf_counter() - t0
                cpu_seconds += time.process_time() - c0
            if diag:
                with torch.no_grad():
                    f_after = F.normalize(net(Xb), dim=1)
                    record["feature_step_deg_median"] = float(
                        torch.rad2deg(unit_angle(f_before, f_after)).median())
                    record["weight_step_deg_max"] = float(torch.rad2deg(
                        unit_angle(w_before, F.normalize(head.weight.detach(), dim=1))).max())
                result.trace.append(record)
            step += 1
            if step in eval_steps:  # along the way: the first 2,000 test digits; at the end: all
                last = step == num_steps
                n = len(yt) if last else min(len(yt), 2000)
                ev = evaluate(net, head, Xt[:n], yt[:n], transform, classify=classify,
                              recall=last, channels_last=channels_last)
                ev.update(images_seen=step * bs, fraction=eval_steps[step], test_digits=n)
                result.evals.append(ev)
        epoch += 1
    result.final = result.evals[-1] if result.evals else {}
    loss_sum, correct, count = (sum(r[i] for r in recent) for i in range(3))
    result.train_loss_last, result.train_accuracy_last = loss_sum / count, correct / count
    result.seconds, result.cpu_seconds = train_seconds, cpu_seconds
    result.images_per_second = (num_steps - untimed_steps) * bs / train_seconds
    result.weight_angles_final = weight_angles(head)
    return result


def _diagnostics(step: int, bs: int, f: Tensor, logits: Tensor, y: Tensor, head: NormalizedSoftmax,
                 alpha: float, loss: Tensor) -> dict[str, Any]:
    """Per-step numbers: feature norm, gradient norms w.r.t. f and f_hat, confidence, class-weight geometry."""
    with torch.no_grad():
        g_f = f.grad * bs                                   # per-sample dL_i/df_i (loss is the mean)
        norm = f.norm(dim=1)
        g_fhat = g_f * norm.unsqueeze(1)                    # dL/df_hat's tangential part: ||f|| dL/df
        p = logits.softmax(1)
        p_true = p.gather(1, y.unsqueeze(1)).squeeze(1)
        fhat = F.normalize(f, dim=1)
        w = F.normalize(head.weight.detach(), dim=1)
        present = torch.unique(y)
        centres = F.normalize(torch.stack([fhat[y == c].mean(0) for c in present]), dim=1)
        cos_true = (fhat * w[y]).sum(1)
        return {
            "step": step,
            "images_seen": step * bs,
            "alpha": alpha,
            "loss": float(loss),
            "batch_accuracy": float((logits.argmax(1) == y).double().mean()),
            "feature_norm_median": float(norm.median()),
            "grad_f_median": float(g_f.norm(dim=1).median()),
            "grad_fhat_median": float(g_fhat.norm(dim=1).median()),
            "grad_fhat_mean": float(g_fhat.norm(dim=1).mean()),
            "frac_confident": float((p_true > 0.99).double().mean()),   # almost no gradient
            "angle_to_own_weight_median": float(torch.rad2deg(torch.arccos(cos_true.clamp(-1, 1))).median()),
            "feature_resultant": float(fhat.mean(0).norm()),   # 1: every feature in one direction
            "batch_centre_min_angle": min_pair_angle(centres),
            "weight_min_angle": min_pair_angle(w),
            "weight_angles": weight_angles(head),
            "bias": [round(float(b), 4) for b in head.bias.detach()] if head.bias is not None else None,
        }


# --- bookkeeping ----------------------------------------------------------------------------------

def meta(argv: list[str]) -> dict[str, Any]:
    """Machine, versions, commit, date, load average and the exact command."""
    env = records.environment_info("cpu")
    env["load_average"] = list(os.getloadavg())
    env["command"] = "python bench/mnist_recipe_study.py " + " ".join(shlex.quote(a) for a in argv)
    env["omp_num_threads"] = os.environ.get("OMP_NUM_THREADS")
    return env


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def write_section(path: Path, section: str, key: str, value: dict[str, Any]) -> None:
    """Store ``value`` under ``[section][key]`` of the JSON file ``path`` (read, update, write atomically)."""
    data = _read(path)
    data.setdefault(section, {})[key] = value
    atomic_write_json(path, data)


def summarise(r: RunResult, with_trace: bool = False) -> dict[str, Any]:
    """A run's JSON summary (rounded)."""
    def rnd(d: dict[str, float]) -> dict[str, float]:
        return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in d.items()}

    out = {"final": rnd(r.final), "evals": [rnd(e) for e in r.evals],
           "train_accuracy_last": round(r.train_accuracy_last, 5),
           "train_loss_last": round(r.train_loss_last, 5),
           "seconds": round(r.seconds, 2), "cpu_seconds": round(r.cpu_seconds, 2),
           "images_per_second": round(r.images_per_second, 1),
           "weight_angles_final": r.weight_angles_final}
    if with_trace:
        out["trace"] = [rnd(t) for t in r.trace]
    return out


def _row(name: str, s: dict[str, Any]) -> str:
    f = s["final"]
    acc = f"{100 * f['accuracy']:5.1f}" if "accuracy" in f else "    -"
    return (f"{name:22s} acc {acc}  train {100 * s['train_accuracy_last']:5.1f}  "
            f"R@1 {100 * f['recall@1']:5.1f}  min-angle {f['spread_min']:6.2f}  "
            f"compact {f['compactness']:5.2f}  |f| {f['feature_norm_median']:8.2f}  "
            f"{s['seconds']:6.1f}s")


# --- subcommands ---------------------------------------------------------------------------------

def cmd_diagnose(args, data) -> None:
    runs = {}
    for spec in args.runs.split(","):
        name, alpha = spec.split("@")
        recipe = CANDIDATES[name]
        r = train_run(recipe, Plan(float(alpha), args.images), data["X"], data["y"], data["Xt"],
                      data["yt"], seed=args.seeds[0], eval_at=(0.25, 0.5, 1.0), diag_every=args.every, channels_last=not args.contiguous)
        runs[spec] = summarise(r, with_trace=True) | {"recipe": dataclasses.asdict(recipe)}
        print(_row(spec, runs[spec]), flush=True)
        write_section(args.out, "diagnose", spec, runs[spec] | {"meta": meta(args.argv),
                                                               "images": args.images})


def cmd_study(args, data) -> None:
    names = list(CANDIDATES) if args.candidates == "all" else args.candidates.split(",")
    for name in names:
        recipe = CANDIDATES[name]
        per_seed = {}
        for seed in args.seeds:
            r = train_run(recipe, Plan(args.alpha, args.images), data["X"], data["y"], data["Xt"],
                          data["yt"], seed=seed, eval_at=(0.5, 1.0), channels_last=not args.contiguous)
            per_seed[str(seed)] = summarise(r)
            print(_row(f"{name} s{seed}", per_seed[str(seed)]), flush=True)
        key = f"{name}@{args.alpha:g}/{args.images}"
        old = _read(args.out).get("study", {}).get(key)
        metas = [meta(args.argv)]
        if old is not None and old["recipe"] == dataclasses.asdict(recipe):  # add seeds to it
            per_seed = {**old["seeds"], **per_seed}
            metas = old["meta"] + metas
        write_section(args.out, "study", key, {
            "candidate": name, "recipe": dataclasses.asdict(recipe),
            "differs_from_library": recipe.differences(), "alpha": args.alpha,
            "images": args.images, "seeds": dict(sorted(per_seed.items())), "meta": metas})


SETTINGS = {"alpha=0.25": (0.25, None), "alpha=4": (4.0, None), "alpha=16": (16.0, None),
            "alpha=64": (64.0, None), "alpha=16 heat-up": (16.0, 0.8)}


def cmd_check(args, data) -> None:
    recipe = CANDIDATES[args.recipe]
    groups = [g for g in args.groups.split(",")]
    for group in groups:
        if group == "all":
            X, y = subset(data["X"], data["y"], args.train_size, args.seeds[0])
            Xt, yt, classes, images = data["Xt"], data["yt"], 10, args.images
        else:  # zero-shot: train on digits 0-4, embed test digits 5-9
            X, y = subset(data["X"], data["y"], args.train_size, args.seeds[0], classes=5)
            keep = data["yt"] >= 5
            Xt, yt, classes, images = data["Xt"][keep], data["yt"][keep], 5, args.images // 2
        for setting, (alpha, heat) in SETTINGS.items():
            if args.settings != "all" and setting not in args.settings.split(","):
                continue
            for seed in args.seeds:
                r = train_run(recipe, Plan(alpha, images, heatup_at=heat), X, y, Xt, yt, seed=seed,
                              num_classes=classes, eval_at=(0.5, 0.8, 1.0),
                              classify=group == "all", channels_last=not args.contiguous)
                s = summarise(r)
                print(_row(f"{group} {setting} s{seed}", s), flush=True)
                write_section(args.out, "check", f"{args.recipe}/{group}/{setting}/s{seed}/{images}", {
                    "recipe_name": args.recipe, "recipe": dataclasses.asdict(recipe), "group": group,
                    "setting": setting, "alpha": alpha, "heatup_at": heat, "seed": seed,
                    "images": images, "train_size": len(y), **s, "meta": meta(args.argv)})


def cmd_curve(args, data) -> None:
    recipe = CANDIDATES[args.recipe]
    for size in args.sizes:
        X, y = subset(data["X"], data["y"], size, args.seeds[0])
        fracs = tuple(round(k / args.points, 4) for k in range(1, args.points + 1))
        for seed in args.seeds:
            r = train_run(recipe, Plan(args.alpha, args.images), X, y, data["Xt"], data["yt"],
                          seed=seed, eval_at=fracs, channels_last=not args.contiguous)
            s = summarise(r)
            print(_row(f"{size} s{seed}", s), flush=True)
            for e in s["evals"]:
                print(f"   {e['images_seen']:7d} images: acc {100 * e['accuracy']:5.1f}  "
                      f"min-angle {e['spread_min']:6.2f}", flush=True)
            write_section(args.out, "curve", f"{args.recipe}/{size}/s{seed}/{args.images}", {
                "recipe_name": args.recipe, "train_size": len(y), "alpha": args.alpha, "seed": seed,
                "images": args.images, **s, "meta": meta(args.argv)})


def _speed_once(recipe: Recipe, steps: int, channels_last: bool, data) -> float:
    """images/s of ``steps`` training steps (after 5 warm-up steps) on real MNIST batches."""
    X, y = data["X"], data["y"]
    r = train_run(recipe, Plan(16.0, (steps + 5) * recipe.batch_size), X, y, data["Xt"][:100],
                  data["yt"][:100], seed=0, eval_at=(), channels_last=channels_last, untimed_steps=5)
    return r.images_per_second


def cmd_speed(args, data) -> None:
    recipe = CANDIDATES[args.recipe]
    if args.worker:  # one process of the --parallel measurement: print images/s only
        print(json.dumps({"images_per_second": _speed_once(recipe, args.steps, args.channels_last,
                                                           data)}), flush=True)
        return
    out: dict[str, Any] = {"recipe_name": args.recipe, "steps": args.steps,
                           "torch_threads": torch.get_num_threads()}
    for rep in range(args.repeats):  # interleaved: the machine's load drifts
        for cl in (False, True):
            key = "channels_last" if cl else "contiguous"
            out.setdefault(key, []).append(round(_speed_once(recipe, args.steps, cl, data), 1))
            print(key, out[key][-1], "images/s", flush=True)
    if args.parallel > 1:
        cmd = [sys.executable, __file__, "speed", "--worker", "--recipe", args.recipe,
               "--steps", str(args.steps), "--channels-last"]
        env = dict(os.environ, OMP_NUM_THREADS="1")
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, text=True)
                 for _ in range(args.parallel)]
        rates = [json.loads(p.communicate()[0].strip().splitlines()[-1])["images_per_second"]
                 for p in procs]
        out["parallel_channels_last"] = {"processes": args.parallel,
                                         "per_process": [round(r, 1) for r in rates],
                                         "total": round(sum(rates), 1)}
        print("parallel", out["parallel_channels_last"], flush=True)
    out["meta"] = meta(args.argv)
    write_section(args.out, "speed", args.recipe, out)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run one subcommand."""
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON file to update")
    p.add_argument("--mnist-root", default=None)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: the study's setting)")
    p.add_argument("--contiguous", action="store_true",
                   help="train in the default memory format (default: channels-last, ~10%% faster)")
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp, images: int) -> None:
        sp.add_argument("--images", type=int, default=images, help="training images seen per run")
        sp.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0])

    d = sub.add_parser("diagnose")
    common(d, 60_000)
    d.add_argument("--runs", default="baseline@16,baseline@4", help="candidate@alpha, comma-separated")
    d.add_argument("--every", type=int, default=5, help="diagnostics every k steps")
    s = sub.add_parser("study")
    common(s, 60_000)
    s.add_argument("--candidates", default="all", help=f"comma-separated of {list(CANDIDATES)} or all")
    s.add_argument("--alpha", type=float, default=16.0)
    c = sub.add_parser("check")
    common(c, 60_000)
    c.add_argument("--recipe", default="baseline")
    c.add_argument("--groups", default="all,zero-shot")
    c.add_argument("--settings", default="all")
    c.add_argument("--train-size", type=int, default=60_000)
    cu = sub.add_parser("curve")
    common(cu, 120_000)
    cu.add_argument("--recipe", default="baseline")
    cu.add_argument("--alpha", type=float, default=16.0)
    cu.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[60_000, 12_000])
    cu.add_argument("--points", type=int, default=8)
    sp = sub.add_parser("speed")
    sp.add_argument("--recipe", default="baseline")
    sp.add_argument("--steps", type=int, default=60)
    sp.add_argument("--repeats", type=int, default=2)
    sp.add_argument("--parallel", type=int, default=2)
    sp.add_argument("--channels-last", action="store_true", help="(worker only)")
    sp.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.argv = argv
    torch.set_num_threads(args.threads)
    data = load_data(args.mnist_root)
    {"diagnose": cmd_diagnose, "study": cmd_study, "check": cmd_check, "curve": cmd_curve,
     "speed": cmd_speed}[args.cmd](args, data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
