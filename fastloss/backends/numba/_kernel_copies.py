"""Compiling one Numba kernel twice: serial for small inputs, threaded for large ones.

A kernel's ``prange`` loop runs over fixed blocks whose partial sums are added
in block order afterwards, so running the loop serially or on Numba's threads
gives the same bits. The serial copy is compiled without ``parallel=True``
(where ``prange`` is ``range``): it starts no threads, and it compiles in about
half the time of the threaded copy, which an input only compiles once it is
large enough to use it.
"""

import hashlib
import types
from pathlib import Path

import numpy as np
from numba import njit

from fastloss.backends.numba._threading import serialised


def copy(function, namespace: dict, qualname: str):
    """``function`` with its globals looked up in ``namespace``, named ``qualname``
    (Numba's on-disk cache keys a function's compiled code by its qualified name)."""
    code = function.__code__
    duplicate = types.FunctionType(code, namespace, code.co_name)
    duplicate.__qualname__ = qualname
    return duplicate


def source_tag(*files: str) -> str:
    """A digest of ``files`` (names in this package's folder, or paths), in order (Numba's
    cache notices edits to a cached function's own file only): a tag for kernels that use
    code from other files."""
    here = Path(__file__).parent
    return hashlib.sha256(b"".join((here / name).read_bytes() for name in files)).hexdigest()[:12]


def serial_and_parallel(function, namespace: dict, tag: str = ""):
    """``(serial, parallel)``: ``function`` compiled without and with ``parallel=True``
    (the threaded copy behind a lock where Numba's threading layer needs one)."""
    name = function.__name__ + (f"__{tag}" if tag else "")
    serial, parallel = (
        njit(cache=True, error_model="numpy", parallel=parallel)(
            copy(function, namespace, f"{name}__{'parallel' if parallel else 'serial'}")
        )
        for parallel in (False, True)
    )
    return serial, serialised(parallel)


# A kernel's stand-in for an optional array not given (per-row losses, weights): an array
# of no elements, not None. Numba compiles a kernel once per type of each argument, and
# None is a type of its own, so every optional array that a kernel takes as None or as an
# array doubles its compiled variants (20 s each for the cross-entropy). A kernel tests
# the array's ``size`` at run time instead, where that costs nothing: once per row, or
# once per chunk of elements.
_ABSENT = {}


def present(array, dtype=np.float64):
    """``array``, or for None an array of ``dtype`` with no elements."""
    if array is not None:
        return array
    absent = _ABSENT.get(dtype)
    if absent is None:
        absent = _ABSENT[dtype] = np.empty(0, dtype)
    return absent
