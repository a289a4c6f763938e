"""Chapter 2's recipe: the settings it names, its initialisation, its jobs and their records."""

from __future__ import annotations

import math

import pytest
import torch

from heatup_lib import mnist_recipe as R
from heatup_lib.schedules import AlphaWarmUp, Constant, SmoothHeatUp, StepHeatUp

S = R.MnistSettings(train_size=600, test_size=200, num_epochs=4, heatup_epoch=3, batch_size=50,
                    warmup_images=300, snapshot_size=20)


def test_settings_are_parsed_from_their_names() -> None:
    mode, alpha, s = R.setting_of("alpha=16 heat-up", S)
    assert (mode, alpha) == ("scheduled", 16.0) and isinstance(s, AlphaWarmUp)
    assert isinstance(s.schedule, StepHeatUp) and s.epochs == pytest.approx(0.5)
    assert [s.alpha(e) for e in (0, 1, 2, 3)] == [1.0, 16.0, 16.0, 4.0]
    _, _, smooth = R.setting_of("alpha=16 smooth heat-up (linear)", S)
    inner = smooth.schedule
    assert isinstance(inner, SmoothHeatUp) and (inner.start_epoch, inner.end_epoch) == (2, 3)
    assert smooth.alpha(2.5) == pytest.approx(10.0)  # half way through the window: 16 -> 4
    assert R.setting_of("alpha=0.25", S)[2].alpha(0) == 0.25  # below 1: not warmed up
    mode, alpha, s = R.setting_of("learned alpha (from 16)", S)
    assert (mode, alpha) == ("learned", 16.0) and isinstance(s, Constant)
    assert R.setting_of("AdaCos dynamic", S)[0] == "adacos-dynamic"
    with pytest.raises(ValueError, match="Unknown setting 'alpha=hot'"):
        R.setting_of("alpha=hot", S)
    assert R.setting_names(S) == ["alpha=0.25", "alpha=4", "alpha=16", "alpha=64", "alpha=16 heat-up"]


def test_even_class_weights_are_evenly_spaced_and_seeded() -> None:
    g = torch.Generator().manual_seed(3)
    w = R.even_directions(10, g)
    assert torch.allclose(w.norm(dim=1), torch.ones(10))
    angles = torch.atan2(w[:, 1], w[:, 0]).double()
    gaps = torch.diff(torch.sort(torch.remainder(angles, 2 * math.pi)).values)
    assert torch.allclose(gaps, torch.full_like(gaps, 2 * math.pi / 10), atol=1e-6)
    _, head = R.build_lenet(10, 16.0, seed=3)
    assert torch.allclose(head.weight, R.even_directions(10, torch.Generator().manual_seed(3)))
    _, random_head = R.build_lenet(10, 16.0, seed=3, class_init="random")
    assert not torch.allclose(random_head.weight.norm(dim=1), torch.ones(10))


def test_a_job_trains_writes_its_arrays_and_is_found_again(tmp_path) -> None:
    from heatup_lib import mnist_runs

    torch.set_num_threads(1)
    jobs = mnist_runs.chapter_jobs(S, [0], preset="smoke", names=["alpha=16", "alpha=16 heat-up"])
    assert [j.keep_weights for j in jobs] == [True, False, False, False]
    kept = mnist_runs.chapter_jobs(S, [0], preset="smoke", names=["alpha=16"], keep_weights=False)
    assert [j.keep_weights for j in kept] == [False, False]  # chapter 5 keeps no weights
    assert [j.snapshot_size for j in jobs] == [0, 20, 0, 20]
    first = mnist_runs.load_or_train(jobs[:2], runs_dir=tmp_path, progress=False)
    assert [r.origin for r in first] == ["trained", "trained"]
    plain, heated = first
    assert plain.arrays["test_features"].shape == (200, 2) and plain.arrays["class_weights"].shape == (10, 2)
    assert mnist_runs.kept_weights(plain) and not mnist_runs.kept_weights(heated)
    assert len(heated.history) == 4 and len(heated.history[-1]["snapshot"]) == 20
    assert "snapshot" not in plain.history[-1] and not heated.stale
    # every epoch was evaluated on the test digits, and the final numbers are the last epoch's
    assert all("test_accuracy" in h for h in plain.history)
    assert plain.metrics["recall@1"] == plain.history[-1]["recall@1"]
    # the record's numbers are those of its arrays
    again = R.embedding_numbers(torch.tensor(plain.arrays["test_features"]),
                                torch.tensor(plain.arrays["test_labels"]).long(),
                                torch.tensor(plain.arrays["class_weights"]))
    assert again["test_accuracy"] == pytest.approx(plain.metrics["test_accuracy"])
    second = mnist_runs.load_or_train(jobs[:2], runs_dir=tmp_path, progress=False)
    assert [r.origin for r in second] == ["local", "local"] and second[0].path == plain.path
