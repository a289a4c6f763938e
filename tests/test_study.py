"""Chapter 5's methods: each a named setting of the family it is listed in."""

from __future__ import annotations

import pytest


def test_every_study_method_is_a_named_setting_of_its_family():
    from heatup_lib.schedules import named_schedule
    from heatup_lib.study import study_methods

    methods = study_methods([4.0, 64], heatup_alpha=16)
    assert methods["grid"] == ["alpha=4", "alpha=64"] and methods["heat-up"] == ["alpha=16 heat-up"]
    modes = {name: named_schedule(name, 10, 8)[0] for family in methods.values() for name in family}
    assert [modes[m] for m in methods["adaptive"]] == ["learned", "learned", "adacos-fixed", "adacos-dynamic"]
    assert all(modes[m] == "scheduled" for m in methods["grid"] + methods["heat-up"] + methods["smooth"])
    # the smooth heat-ups all start at 16 and end at 16 / 4, each along its own path
    ends = {m: (named_schedule(m, 10, 8)[2].alpha(0), named_schedule(m, 10, 8)[2].alpha(10)) for m in methods["smooth"]}
    assert set(ends.values()) == {(16.0, 4.0)}
    assert len({named_schedule(m, 10, 8)[2].alpha(7.0) for m in methods["smooth"]}) == 3
    with pytest.raises(ValueError, match="alpha must be a finite number > 0.0, got -1"):
        study_methods([-1])


def test_mnist_parameters_put_the_studys_sizes_over_the_recipes():
    from heatup_lib.mnist_recipe import MnistSettings
    from heatup_lib.study import mnist_parameters

    p = {"mnist_lr": 0.002, "mnist_train_size": 60000, "study_alphas": [4.0], "study_mnist_train_size": 900,
         "study_mnist_test_size": 300, "study_mnist_num_epochs": 3, "study_mnist_heatup_epoch": 2,
         "study_mnist_warmup_images": 50, "mnist_snapshot_size": 100}
    s = MnistSettings.from_parameters(mnist_parameters(p))
    assert (s.train_size, s.test_size, s.num_epochs, s.heatup_epoch, s.warmup_images) == (900, 300, 3, 2, 50)
    assert s.alphas == (4.0,) and s.lr == 0.002  # the recipe's other keys are kept
