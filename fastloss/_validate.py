"""Argument checks and normalisation shared by every loss.

Each check raises ValueError (shapes, values, options) or TypeError (dtypes,
array types) naming the argument and what was expected.
"""

from __future__ import annotations

import contextlib
import math
import numbers

import numpy as np

from fastloss import _registry

REDUCTIONS = ("mean", "sum", "none")
_HOST_DTYPES = ("float16", "float32", "float64")
_DEVICE_DTYPES = ("float16", "bfloat16", "float32", "float64")
_FLOAT32, _FLOAT64 = np.dtype(np.float32), np.dtype(np.float64)
INT64 = np.dtype(np.int64)


# The common case, recognised without converting anything: the checks below
# accept only arguments that the full checks would accept unchanged, so a
# call that fails one takes the full path and gets its error there. They run
# on every call, hence one function each and as few attribute look-ups as
# possible.


def plain(x, dtype) -> bool:
    """True for a C-contiguous ``numpy.ndarray`` (not a subclass) of ``dtype``,
    a NumPy dtype object compared by identity (native byte order)."""
    return type(x) is np.ndarray and x.dtype is dtype and x.flags.c_contiguous


def plain_floats(first, second, out) -> bool:
    """True when ``first`` is a C-contiguous ``numpy.ndarray`` of native float32
    or float64, ``second`` (if not None) one of the same shape and dtype, and
    ``out`` None or a writeable one of the same shape and dtype."""
    if type(first) is not np.ndarray:
        return False
    dtype, shape = first.dtype, first.shape
    if (dtype is not _FLOAT32 and dtype is not _FLOAT64) or not first.flags.c_contiguous:
        return False
    if second is not None and not (plain(second, dtype) and second.shape == shape):
        return False
    if out is None:
        return True
    if type(out) is not np.ndarray or out.dtype is not dtype or out.shape != shape:
        return False
    flags = out.flags
    return flags.c_contiguous and flags.writeable


def plain_reduction(reduction) -> bool:
    """True for "mean" and "sum" (the common case returns a scalar)."""
    return type(reduction) is str and (reduction == "mean" or reduction == "sum")


def check_reduction(reduction) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none'; got {reduction!r}")
    return reduction


def array_module(backend: str):
    """NumPy for the CPU backends, CuPy for cuda."""
    if backend == "cuda":
        import cupy

        return cupy
    return np


def as_array(x, name: str, backend: str):
    """``x`` as an array of ``backend``'s library, without copying array inputs.

    Host array-likes (NumPy arrays, lists, CPU tensors) go to the CPU backends;
    device arrays to cuda. The other way round is a TypeError, never a hidden
    copy between host and device.
    """
    if backend == "cuda":
        from fastloss.backends.cuda._arrays import as_device_array

        return as_device_array(x, name)
    if _registry.is_device_array(x):
        raise TypeError(
            f"{name} is a {type(x).__module__}.{type(x).__name__} in GPU memory, but "
            f"backend={backend!r} runs on the CPU: use backend='cuda' (or 'auto'), or move it "
            f"to the host with cupy.asnumpy({name}) / {name}.cpu()"
        )
    try:
        return np.asarray(x)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"{name} must be an array, got {type(x).__name__}: {exc}") from exc


def device_scope(backend: str, array):
    """Where a loss's work runs: the input's GPU for cuda (allocations included)."""
    return array.device if backend == "cuda" else contextlib.nullcontext()


def check_same_device(backend: str, *arrays) -> None:
    """Device arrays must all live on one GPU (ValueError otherwise)."""
    if backend == "cuda":
        from fastloss.backends.cuda._arrays import check_same_device

        check_same_device(*arrays)


def check_float(x, name: str, backend: str):
    """Require a floating-point dtype that ``backend`` computes in."""
    allowed = _DEVICE_DTYPES if backend == "cuda" else _HOST_DTYPES
    if x.dtype.name not in allowed:
        raise TypeError(
            f"{name} must be a floating-point array ({', '.join(allowed)}); got dtype {x.dtype}"
        )


def compute_dtype(dtype, backend: str):
    """The dtype the kernel sees: native byte order; float16 becomes float32 on the CPU
    (computed in float32, rounded once), and stays native on the GPU."""
    if backend != "cuda" and dtype.name == "float16":
        return np.dtype(np.float32)
    return dtype.newbyteorder("=")


def check_out(out, name: str, like, backend: str):
    """``out`` must be an array of ``like``'s library, shape and dtype."""
    if out is None:
        return None
    if backend != "cuda" and not isinstance(out, np.ndarray):
        # Anything else would be converted to a new array that the caller never sees.
        raise TypeError(f"{name} must be a NumPy array to write into; got {type(out).__name__}")
    out = as_array(out, name, backend)
    if out.shape != like.shape:
        raise ValueError(
            f"{name} must have shape {like.shape} (that of the input); got {out.shape}"
        )
    if out.dtype != like.dtype:
        raise TypeError(f"{name} must have dtype {like.dtype} (that of the input); got {out.dtype}")
    if isinstance(out, np.ndarray) and not out.flags.writeable:
        raise ValueError(f"{name} must be writeable")
    return out


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


# A unit of a float dtype times a Python float is that float rounded once to
# the dtype (NumPy 2 keeps a scalar's dtype against a Python float), at a
# fifth of the cost of dtype.type(value); NumPy 1 promotes to float64.
_UNITS = {dtype: dtype.type(1) for dtype in (_FLOAT32, _FLOAT64)}
_UNIT_ROUNDS = type(_UNITS[_FLOAT32] * 1.5) is np.float32


def host_scalar(loss, dtype):
    """A CPU backend's float64 loss as a NumPy scalar of ``dtype``, rounded once."""
    if _UNIT_ROUNDS and type(loss) is float and dtype in _UNITS:
        return _UNITS[dtype] * loss
    return dtype.type(loss)


def result_scalar(loss, dtype, xp):
    """A backend's loss as the caller's scalar: a float64 rounded once to
    ``dtype``; a device loss is already a 0-d array of ``dtype``."""
    return host_scalar(loss, dtype) if xp is np else loss
