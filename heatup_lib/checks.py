"""One argument checker for the whole library, in the spirit of torchvision's ``verify_str_arg``.

Every public function that takes a number, a flag or a choice checks it here, so that every bad
value fails the same way: a ``ValueError`` whose message names the argument, says what was
expected and repeats the value it got::

    >>> check_int("batch_size", 0, min_value=1)
    Traceback (most recent call last):
    ValueError: batch_size must be an integer >= 1, got 0
    >>> check_choice("split", "val", ("train", "test"))
    Traceback (most recent call last):
    ValueError: Unknown value 'val' for argument split. Valid values are ['train', 'test'].

``bool`` is never accepted where a number is expected (``True`` is an ``int`` in Python).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

__all__ = ["check_choice", "check_choices", "check_int", "check_float", "check_bool", "check_str",
           "is_integer", "is_real"]

T = TypeVar("T")


def is_integer(value: Any) -> bool:
    """True for an integral number that is not a bool (Python ints, numpy integers)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """True for a finite real number that is not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


def _bounds(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high}")
    return " and ".join(parts)


def _in_bounds(value: float, low: float | None, high: float | None, low_open: bool, high_open: bool) -> bool:
    if low is not None and (value <= low if low_open else value < low):
        return False
    return not (high is not None and (value >= high if high_open else value > high))


def check_int(name: str, value: Any, min_value: int | None = None, max_value: int | None = None) -> int:
    """``value`` as an int if it is an integer in ``[min_value, max_value]``, else ValueError."""
    if not is_integer(value) or not _in_bounds(value, min_value, max_value, False, False):
        bounds = _bounds(min_value, max_value, False, False)
        raise ValueError(f"{name} must be an integer{' ' + bounds if bounds else ''}, got {value!r}")
    return int(value)


def check_float(name: str, value: Any, min_value: float | None = None, max_value: float | None = None, *,
                min_open: bool = False, max_open: bool = False) -> float:
    """``value`` as a float if it is a finite number within the bounds (``min_open``: strictly above ``min_value``)."""
    if not is_real(value) or not _in_bounds(float(value), min_value, max_value, min_open, max_open):
        bounds = _bounds(min_value, max_value, min_open, max_open)
        raise ValueError(f"{name} must be a finite number{' ' + bounds if bounds else ''}, got {value!r}")
    return float(value)


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is True or False, else ValueError."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def check_str(name: str, value: Any, *, empty: bool = True) -> str:
    """``value`` if it is a string (non-empty unless ``empty``), else ValueError."""
    if not isinstance(value, str) or (not empty and not value):
        raise ValueError(f"{name} must be a {'' if empty else 'non-empty '}string, got {value!r}")
    return value


def check_choice(name: str, value: T, choices: Iterable[T]) -> T:
    """``value`` if it is one of ``choices``, else ValueError listing them."""
    valid = list(choices)
    if isinstance(value, bool) or value not in valid or (isinstance(value, float) and math.isnan(value)):
        raise ValueError(f"Unknown value {value!r} for argument {name}. Valid values are {valid}.")
    return value


def check_choices(name: str, values: Any, choices: Iterable[Any], min_len: int = 1) -> list:
    """``values`` as a list if it is a sequence of at least ``min_len`` items from ``choices``."""
    valid = list(choices)
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) < min_len:
        raise ValueError(f"{name} must be a list of at least {min_len} value(s) from {valid}, got {values!r}")
    for v in values:
        check_choice(name, v, valid)
    return list(values)
