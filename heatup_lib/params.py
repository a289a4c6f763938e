"""Validation of notebook parameters, so that a bad value injected by papermill fails at once, by name."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["check_choice", "check_choices", "check_int", "check_float", "check_bool", "check_str"]


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``choices``, else raise a ValueError naming both."""
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"parameter {name}={value!r} is not accepted; expected one of {choices}")
    return value


def check_choices(name: str, values: Any, choices: Iterable[Any], min_len: int = 1) -> list:
    """Return ``values`` as a list if it is a list of at least ``min_len`` items from ``choices``."""
    choices = list(choices)
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ValueError(f"parameter {name}={values!r} must be a list of values from {choices}")
    if len(values) < min_len:
        raise ValueError(f"parameter {name}={values!r} must hold at least {min_len} value(s) from {choices}")
    for v in values:
        if v not in choices:
            raise ValueError(f"parameter {name} holds {v!r}, which is not accepted; expected values from {choices}")
    return list(values)


def check_int(name: str, value: Any, min_value: int | None = None, max_value: int | None = None) -> int:
    """Return ``value`` if it is an int within [min_value, max_value]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"parameter {name}={value!r} must be an integer")
    _check_range(name, value, min_value, max_value)
    return value


def check_float(name: str, value: Any, min_value: float | None = None, max_value: float | None = None,
                strict_min: bool = False) -> float:
    """Return ``value`` as a float if it is a finite number within the bounds (``strict_min``: > min)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"parameter {name}={value!r} must be a finite number")
    if strict_min and min_value is not None and not value > min_value:
        raise ValueError(f"parameter {name}={value!r} must be > {min_value}")
    _check_range(name, value, None if strict_min else min_value, max_value)
    return float(value)


def check_bool(name: str, value: Any) -> bool:
    """Return ``value`` if it is True or False."""
    if not isinstance(value, bool):
        raise ValueError(f"parameter {name}={value!r} must be True or False")
    return value


def check_str(name: str, value: Any) -> str:
    """Return ``value`` if it is a string."""
    if not isinstance(value, str):
        raise ValueError(f"parameter {name}={value!r} must be a string")
    return value


def _check_range(name: str, value: float, lo: float | None, hi: float | None) -> None:
    if lo is not None and value < lo:
        raise ValueError(f"parameter {name}={value!r} must be >= {lo}")
    if hi is not None and value > hi:
        raise ValueError(f"parameter {name}={value!r} must be <= {hi}")
