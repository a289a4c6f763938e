"""The one argument checker: every bad value fails with its name, what was expected, and the value."""

from __future__ import annotations

import numpy as np
import pytest

from heatup_lib import checks


@pytest.mark.parametrize("call, message", [
    (lambda: checks.check_choice("dataset", "imagenet", ["cub200", "cars196"]),
     r"Unknown value 'imagenet' for argument dataset. Valid values are \['cub200', 'cars196'\]."),
    (lambda: checks.check_int("num_epochs", 2.5, 1), r"num_epochs must be an integer >= 1, got 2.5"),
    (lambda: checks.check_int("num_epochs", 0, 1), r"num_epochs must be an integer >= 1, got 0"),
    (lambda: checks.check_int("n", True, 0), r"n must be an integer >= 0, got True"),
    (lambda: checks.check_int("k", 11, 1, 10), r"k must be an integer >= 1 and <= 10, got 11"),
    (lambda: checks.check_float("alpha", 0.0, 0.0, min_open=True), r"alpha must be a finite number > 0.0, got 0.0"),
    (lambda: checks.check_float("m", 1.0, 0.0, 1.0, max_open=True), r"m must be a finite number >= 0.0 and < 1.0, got 1.0"),
    (lambda: checks.check_float("lr", float("nan")), r"lr must be a finite number, got nan"),
    (lambda: checks.check_float("lr", float("inf"), 0.0), r"lr must be a finite number >= 0.0, got inf"),
    (lambda: checks.check_float("lr", False), r"lr must be a finite number, got False"),
    (lambda: checks.check_float("lr", "0.1"), r"lr must be a finite number, got '0.1'"),
    (lambda: checks.check_bool("pretrained", "yes"), r"pretrained must be True or False, got 'yes'"),
    (lambda: checks.check_bool("pretrained", 1), r"pretrained must be True or False, got 1"),
    (lambda: checks.check_str("root", 3), r"root must be a string, got 3"),
    (lambda: checks.check_str("root", "", empty=False), r"root must be a non-empty string, got ''"),
    (lambda: checks.check_choices("rows", "hbn", ["sm", "hbn"]), r"rows must be a list of at least 1 value"),
    (lambda: checks.check_choices("rows", [], ["sm", "hbn"]), r"rows must be a list of at least 1 value"),
    (lambda: checks.check_choices("rows", ["hbn", "xx"], ["sm", "hbn"]), r"Unknown value 'xx' for argument rows"),
    (lambda: checks.check_choice("flag", True, [1, 2]), r"Unknown value True for argument flag"),
])
def test_checks_name_the_argument_the_expectation_and_the_value(call, message) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_checks_pass_good_values_through() -> None:
    assert checks.check_choice("d", "a", "ab") == "a"
    assert checks.check_int("n", 3, 1, 5) == 3 and type(checks.check_int("n", np.int64(3))) is int
    assert checks.check_float("x", 2, 0, min_open=True) == 2.0 and type(checks.check_float("x", 2)) is float
    assert checks.check_float("x", np.float32(0.5), 0.0, 1.0) == 0.5
    assert checks.check_choices("v", ("a",), "ab") == ["a"]
    assert checks.check_bool("b", False) is False and checks.check_str("s", "") == ""
    assert checks.is_integer(np.int32(1)) and not checks.is_integer(True) and not checks.is_integer(1.0)
    assert checks.is_real(1) and not checks.is_real(float("nan")) and not checks.is_real(False)
