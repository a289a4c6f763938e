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
