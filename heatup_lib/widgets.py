"""The interactive panels used by the chapters: chapter 1's gradient explorer, chapter 2's training panel."""

from __future__ import annotations

import html
import io
from collections.abc import Callable, Iterator
from typing import Any

import ipywidgets as widgets
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checks import check_choice, check_int
from .data.batches import TensorBatches
from .geometry import angular_summary
from .mnist_recipe import build_lenet, mnist_inputs
from .passes import evaluating
from .plots import distribution_map
from .schedules import Constant, Schedule, SmoothHeatUp, StepHeatUp
from .train import TrainConfig, fit

# --- Chapter 2: training panel ---

_SCHEDULE_KINDS = ("step heat-up", "smooth heat-up (linear)", "smooth heat-up (cosine)",
                   "smooth heat-up (exponential)", "constant")
_STARTS = ("the trained network", "from scratch")
_TRAIN_SIZES = (500, 1000, 2000, 5000, 10000, 20000, 60000)
_ALPHA_FACTORS = (("1/16", 0.0625), ("1/8", 0.125), ("1/4", 0.25), ("1/2", 0.5), ("1 (none)", 1.0))
_LR_FACTORS = (("1/100", 0.01), ("1/10", 0.1), ("1/2", 0.5), ("1 (none)", 1.0))


def panel_schedule(kind: str, alpha: float, num_epochs: int, heatup_epoch: int, alpha_factor: float,
                   lr_factor: float = 0.1) -> tuple[Schedule, float]:
    """The schedule the training panel's controls describe, and the factor on the base learning rate.

    ``"step heat-up"``: alpha x ``alpha_factor`` and the learning rate x ``lr_factor`` from
    ``heatup_epoch`` on (``heatup_epoch=0``: heated from the first step, the way to continue a
    trained network). ``"smooth heat-up (shape)"``: both factors move from 1 to their final values
    between epoch ``heatup_epoch - 1`` (0 at the earliest) and the last epoch. ``"constant"``:
    no heat-up. The second value multiplies the base learning rate for the whole run (the step
    heat-up from the first step is a constant schedule at the heated values).
    """
    check_choice("schedule kind", kind, _SCHEDULE_KINDS)
    check_int("num_epochs", num_epochs, min_value=1)
    heatup_epoch = min(max(int(heatup_epoch), 0), num_epochs - 1)
    if kind == "constant" or (alpha_factor == 1.0 and lr_factor == 1.0):
        return Constant(alpha, num_epochs), 1.0
    if kind == "step heat-up":
        if heatup_epoch == 0:
            return Constant(alpha * alpha_factor, num_epochs), lr_factor
        return StepHeatUp(alpha, num_epochs, heatup_epoch, alpha_factor, lr_factor), 1.0
    start = max(heatup_epoch - 1, 0)
    end = num_epochs - 1 if num_epochs - 1 > start else num_epochs
    shape = kind[len("smooth heat-up ("):-1]
    return SmoothHeatUp(alpha, num_epochs, start, end, alpha_factor, lr_factor, shape), 1.0


class _CountingBatches:
    """A batch source that reports every batch it serves to ``on_batch`` (the panel's progress bar)."""

    def __init__(self, inner: Any, on_batch: Callable[[], None]) -> None:
        self.inner, self.on_batch, self.batch_size = inner, on_batch, inner.batch_size

    def __len__(self) -> int:
        return len(self.inner)

    def epoch(self, epoch: int, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
        for batch in self.inner.epoch(epoch, generator):
            yield batch
            self.on_batch()


def _figure_png(fig: Any, dpi: int = 90) -> bytes:
    """Render a matplotlib figure to PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


class TrainingPanel(widgets.VBox):
    """Chapter 2's panel: heat up the chapter's trained network (or train from scratch) and watch the held-out digits' map change epoch by epoch.

    ``start`` holds the trained weights (``{"net": ..., "head": ...}`` state dicts, e.g. from a
    shown run's ``weights.pt``); without it the panel trains from scratch only.
    """

    def __init__(self, X_train: Tensor, y_train: Tensor, X_test: Tensor, y_test: Tensor, *,
                 start: dict[str, dict[str, Tensor]] | None = None, start_label: str = "",
                 alpha: float = 16.0, schedule: str = "step heat-up", heatup_epoch: int | None = None,
                 alpha_factor: float = 0.25, lr_factor: float = 0.1, num_epochs: int = 2,
                 train_size: int = 5000, batch_size: int = 128, lr: float = 1e-3, map_points: int = 1000,
                 max_epochs: int = 20, class_init: str = "even", device: str = "cpu", seed: int = 0) -> None:
        self.X_train, self.y_train = X_train, torch.as_tensor(y_train).long()
        if len(self.X_train) != len(self.y_train):
            raise ValueError(f"X_train has {len(self.X_train)} images but y_train {len(self.y_train)} labels")
        if len(X_test) != len(y_test):
            raise ValueError(f"X_test has {len(X_test)} images but y_test {len(y_test)} labels")
        check_int("map_points", map_points, min_value=2)
        check_choice("alpha_factor", alpha_factor, [v for _, v in _ALPHA_FACTORS])
        check_choice("lr_factor", lr_factor, [v for _, v in _LR_FACTORS])
        g = torch.Generator().manual_seed(seed)
        shown = torch.randperm(len(y_test), generator=g)[:map_points]  # the fixed held-out digits on the map
        self.X_map, self.y_map = mnist_inputs(X_test[shown]), torch.as_tensor(y_test)[shown].long()
        self.num_classes = int(max(int(self.y_train.max()), int(self.y_map.max()))) + 1
        self.start_state, self.batch_size, self.lr = start, batch_size, lr
        self.class_init, self.device, self.seed = class_init, device, seed
        self.result: Any = None      # the last TrainResult
        self.error: BaseException | None = None
        self.maps: list[bytes] = []  # PNG of the map before training and after each epoch of the last run
        self.history: list[dict[str, float]] = []  # held-out numbers before training and after each epoch

        sizes = [n for n in _TRAIN_SIZES if n < len(self.X_train)] + [len(self.X_train)]
        train_size = min(sizes, key=lambda n: abs(n - train_size))
        style, layout = {"description_width": "9em"}, widgets.Layout(width="26em")
        common = dict(style=style, layout=layout)
        starts = [f"{_STARTS[0]}{f' ({start_label})' if start_label else ''}", _STARTS[1]] if start else [_STARTS[1]]
        self.start = widgets.Dropdown(options=starts, value=starts[0], description="start from", **common)
        self.schedule = widgets.Dropdown(options=_SCHEDULE_KINDS, value=schedule, description="schedule", **common)
        self.alpha = widgets.FloatLogSlider(value=alpha, base=2, min=-2, max=6, step=0.5, description="alpha",
                                            readout_format=".3g", **common)
        self.alpha_factor = widgets.SelectionSlider(options=list(_ALPHA_FACTORS), value=alpha_factor,
                                                    description="alpha x", **common)
        self.lr_factor = widgets.SelectionSlider(options=list(_LR_FACTORS), value=lr_factor,
                                                 description="learning rate x", **common)
        self.num_epochs = widgets.IntSlider(value=num_epochs, min=1, max=max_epochs, description="epochs", **common)
        default_heatup = 0 if start else max(num_epochs - 1, 0)
        self.heatup_epoch = widgets.IntSlider(value=default_heatup if heatup_epoch is None else heatup_epoch,
                                              min=0, max=max(max_epochs - 1, 1), description="heat-up epoch",
                                              **common)
        self.train_size = widgets.SelectionSlider(options=sizes, value=train_size, description="training images",
                                                  **common)
        self.plan = widgets.HTML()
        self.button = widgets.Button(description="Train", button_style="primary", icon="play")
        self.progress = widgets.IntProgress(value=0, min=0, max=1, description="progress", **common)
        self.status = widgets.HTML("Press Train.")
        self.image = widgets.Image(format="png", layout=widgets.Layout(width="380px"))
        for control in (self.start, self.alpha, self.schedule, self.num_epochs, self.heatup_epoch,
                        self.alpha_factor, self.lr_factor):
            control.observe(self._update_plan, names="value")
        self.button.on_click(self.train)
        controls = widgets.VBox([self.start, self.schedule, self.alpha, self.alpha_factor, self.lr_factor,
                                 self.num_epochs, self.heatup_epoch, self.train_size, self.plan, self.button,
                                 self.progress, self.status])
        super().__init__([widgets.HBox([controls, self.image], layout=widgets.Layout(flex_flow="row wrap"))])
        self._update_plan()
        net, head = self._build()
        self._show(net, head, "start")

    @property
    def from_trained(self) -> bool:
        """Whether the next run continues the trained network."""
        return self.start_state is not None and self.start.value.startswith(_STARTS[0])

    def current_schedule(self) -> tuple[Schedule, float]:
        """The schedule the controls describe now, and its factor on the learning rate."""
        return panel_schedule(self.schedule.value, self.alpha.value, self.num_epochs.value,
                              self.heatup_epoch.value, self.alpha_factor.value, self.lr_factor.value)

    def _update_plan(self, change: Any = None) -> None:
        """Show alpha per epoch for the current settings."""
        sched, lr_scale = self.current_schedule()
        alphas = ", ".join(f"{sched.alpha(e):.3g}" for e in range(sched.num_epochs))
        lrs = ", ".join(f"{self.lr * lr_scale * sched.lr_factor(e):.2g}" for e in range(sched.num_epochs))
        self.plan.value = f"<small>alpha per epoch: {alphas}<br>learning rate per epoch: {lrs}</small>"

    def _build(self) -> tuple[nn.Module, nn.Module]:
        """The starting network and head: the trained weights, or a fresh seeded LeNet and "ln" head."""
        net, head = build_lenet(self.num_classes, self.alpha.value, self.seed, self.device, self.class_init)
        if self.from_trained:
            net.load_state_dict(self.start_state["net"])
            head.load_state_dict(self.start_state["head"])
        return net, head

    def _show(self, net: nn.Module, head: nn.Module, title: str) -> dict[str, float]:
        """Redraw the map of the held-out digits; return their accuracy (nearest class weight) and compactness."""
        with evaluating(net, head), torch.no_grad():
            feats = torch.cat([net(x.to(self.device)) for x in self.X_map.split(1024)]).cpu()
            weights = head.weight.detach().cpu()
        cos = F.normalize(feats, dim=1) @ F.normalize(weights, dim=1).t()
        numbers = {"accuracy": float((cos.argmax(1) == self.y_map).float().mean()),
                   "compactness": angular_summary(feats, self.y_map)["compactness"]}
        fig = distribution_map(feats, self.y_map, weights,
                               # two lines: on one, the title is wider than the map and its ends are cut off
                               title=f"{title}:\n{100 * numbers['accuracy']:.1f}% correct, "
                                     f"{numbers['compactness']:.1f}° compactness")
        self.image.value = _figure_png(fig)
        self.maps.append(self.image.value)
        self.history.append(numbers)
        return numbers

    def train(self, button: Any = None) -> Any:
        """Train with the current settings (the Train button's handler); return the TrainResult."""
        self.button.disabled = True
        self.error, self.maps, self.history = None, [], []
        try:
            sched, lr_scale = self.current_schedule()
            n = self.train_size.value
            order = torch.randperm(len(self.X_train), generator=torch.Generator().manual_seed(self.seed))[:n]
            source = TensorBatches(self.X_train[order], self.y_train[order], min(self.batch_size, n),
                                   transform=mnist_inputs)
            self.progress.max, self.progress.value = max(len(source) * sched.num_epochs, 1), 0

            def tick() -> None:
                self.progress.value += 1

            def redraw(epoch: int, record: dict, net: nn.Module, head: nn.Module) -> None:
                numbers = self._show(net, head, f"after epoch {epoch + 1}/{sched.num_epochs}")
                before = self.history[0]
                self.status.value = (
                    f"epoch {epoch + 1}/{sched.num_epochs}: alpha {record['alpha']:.3g}, loss {record['loss']:.3f}, "
                    f"train accuracy {100 * record['accuracy']:.1f}%, held-out accuracy "
                    f"{100 * numbers['accuracy']:.1f}%, compactness {before['compactness']:.1f}° -> "
                    f"{numbers['compactness']:.1f}°")

            net, head = self._build()
            self._show(net, head, "start")
            self.status.value = "training..."
            config = TrainConfig(lr=self.lr * lr_scale, seed=self.seed, device=self.device)
            self.result = fit(net, head, sched, _CountingBatches(source, tick), config, run_dir=None,
                              callbacks=[redraw], progress=False)
            return self.result
        except Exception as err:
            self.error = err
            self.status.value = f"<b>training failed</b>: {html.escape(str(err))}"
            raise
        finally:
            self.button.disabled = False


def training_panel(X_train: Tensor, y_train: Tensor, X_test: Tensor, y_test: Tensor, **settings: Any) -> TrainingPanel:
    """Chapter 2's interactive training panel (see :class:`TrainingPanel` for the settings and their defaults)."""
    return TrainingPanel(X_train, y_train, X_test, y_test, **settings)


# --- Chapter 1: gradient panel ---

import math  # noqa: E402  (this section's own imports)

from matplotlib.figure import Figure as _Figure  # noqa: E402

from .gradients import gradient_norm as _gradient_norm  # noqa: E402
from .gradients import make_cosines as _make_cosines  # noqa: E402
from .gradients import margin as _margin  # noqa: E402
from .gradients import regime as _regime  # noqa: E402
from .plots import gradient_curves as _gradient_curves  # noqa: E402

_REGIME_TEXT = {
    "misclassified": "another class has a larger cosine: its gradient grows without bound, about linearly in alpha",
    "boundary": "correct but close to another class: its gradient peaks at a large alpha, then vanishes",
    "well-classified": "correct with a clear margin: its gradient peaks at a moderate alpha, then vanishes",
}


class GradientPanel(widgets.VBox):
    """Chapter 1's panel: sliders for alpha and a sample's cosines redraw its gradient-versus-alpha curve and name its regime."""

    def __init__(self, num_classes: int = 98, alpha: float = 16.0, own: float = 0.5, other: float = 0.1,
                 rest: float = 0.0, alpha_max: float = 64.0, num_alphas: int = 400,
                 boundary_margin: float = 0.1) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        if not 1.0 <= alpha_max <= 1024.0:
            raise ValueError(f"alpha_max must be in [1, 1024], got {alpha_max!r}")
        if not 0 < alpha <= alpha_max:
            raise ValueError(f"alpha must be in (0, alpha_max={alpha_max}], got {alpha!r}")
        if isinstance(num_alphas, bool) or not isinstance(num_alphas, int) or num_alphas < 10:
            raise ValueError(f"num_alphas must be an integer >= 10, got {num_alphas!r}")
        for name, value in (("own", own), ("other", other), ("rest", rest)):
            if not -1.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a cosine in [-1, 1], got {value!r}")
        self.num_classes = num_classes
        self.boundary_margin = boundary_margin
        self.alphas = torch.linspace(alpha_max / num_alphas, alpha_max, num_alphas, dtype=torch.float64)
        style = {"description_width": "11em"}
        layout = widgets.Layout(width="30em")
        common = dict(continuous_update=False, style=style, layout=layout)
        self.alpha = widgets.FloatLogSlider(value=alpha, base=2, min=-2, max=math.log2(alpha_max), step=0.25,
                                            description="alpha", readout_format=".3g", **common)
        self.own = widgets.FloatSlider(value=own, min=-1.0, max=1.0, step=0.01, description="cos to own class",
                                       **common)
        self.other = widgets.FloatSlider(value=other, min=-1.0, max=1.0, step=0.01,
                                         description="cos to nearest other", **common)
        self.rest = widgets.FloatSlider(value=rest, min=-0.3, max=0.3, step=0.01,
                                        description=f"cos to the other {num_classes - 2}", **common)
        self.info = widgets.HTML()
        self.image = widgets.Image(format="png", layout=widgets.Layout(width="460px"))
        for control in (self.alpha, self.own, self.other, self.rest):
            control.observe(self.redraw, names="value")
        controls = widgets.VBox([self.alpha, self.own, self.other, self.rest, self.info],
                                layout=widgets.Layout(width="32em"))
        super().__init__([widgets.HBox([controls, self.image], layout=widgets.Layout(flex_flow="row wrap"))])
        self.redraw()  # the first figure exists before display, so saved widget state holds it

    def cosines(self) -> Tensor:
        """The sample's cosines (num_classes,) set by the sliders; its label is class 0."""
        return _make_cosines(self.own.value, self.other.value, self.num_classes, self.rest.value)

    def regime(self) -> str:
        """The regime of the current sample (see :func:`heatup_lib.gradients.regime`)."""
        return _regime(self.cosines(), 0, self.boundary_margin)

    def redraw(self, change: Any = None) -> None:
        """Recompute the curve and the text for the current slider values."""
        z = self.cosines()
        norms = _gradient_norm(z, 0, self.alphas)
        at_alpha = float(_gradient_norm(z, 0, self.alpha.value))
        p_own = float(torch.softmax(self.alpha.value * z, dim=0)[0])
        regime = self.regime()
        k = int(norms.argmax())
        peak = (f"peaks at alpha &asymp; {float(self.alphas[k]):.3g}" if k < len(self.alphas) - 1
                else f"is still growing at alpha = {float(self.alphas[-1]):.3g}")
        lines = [f"<b>{regime}</b>: {_REGIME_TEXT[regime]}.",
                 f"margin {float(_margin(z, 0)):+.2f}; the gradient {peak}.",
                 f"At alpha = {self.alpha.value:.3g}: p(own class) = {p_own:.3f}, "
                 f"||dL/d f_hat|| = {at_alpha:.3g}."]
        if float((z * z).sum()) > 1.0:
            lines.append("<i>These cosines need class weights that are not orthonormal "
                         "(their squares sum to more than 1); the curve assumes orthonormal weights.</i>")
        self.info.value = "<br>".join(lines)
        fig = _Figure(figsize=(5.75, 3.75), layout="constrained")  # 460 x 300 px at 80 dpi: the image's width
        _gradient_curves(self.alphas, {"this sample": norms}, ax=fig.subplots(), alpha_marker=self.alpha.value,
                         title=f"{self.num_classes} classes, orthonormal class weights")
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=80)
        self.image.value = buffer.getvalue()


def gradient_panel(**settings: Any) -> GradientPanel:
    """Chapter 1's interactive gradient panel (see :class:`GradientPanel` for the settings and their defaults)."""
    return GradientPanel(**settings)
