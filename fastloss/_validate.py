"""Argument checks and normalisation shared by every loss.

Each check raises ValueError (shapes, values, options) or TypeError (dtypes,
array types) naming the argument and what was expected. What depends on the
backend (array types, dtypes, devices) lives on the backend objects of
``fastloss._backend``.
"""

from __future__ import annotations

import math
import numbers

REDUCTIONS = ("mean", "sum", "none")


def check_reduction(reduction) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none'; got {reduction!r}")
    return reduction


def check_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int; got {value!r}")
    return int(value)


def check_probability(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float in [0, 1]; got {value!r}")
    value = float(value)
    if not 0.0 <= value <= 1.0 or math.isnan(value):
        raise ValueError(f"{name} must be in [0, 1]; got {value}")
    return value


def check_real(value, name: str, *, minimum: float | None = None) -> float:
    """A finite real number (at least ``minimum`` when given), as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {value!r}")
    value = float(value)
    if not math.isfinite(value) or (minimum is not None and value < minimum):
        bound = "" if minimum is None else f" >= {minimum:g}"
        raise ValueError(f"{name} must be a finite number{bound}; got {value}")
    return value
