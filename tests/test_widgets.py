"""The interactive panels: chapter 1's gradient explorer and chapter 2's training panel really work."""

from __future__ import annotations

import pytest
import torch

from heatup_lib.gradients import make_cosines


def test_gradient_panel_renders_at_creation_and_redraws() -> None:
    from heatup_lib.widgets import gradient_panel

    panel = gradient_panel(num_classes=10, alpha=16.0, own=0.5, other=0.1, num_alphas=50)
    first = panel.image.value
    assert first[:8] == b"\x89PNG\r\n\x1a\n" and panel.regime() == "well-classified"
    assert "well-classified" in panel.info.value
    panel.other.value = 0.6  # now another class is closer
    assert panel.regime() == "misclassified" and "misclassified" in panel.info.value
    assert panel.image.value != first
    assert torch.equal(panel.cosines(), make_cosines(0.5, 0.6, 10))
    with pytest.raises(ValueError, match=r"alpha must be in \(0, alpha_max=64.0\], got 100.0"):
        gradient_panel(alpha=100.0)
    panel.close()


# --- the training panel ---

@pytest.fixture(scope="module")
def digits():
    from heatup_lib.data.mnist import load_mnist

    X, y = load_mnist(None, "test")
    return X[:256], y[:256], X[256:356], y[256:356]


def test_panel_schedule_follows_the_controls():
    from heatup_lib.schedules import Constant, SmoothHeatUp, StepHeatUp
    from heatup_lib.widgets import panel_schedule

    step, scale = panel_schedule("step heat-up", 16.0, 5, 3, 0.25)
    assert isinstance(step, StepHeatUp) and [step.alpha(e) for e in range(5)] == [16, 16, 16, 4, 4]
    assert step.lr_factor(4) == pytest.approx(0.1) and scale == 1.0
    now, scale = panel_schedule("step heat-up", 16.0, 2, 0, 0.25, 0.1)  # heated from the first step
    assert isinstance(now, Constant) and now.alpha(0) == 4.0 and scale == 0.1
    smooth, _ = panel_schedule("smooth heat-up (cosine)", 16.0, 6, 3, 0.25)
    assert isinstance(smooth, SmoothHeatUp) and smooth.shape == "cosine"
    alphas = [smooth.alpha(e) for e in range(6)]
    assert alphas[:3] == [16, 16, 16] and 4 < alphas[3] < alphas[2] and alphas[5] == pytest.approx(4.0)
    early, _ = panel_schedule("smooth heat-up (linear)", 16.0, 1, 0, 0.5)
    assert early.alpha(0) == 16.0 and early.alpha(1) == pytest.approx(8.0)
    assert isinstance(panel_schedule("constant", 4.0, 5, 3, 0.25)[0], Constant)
    assert panel_schedule("step heat-up", 4.0, 3, 7, 0.5)[0].heatup_epoch == 2  # clipped into the run
    with pytest.raises(ValueError, match="Unknown value 'warm' for argument schedule kind"):
        panel_schedule("warm", 4.0, 3, 1, 0.5)


def test_panel_trains_from_scratch_when_train_is_pressed(digits):
    import ipywidgets
    from ipywidgets.embed import embed_data

    from heatup_lib.widgets import training_panel

    X_train, y_train, X_test, y_test = digits
    panel = training_panel(X_train, y_train, X_test, y_test, num_epochs=1, train_size=256, batch_size=64,
                           map_points=100, schedule="constant", alpha=4.0)
    assert isinstance(panel, ipywidgets.VBox) and not panel.from_trained
    before = panel.image.value
    assert before[:4] == b"\x89PNG" and len(panel.maps) == 1
    assert "alpha per epoch: 4" in panel.plan.value
    panel.alpha.value = 16.0
    assert "alpha per epoch: 16" in panel.plan.value  # the plan follows the sliders
    panel.button.click()  # what pressing Train does
    assert panel.error is None
    assert len(panel.result.history) == 1 and panel.result.history[0]["alpha"] == 16.0
    assert panel.progress.max == 4 and panel.progress.value == 4  # 256 images / 64 per batch
    assert len(panel.maps) == 2 and panel.image.value == panel.maps[-1] != before
    assert "epoch 1/1" in panel.status.value and "compactness" in panel.status.value
    assert not panel.button.disabled
    # The controls and the map survive as saved widget state (what the static book renders).
    state = embed_data(views=[panel])["manager_state"]["state"]
    models = {s["model_name"] for s in state.values()}
    assert {"FloatLogSliderModel", "DropdownModel", "ButtonModel", "IntProgressModel", "ImageModel"} <= models


def test_panel_heats_up_a_trained_network(digits):
    """From given weights: the first map is theirs, the run continues them at the heated alpha and learning rate."""
    from heatup_lib.mnist_recipe import build_lenet
    from heatup_lib.widgets import training_panel

    X_train, y_train, X_test, y_test = digits
    net, head = build_lenet(10, 16.0, seed=5)
    start = {"net": net.state_dict(), "head": head.state_dict()}
    panel = training_panel(X_train, y_train, X_test, y_test, start=start, start_label="test", num_epochs=1,
                           train_size=256, batch_size=64, map_points=100, lr=1e-3)
    assert panel.from_trained and panel.heatup_epoch.value == 0 and "test" in panel.start.value
    net2, head2 = panel._build()
    assert all(torch.equal(a, b) for a, b in zip(net2.state_dict().values(), net.state_dict().values()))
    result = panel.train()
    assert result.history[0]["alpha"] == 4.0 and result.history[0]["lr"] == pytest.approx(1e-4)
    assert len(panel.history) == 2 and "compactness" in panel.status.value
    panel.start.value = panel.start.options[1]  # from scratch
    assert not panel.from_trained


def test_panel_reports_a_failed_run(digits):
    from heatup_lib.widgets import training_panel

    X_train, y_train, X_test, y_test = digits
    panel = training_panel(X_train, y_train, X_test, y_test, num_epochs=1, map_points=20)
    panel.lr = -1.0  # an invalid learning rate: TrainConfig refuses it
    with pytest.raises(ValueError, match="lr must be"):
        panel.train()
    assert isinstance(panel.error, ValueError) and "training failed" in panel.status.value
    assert not panel.button.disabled
