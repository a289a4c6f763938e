"""The benchmark recipe: the paper's settings, checks before training, one short run end to end on the CUB fixture."""

from __future__ import annotations

import json
import math

import pytest
import torch

from heatup_lib import benchmark as B
from heatup_lib import records
from heatup_lib.results import load_runs, results_table

pytestmark = [pytest.mark.filterwarnings("ignore:InceptionEmbedder\\(pretrained=False\\)"),
              pytest.mark.usefixtures("one_torch_thread")]

# A tiny setting: 32 px crops of 40 px images, batch 8, two epochs with the heat-up at epoch 1.
TINY = dict(num_epochs=2, batch_size=8, image_size=40, crop_size=32, eval_every=1, eval_batch_size=64)


@pytest.fixture(scope="module")
def cub_cache(tmp_path_factory):
    """A prepared cache of the CUB fixture: 4 train and 4 test classes, 6 images each, 40 px."""
    from heatup_lib.data.cache import prepare_dataset
    from trees import write_cub_tree

    root = tmp_path_factory.mktemp("cub")
    write_cub_tree(root / "tree", num_classes=8, images_per_class=6, seed=0)
    return prepare_dataset("cub200", root / "tree", root / "cache", size=40, workers=0, progress=False)


def test_recipes_are_the_papers():
    s = B.settings_for("cub200", "paper")
    t, h = s.train, s.heat_up
    assert (t.optimizer, t.lr, t.momentum, s.batch_size, s.num_epochs, h.heatup_epoch) == ("sgd", 0.004, 0.9, 32, 80, 60)
    assert (h.alpha, h.alpha * h.alpha_factor, h.lr_factor, s.embedding_dim) == (16.0, 4.0, 0.1, 64)
    assert t.bn_settle and s.pretrained and not t.class_mean_init and (s.image_size, s.crop_size) == (256, 224)
    assert s.backbone == "inception" and not (t.amp or t.fused or t.channels_last)  # on a CPU
    assert B.settings_for("cars196", "paper") == s
    sop = B.settings_for("sop", "paper").train
    assert (sop.optimizer, sop.lr, sop.adam_eps, sop.class_mean_init) == ("adam", 0.01, 0.01, True)
    assert B.RECALL_KS["sop"] == (1, 10, 100, 1000)
    # The heat-up follows the number of epochs at 60/80 unless given.
    assert [B.settings_for("cub200", "paper", num_epochs=n).heat_up.heatup_epoch for n in (2, 4, 8, 80)] == [1, 3, 6, 60]
    assert B.settings_for("cub200", "paper", num_epochs=10, heatup_epoch=9).heat_up.heatup_epoch == 9
    # The BN row's alpha 16 -> 4 is the authors' 16/sqrt(64) = 2 -> 0.5: the head divides by sqrt(D) itself.
    assert B.row_alpha("hbn", s) / math.sqrt(s.embedding_dim) == 2.0
    assert B.row_alpha("sm", s) == 1.0 and B.row_alpha("ls", s) == 1.0
    sched = B.make_schedule("hbn", s)
    assert (sched.alpha(59.99), sched.alpha(60), sched.lr_factor(59.99), sched.lr_factor(60)) == (16, 4, 1, 0.1)
    assert B.make_schedule("bn", s).alpha(79) == 16
    # The settings round-trip through the record's JSON.
    assert B.Settings.from_dict(json.loads(json.dumps(s.to_dict()))) == s


def test_the_preset_file_is_the_one_source():
    """The default preset's benchmark keys come from params/default.yaml, overrides win."""
    from heatup_lib.presets import load_preset

    p = load_preset("default")
    s = B.settings_for("cub200", "default")
    assert (s.num_epochs, s.batch_size, s.image_size, s.crop_size) == (
        p["num_epochs"], p["batch_size"], p["image_size"], p["crop_size"])
    assert (s.train.optimizer, s.train.lr, s.backbone) == (p["optimizer"], p["lr"], p["backbone"])
    assert B.settings_for("cub200", "default", lr=0.5).train.lr == 0.5


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(dataset="imagenet"), ValueError, "Unknown value 'imagenet' for argument dataset"),
    (dict(row="hxx"), ValueError, "Unknown value 'hxx' for argument row"),
    (dict(overrides=dict(alpha=0.0)), ValueError, "alpha must be a finite number > 0.0, got 0.0"),
    (dict(overrides=dict(alpha=-1.0)), ValueError, "alpha must be a finite number > 0.0, got -1.0"),
    (dict(overrides=dict(batch_size=1000)), ValueError, "batch_size=1000 is larger than the training set (24 images)"),
    (dict(overrides=dict(crop_size=48)), ValueError, "crop_size must be an integer >= 16 and <= 40, got 48"),
    (dict(cache_dir=None, data_root="/nonexistent/cub"), FileNotFoundError, "data root '/nonexistent/cub' does not exist"),
    (dict(cache_dir="/nonexistent/cache"), FileNotFoundError, "cache folder '/nonexistent/cache' does not exist"),
    (dict(cache_dir=None), ValueError, "give a data root"),
    (dict(overrides=dict(num_epochs=1)), ValueError, "heatup_epoch must be an integer in [1, num_epochs - 1 = 0]"),
    (dict(overrides=dict(compile="fast")), ValueError, "Unknown value 'fast' for argument compile"),
    (dict(overrides=dict(fused=1)), ValueError, "fused must be True or False, got 1"),
    (dict(overrides=dict(backbone="resnet")), ValueError, "Unknown value 'resnet' for argument backbone"),
])
def test_bad_parameters_fail_before_training(cub_cache, tmp_path, monkeypatch, kwargs, error, message):
    def no_training(*args, **kw):
        raise AssertionError("training started despite bad parameters")

    monkeypatch.setattr(B, "fit", no_training)
    args = dict(dataset="cub200", row="hbn", cache_dir=cub_cache)
    args.update({k: v for k, v in kwargs.items() if k != "overrides"})
    overrides = {**TINY, **kwargs.get("overrides", {})}
    with pytest.raises(error) as info:
        settings = B.settings_for("cub200", "smoke", **overrides)
        B.run_experiment(args.pop("dataset"), args.pop("row"), settings, runs_dir=tmp_path, preset="smoke",
                         progress=False, **args)
    assert message in str(info.value)
    assert not any(tmp_path.iterdir()), "nothing may be written before the parameters are checked"


def test_unknown_setting_and_device():
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['epochs'\]"):
        B.settings_for("cub200", "paper", epochs=3)
    with pytest.raises(ValueError, match="Unknown value 'fast' for argument preset"):
        B.settings_for("cub200", "fast")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            B.settings_for("cub200", "paper", device="cuda")


def test_two_epoch_run_writes_record_and_heats_up(cub_cache, tmp_path):
    settings = B.settings_for("cub200", "smoke", **TINY)
    result = B.run_experiment("cub200", "hbn", settings, cache_dir=cub_cache, runs_dir=tmp_path, preset="smoke",
                              progress=False, standin="fixture")
    run = result.run_dir
    for name in ("params.json", "history.jsonl", "metrics.json", "checkpoint.pt", "environment.json"):
        assert (run / name).is_file(), name
    history = records.read_history(run)
    assert [h["epoch"] for h in history] == [0, 1]
    lr = settings.train.lr
    # The heat-up (epoch 1 of 2): alpha 16 -> 4 and lr -> lr / 10 exactly at the epoch boundary.
    assert [h["alpha"] for h in history] == [16.0, 4.0]
    assert history[0]["alpha_steps"] == [16.0] * 3 and history[1]["alpha_steps"] == [4.0] * 3
    assert history[0]["lr"] == pytest.approx(lr) and history[1]["lr"] == pytest.approx(lr * 0.1)
    assert all(math.isfinite(h["loss"]) for h in history)
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"nmi", "recall@1", "recall@2", "recall@4", "recall@8", "map@r", "r_precision"} <= set(metrics)
    assert all(0.0 <= metrics[k] <= 1.0 for k in ("nmi", "recall@1", "map@r"))
    assert metrics["recall@1"] <= metrics["recall@2"] <= metrics["recall@4"] <= metrics["recall@8"]
    assert "recall@1" in history[0] and history[1]["recall@1"] == metrics["recall@1"]  # evaluated every epoch
    params = records.read_params(run)
    block = params["extra"]["benchmark"]
    assert (block["dataset"], block["row"], block["variant"], block["heat_up"]) == ("cub200", "hbn", "bn", True)
    assert block["data"]["train"]["num_images"] == 24 and block["data"]["train"]["images_sha256"]
    assert block["data"]["standin"] == "fixture" and block["model"]["bottleneck_bias"] is False
    assert params["config"]["optimizer"] == "adam" and params["config"]["bn_settle"] is True
    env = json.loads((run / "environment.json").read_text())
    assert env["code_fingerprint"] and "heatup_lib.benchmark" in env["code_modules"]
    # The same call again loads the record instead of training.
    again = B.run_experiment("cub200", "hbn", settings, cache_dir=cub_cache, runs_dir=tmp_path, preset="smoke",
                             progress=False, standin="fixture")
    assert again.cached and again.run_dir == run and again.metrics == result.metrics
    # Evaluating the checkpoint reproduces the recorded metrics (same weights, same centre crops).
    scores = B.evaluate_run(run)
    for key in ("recall@1", "recall@2", "map@r", "r_precision", "nmi"):
        assert scores[key] == pytest.approx(metrics[key], abs=1e-6), key
    # The run shows up in the results table, labelled with machine, date, commit and data.
    runs = load_runs(tmp_path)
    assert len(runs) == 1 and runs[0]["row"] == "hbn"
    mine = [r for r in results_table(runs, "cub200") if r["source"] != "paper"]
    assert len(mine) == 1 and mine[0]["row"] == "HBN" and mine[0]["seeds"] == [0]
    assert mine[0]["recall@1"] == [pytest.approx(100 * metrics["recall@1"])]
    assert env["date"][:10] in mine[0]["source"] and "stand-in: fixture" in mine[0]["source"]


def test_class_mean_init_runs_inside_fit_after_settling(cub_cache, tmp_path):
    """SOP's recipe reaches fit as config flags: settle, then class means, fingerprinted before both."""
    from heatup_lib.fingerprint import state_fingerprint
    from heatup_lib.heads import NormalizedSoftmax
    from heatup_lib.models import InceptionEmbedder

    settings = B.settings_for("cub200", "smoke", **{**TINY, "backbone": "inception", "num_epochs": 1, "class_mean_init": True,
                                                    "bn_settle": True})
    result = B.run_experiment("cub200", "ln", settings, cache_dir=cub_cache, runs_dir=tmp_path, preset="smoke",
                              progress=False)
    assert result.params["config"]["class_mean_init"] is True and result.params["config"]["bn_settle"] is True
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = InceptionEmbedder(64, pretrained=False)
        head = NormalizedSoftmax(64, 4, alpha=16.0, variant="ln")
    assert result.params["head"]["init_sha256"] == state_fingerprint(head)
    assert result.params["net"]["init_sha256"] == state_fingerprint(net)


def test_a_temperature_setting_replaces_the_rows_schedule(cub_cache, tmp_path):
    """Chapter 5 trains a row's head with a learned alpha: it is trained, recorded and evaluated again."""
    settings = B.settings_for("cub200", "smoke", **TINY)
    with pytest.raises(ValueError, match="plain softmax"):
        B.temperature_of("sm", settings, "learned alpha (from 16)")
    result = B.run_experiment("cub200", "ln", settings, cache_dir=cub_cache, runs_dir=tmp_path, preset="smoke",
                              temperature="learned alpha (from 16)", progress=False)
    assert "learned-alpha-from-16" in result.run_dir.name
    steps = [a for h in result.history for a in h["alpha_steps"]]
    assert steps[0] == pytest.approx(16.0, rel=1e-6) and len(set(steps)) == len(steps)  # it moves every step
    block = records.read_params(result.run_dir)["extra"]["benchmark"]
    assert block["temperature"] == "learned alpha (from 16)"
    scores = B.evaluate_run(result.run_dir)
    assert scores["recall@1"] == pytest.approx(result.metrics["recall@1"], abs=1e-6)
