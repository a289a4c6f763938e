"""The benchmark recipes, validation, one short run end to end on the CUB fixture, results tables and the retrieval gallery."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from heatup_lib import benchmark as B
from heatup_lib import records

pytestmark = [pytest.mark.filterwarnings("ignore:InceptionEmbedder\\(pretrained=False\\)"),
              pytest.mark.usefixtures("one_torch_thread")]

# A tiny setting: 32 px crops of 40 px images, batch 8, two epochs with the heat-up at epoch 1.
TINY = dict(num_epochs=2, batch_size=8, image_size=40, crop_size=32, eval_every=1, eval_batch_size=64)


@pytest.fixture(scope="module")
def cub_cache(tmp_path_factory):
    """A prepared cache of the CUB fixture: 4 train and 4 test classes, 6 images each, 40 px."""
    from heatup_lib.data.cache import prepare_dataset
    from heatup_lib.data.fixtures import write_cub_tree

    root = tmp_path_factory.mktemp("cub")
    write_cub_tree(root / "tree", num_classes=8, images_per_class=6, seed=0)
    return prepare_dataset("cub200", root / "tree", root / "cache", size=40, workers=0, progress=False)


def test_recipes_are_the_papers():
    s = B.settings_for("cub200", "paper")
    assert (s.optimizer, s.lr, s.momentum, s.batch_size, s.num_epochs, s.heatup_epoch) == ("sgd", 0.004, 0.9, 32, 80, 60)
    assert (s.alpha, s.alpha * s.alpha_factor, s.lr_factor, s.embedding_dim) == (16.0, 4.0, 0.1, 64)
    assert s.bn_settle and s.pretrained and not s.class_mean_init and (s.image_size, s.crop_size) == (256, 224)
    assert B.settings_for("cars196", "paper") == s
    sop = B.settings_for("sop", "paper")
    assert (sop.optimizer, sop.lr, sop.adam_eps, sop.class_mean_init) == ("adam", 0.01, 0.01, True)
    assert B.RECIPES["sop"].recall_ks == (1, 10, 100, 1000)
    # The heat-up follows the number of epochs at 60/80 unless given.
    assert [B.settings_for("cub200", "paper", num_epochs=n).heatup_epoch for n in (2, 4, 8, 80)] == [1, 3, 6, 60]
    assert B.settings_for("cub200", "paper", num_epochs=10, heatup_epoch=9).heatup_epoch == 9
    # The BN row's alpha 16 -> 4 is the authors' 16/sqrt(64) = 2 -> 0.5: the head divides by sqrt(D) itself.
    assert B.row_alpha("hbn", s) / math.sqrt(s.embedding_dim) == 2.0
    assert B.row_alpha("sm", s) == 1.0 and B.row_alpha("ls", s) == 1.0
    sched = B.make_schedule("hbn", s)
    assert (sched.alpha(59.99), sched.alpha(60), sched.lr_factor(59.99), sched.lr_factor(60)) == (16, 4, 1, 0.1)
    assert B.make_schedule("bn", s).alpha(79) == 16


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(dataset="imagenet"), ValueError, "dataset must be one of"),
    (dict(row="hxx"), ValueError, "row/variant must be one of"),
    (dict(overrides=dict(alpha=0.0)), ValueError, "alpha must be a finite number > 0, got 0.0"),
    (dict(overrides=dict(alpha=-1.0)), ValueError, "alpha must be a finite number > 0, got -1.0"),
    (dict(overrides=dict(batch_size=1000)), ValueError, "batch_size=1000 is larger than the training set (24 images)"),
    (dict(overrides=dict(crop_size=48)), ValueError, "crop_size must be <= image_size=40"),
    (dict(cache_dir=None, data_root="/nonexistent/cub"), FileNotFoundError, "data root '/nonexistent/cub' does not exist"),
    (dict(cache_dir="/nonexistent/cache"), FileNotFoundError, "cache folder '/nonexistent/cache' does not exist"),
    (dict(cache_dir=None), ValueError, "give a data root"),
    (dict(overrides=dict(num_epochs=1)), ValueError, "heats up, so heatup_epoch must lie in [1, num_epochs - 1 = 0]"),
    (dict(overrides=dict(compile="fast")), ValueError, "compile must be one of ['off', 'default', 'reduce-overhead', 'max-autotune'], got 'fast'"),
    (dict(overrides=dict(fused=1)), ValueError, "fused must be True, False or None (automatic), got 1"),
])
def test_bad_parameters_fail_before_training(cub_cache, tmp_path, monkeypatch, kwargs, error, message):
    import heatup_lib.train

    def no_training(*args, **kw):
        raise AssertionError("training started despite bad parameters")

    monkeypatch.setattr(heatup_lib.train, "fit", no_training)
    args = dict(dataset="cub200", row="hbn", cache_dir=cub_cache, overrides=TINY)
    args.update({k: v for k, v in kwargs.items() if k != "overrides"})
    args["overrides"] = {**TINY, **kwargs.get("overrides", {})}
    with pytest.raises(error) as info:
        B.run_experiment(args.pop("dataset"), args.pop("row"), runs_dir=tmp_path, preset="smoke",
                         progress=False, **args)
    assert message in str(info.value)
    assert not any(tmp_path.iterdir()), "nothing may be written before the parameters are checked"


def test_unknown_setting_and_device():
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['epochs'\]"):
        B.settings_for("cub200", "paper", epochs=3)
    with pytest.raises(ValueError, match="preset must be one of"):
        B.settings_for("cub200", "fast")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            B.validate_settings("cub200", "hbn", B.settings_for("cub200"), device="cuda", cache_dir=".")


def test_two_epoch_run_writes_record_and_heats_up(cub_cache, tmp_path):
    result = B.run_experiment("cub200", "hbn", cache_dir=cub_cache, runs_dir=tmp_path, preset="smoke",
                              overrides=TINY, progress=False, standin="fixture")
    run = result.run_dir
    for name in ("params.json", "history.jsonl", "metrics.json", "checkpoint.pt", "environment.json"):
        assert (run / name).is_file(), name
    history = records.read_history(run)
    assert [h["epoch"] for h in history] == [0, 1]
    lr = B.settings_for("cub200", "smoke").lr
    # The heat-up (epoch 1 of 2): alpha 16 -> 4 and lr -> lr / 10 exactly at the epoch boundary.
    assert [h["alpha"] for h in history] == [16.0, 4.0]
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
    # The same call again loads the record instead of training.
    again = B.run_experiment("cub200", "hbn", cache_dir=cub_cache, runs_dir=tmp_path, preset="smoke",
                             overrides=TINY, progress=False, standin="fixture")
    assert again.cached and again.run_dir == run and again.metrics == result.metrics
    # Evaluating the checkpoint reproduces the recorded metrics (same weights, same centre crops).
    scores = B.evaluate_run(run)
    for key in ("recall@1", "recall@2", "map@r", "r_precision", "nmi"):
        assert scores[key] == pytest.approx(metrics[key], abs=1e-6), key
    # The run shows up in the results table, labelled with machine, date, commit and data.
    runs = B.load_runs(tmp_path)
    assert len(runs) == 1 and runs[0]["row"] == "hbn"
    table = B.results_table(runs, "cub200")
    mine = [r for r in table if r["source"] != "paper"]
    assert len(mine) == 1 and mine[0]["row"] == "HBN"
    assert mine[0]["recall@1"] == pytest.approx(100 * metrics["recall@1"])
    env = json.loads((run / "environment.json").read_text())
    assert env["date"][:10] in mine[0]["source"] and "stand-in: fixture" in mine[0]["source"]


def test_class_mean_init_runs_inside_fit_after_settling(cub_cache, tmp_path):
    """SOP's recipe reaches fit as config flags: settle, then class means, fingerprinted before both."""
    from heatup_lib.heads import NormalizedSoftmax
    from heatup_lib.models import InceptionEmbedder
    from heatup_lib.train import state_fingerprint

    over = {**TINY, "num_epochs": 1, "class_mean_init": True, "bn_settle": True}
    result = B.run_experiment("cub200", "ln", cache_dir=cub_cache, runs_dir=tmp_path, preset="smoke",
                              overrides=over, progress=False)
    assert result.params["config"]["class_mean_init"] is True and result.params["config"]["bn_settle"] is True
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = InceptionEmbedder(64, pretrained=False)
        head = NormalizedSoftmax(64, 4, alpha=16.0, variant="ln")
    assert result.params["head"]["init_sha256"] == state_fingerprint(head)
    assert result.params["net"]["init_sha256"] == state_fingerprint(net)


def test_results_table_and_markdown():
    run = {"dataset": "cars196", "row": "hbn", "preset": "paper", "path": "r1",
           "metrics": {"nmi": 0.5, "recall@1": 0.6, "recall@2": 0.7, "recall@4": 0.8},
           "environment": {"device_name": "NVIDIA H200", "date": "2026-11-28T20:00:00+00:00",
                           "git_commit": "0123456789abcdef", "world_size": 1},
           "data": {"dataset": "cars196", "train": {"num_images": 8054, "images_sha256": "abcdef0123"}}}
    table = B.results_table([run], "cars196")
    assert [r["row"] for r in table] == ["SM", "LN", "BN", "HLN", "HBN", "HBN", "ProxyNCA"]
    assert table[4] == {"row": "HBN", "source": "paper", "nmi": 68.10, "recall@1": 74.70, "recall@2": 83.90,
                        "recall@4": 89.77}
    assert table[5]["recall@1"] == pytest.approx(60.0) and table[5]["nmi"] == pytest.approx(50.0)
    label = table[5]["source"]
    assert "NVIDIA H200" in label and "2026-11-28" in label and "0123456789ab" in label and "abcdef01" in label
    md = B.results_markdown(table)
    assert md.splitlines()[0] == "| row | source | NMI | R@1 | R@2 | R@4 |"
    assert "| HBN | paper | 68.10 | 74.70 | 83.90 | 89.77 |" in md and "60.00" in md
    assert B.table_metrics("sop") == ("nmi", "recall@1", "recall@10", "recall@100")
    assert B.results_table([], "sop", include_paper=False) == []
    assert B.results_markdown([]) == "_No results to show._"
    # The paper's HBN row is the best of its table on every dataset (SPEC §3) -- the data says so too.
    for ds, rows in B.PAPER_RESULTS.items():
        assert max(rows, key=lambda r: rows[r]["recall@1"]) == "hbn", ds


def test_retrieval_gallery_marks_right_and_wrong():
    from heatup_lib.plots import nearest_neighbours, retrieval_gallery

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(12, 5))
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    images = rng.integers(0, 256, size=(12, 8, 8, 3), dtype=np.uint8)
    queries, k = [0, 4, 10], 3
    fig = retrieval_gallery(images, labels, emb, queries, k=k)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    for r, q in enumerate(queries):
        sims = unit @ unit[q]
        sims[q] = -np.inf
        nbrs = np.argsort(-sims)[:k]  # brute force
        assert list(nearest_neighbours(emb, [q], k)[0]) == list(nbrs)
        kinds = [fig.axes[r * (k + 1) + c].get_gid() for c in range(k + 1)]
        assert kinds == ["query"] + ["right" if labels[j] == labels[q] else "wrong" for j in nbrs]
    with pytest.raises(ValueError, match="k must be in"):
        retrieval_gallery(images, labels, emb, [0], k=12)
