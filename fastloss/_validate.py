"""Argument checks and normalisation shared by every loss.

Each check raises ValueError (shapes, values, options) or TypeError (dtypes,
array types) naming the argument and what was expected. What depends on the
backend (array types, dtypes, devices) lives on the backend objects of
``fastloss._backend``.
"""

from __future__ import annotations

import functools
import math
import numbers

import numpy as np

REDUCTIONS = ("mean", "sum", "none")
_FLOAT32, _FLOAT64 = np.dtype(np.float32), np.dtype(np.float64)
INT64 = np.dtype(np.int64)
_BOOLS = (bool, np.bool_)
_NDARRAY = np.ndarray


@functools.cache
def dtype_name(dtype) -> str:
    """``dtype.name``, cached per dtype: NumPy 2 computes it in Python, about 2 µs a call."""
    return dtype.name


# The common case, recognised without converting anything: the checks below
# accept only arguments that the full checks would accept unchanged, so a
# call that fails one takes the full path and gets its error there. They run
# on every call, hence one function each and as few attribute look-ups as
# possible.


def plain_floats(first, second, out) -> bool:
    """True for ``plain_float(first, out)`` and ``second`` a C-contiguous
    ``numpy.ndarray`` of ``first``'s shape and dtype (None is not one)."""
    return (
        type(second) is _NDARRAY and plain_float(first, out) and second.dtype is first.dtype
        and second.flags.c_contiguous and second.shape == first.shape
    )


def typed_floats(first, second, out) -> bool:
    """True for ``typed_float(first, out)``, ``first`` of one or two dimensions, and
    ``second`` a ``numpy.ndarray`` of its dtype: arrays that a compiled small call types and
    checks (``fastloss.backends.numba.elementwise``; each number of dimensions is a
    compilation of its own, half a second)."""
    return (type(second) is _NDARRAY and typed_float(first, out) and 0 < first.ndim <= 2
            and second.dtype is first.dtype)


def typed_rows(x, labels, out) -> bool:
    """True for ``typed_float(x, out)`` and ``labels`` a ``numpy.ndarray`` of int64: arrays
    that a compiled small call of a loss over rows types and checks."""
    return type(labels) is _NDARRAY and typed_float(x, out) and labels.dtype is INT64


def typed_float(first, out) -> bool:
    """True for ``first`` a ``numpy.ndarray`` of native float32 or float64 and ``out`` None or
    one of its dtype: what a compiled small call can type (it checks the rest)."""
    if type(first) is not _NDARRAY:
        return False
    dtype = first.dtype
    return ((dtype is _FLOAT32 or dtype is _FLOAT64)
            and (out is None or (type(out) is _NDARRAY and out.dtype is dtype)))


def plain_float(first, out) -> bool:
    """True when ``first`` is a C-contiguous ``numpy.ndarray`` of native float32
    or float64, and ``out`` None or a writeable one of the same shape and dtype."""
    if type(first) is not _NDARRAY:
        return False
    dtype = first.dtype
    if (dtype is not _FLOAT32 and dtype is not _FLOAT64) or not first.flags.c_contiguous:
        return False
    if out is None:
        return True
    if type(out) is not _NDARRAY or out.dtype is not dtype:
        return False
    flags = out.flags
    return flags.c_contiguous and flags.writeable and out.shape == first.shape


def plain_rows(x, labels, out) -> bool:
    """True for ``plain_float(x, out)`` rows ``(N, k)`` with ``k >= 1`` and
    C-contiguous int64 ``labels`` of shape ``(N,)``."""
    if not plain_float(x, out) or x.ndim != 2:
        return False
    rows, classes = x.shape
    return (classes > 0 and type(labels) is _NDARRAY and labels.dtype is INT64
            and labels.flags.c_contiguous and labels.shape == (rows,))


def plain_reduction(reduction) -> bool:
    """True for "mean" and "sum" (the common case returns a scalar)."""
    return type(reduction) is str and (reduction == "mean" or reduction == "sum")


def known_reduction(reduction) -> bool:
    """True for "mean", "sum" and "none" (the short paths' reductions, "none" without the
    compiled small calls)."""
    return type(reduction) is str and reduction in REDUCTIONS


def check_reduction(reduction, choices: tuple[str, ...] = REDUCTIONS) -> str:
    """``reduction``, one of the strings ``choices``."""
    if not isinstance(reduction, str) or reduction not in choices:
        named = ", ".join(repr(choice) for choice in choices[:-1])
        raise ValueError(f"reduction must be {named} or {choices[-1]!r}; got {reduction!r}")
    return reduction


def check_margin_power(p) -> int:
    """The multi-class hinge's exponent, 1 or 2, as an int: TypeError unless a real number (an
    int or a float, not a bool; see :func:`_number`), ValueError unless 1 or 2."""
    p = _number(p)
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError(f"p must be a real number, 1 or 2; got {p!r}")
    if p not in (1, 2):
        raise ValueError(f"p must be 1 or 2; got {p!r}")
    return int(p)


def _number(value):
    """The number in a 0-d array or tensor (``value.item()``), where NumPy and PyTorch take
    one for a number; anything else as it is. The checks then judge the number: a bool is
    never an int, a complex never real."""
    return value.item() if getattr(value, "ndim", None) == 0 and hasattr(value, "item") else value


def check_bool(value, name: str) -> bool:
    """``value`` as a Python bool: TypeError unless a bool (NumPy's included)."""
    if not isinstance(value, _BOOLS):
        raise TypeError(f"{name} must be a bool; got {value!r}")
    return bool(value)


def check_int(value, name: str) -> int:
    """``value`` as a Python int: TypeError unless an integer (an int, a NumPy integer, a 0-d
    integer array or tensor: :func:`_number`), ValueError unless it fits in int64 (what the
    kernels take, and what a label is compared with)."""
    value = _number(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int; got {value!r}")
    value = int(value)
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"{name} must fit in int64, [-2**63, 2**63); got {value}")
    return value


def check_real_array(values, name: str) -> None:
    """TypeError unless the array ``values`` holds real numbers: floats (bfloat16 too) or
    integers (weights)."""
    if not (values.dtype.kind in "fiu" or values.dtype.name == "bfloat16"):
        raise TypeError(f"{name} must be a real-valued array; got dtype {values.dtype}")


def check_probability_target(target, logits_shape, ignore_index: int | None = None) -> None:
    """A floating-point cross-entropy ``target`` must be class probabilities of the
    logits' shape: TypeError for a 1-D one (class indices given as floats), else
    ValueError for another shape, or for an ``ignore_index`` >= 0 (it applies to class
    indices only; PyTorch refuses it too; None: none given)."""
    if target.ndim == 1:
        raise TypeError(
            f"target of shape {target.shape} holds class indices, which must be integers; "
            f"got dtype {target.dtype} (convert with target.astype('int64'), or give class "
            f"probabilities of the logits' shape {tuple(logits_shape)})"
        )
    if target.shape != tuple(logits_shape):
        raise ValueError(
            f"target of class probabilities must have the shape of logits "
            f"{tuple(logits_shape)}; got {target.shape}"
        )
    if ignore_index is not None and ignore_index >= 0:
        raise ValueError(
            f"ignore_index applies to class-index targets only; got ignore_index={ignore_index} "
            "with a target of class probabilities"
        )


def _as_float(value: numbers.Real) -> float:
    """A real number as a float; an integer past float's range as an infinity (which the
    checks refuse with the others), not Python's OverflowError."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def check_probability(value, name: str) -> float:
    if type(value) is not float:  # as check_real's
        value = _number(value)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a float in [0, 1]; got {value!r}")
        value = _as_float(value)
    if not 0.0 <= value <= 1.0:  # NaN too
        raise ValueError(f"{name} must be in [0, 1]; got {value}")
    return value


def check_real(value, name: str, *, minimum: float | None = None,
               above: bool = False) -> float:
    """A finite real number (at least ``minimum`` when given; ``above`` it with ``above``),
    as a float; a 0-d array or tensor's too (:func:`_number`)."""
    if type(value) is not float:  # a float skips the number ABC's check (a third of a call)
        value = _number(value)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a real number; got {value!r}")
        value = _as_float(value)
    # Comparisons, not math.isfinite: torch.compile traces them on symbolic floats.
    if not -math.inf < value < math.inf or (
        minimum is not None and (value <= minimum if above else value < minimum)
    ):
        bound = "" if minimum is None else f" {'>' if above else '>='} {minimum:g}"
        raise ValueError(f"{name} must be a finite number{bound}; got {value}")
    return value
