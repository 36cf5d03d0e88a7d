"""What the compiled small calls share: the checks of the front's common case in jitted code.

A small call is a jitted entry that checks its arrays and runs a serial kernel in one
call (``elementwise``, ``softmax_cross_entropy``). Its dispatcher types each argument in
C, and an array's Numba type carries its dtype, dimensions, layout and writeability, so
those checks are settled while the entry compiles for those types (:func:`c_array`);
shapes and overlaps are checked at run time.
"""

from numba import types
from numba.extending import overload, register_jitable

FLOATS = (types.float32, types.float64)


def c_array(array, dtypes, ndim=None) -> bool:
    """Whether the Numba type ``array`` is a C-contiguous array of one of ``dtypes`` (and of
    ``ndim`` dimensions when given); for typing a small call only."""
    return (isinstance(array, types.Array) and array.layout == "C" and array.dtype in dtypes
            and (ndim is None or array.ndim == ndim))


def writable_like(out, x) -> bool:
    """Whether the Numba type ``out`` is None or a writeable C-contiguous array of ``x``'s
    dtype and dimensions."""
    return isinstance(out, types.NoneType) or (
        c_array(out, (x.dtype,), x.ndim) and out.mutable)


@register_jitable
def apart(out, x):
    """Whether ``out`` and ``x`` (C-contiguous) share no memory."""
    start, other = out.ctypes.data, x.ctypes.data
    return start + out.nbytes <= other or other + x.nbytes <= start


@register_jitable
def same_or_apart(out, x):
    """Whether C-contiguous ``out`` and ``x`` of one shape and dtype are the same memory or
    share none: the overlaps a kernel takes (it reads an element before it writes it)."""
    return out.ctypes.data == x.ctypes.data or apart(out, x)


def fits(out, x, target, target_shared):
    """Whether ``out`` (None, or an array of ``x``'s type) has ``x``'s shape, is the same
    memory as ``x`` or apart from it, and is apart from ``target`` (or, with
    ``target_shared``, the same memory or apart, as from ``x``)."""


@overload(fits)
def _fits_overload(out, x, target, target_shared):
    if isinstance(out, types.NoneType):
        return lambda out, x, target, target_shared: True
    return lambda out, x, target, target_shared: (
        out.shape == x.shape and same_or_apart(out, x)
        and (same_or_apart(out, target) if target_shared else apart(out, target)))


def raveled(out):
    """``out.ravel()`` (a view: ``out`` is C-contiguous), or None."""


@overload(raveled)
def _raveled_overload(out):
    if isinstance(out, types.NoneType):
        return lambda out: None
    return lambda out: out.ravel()
