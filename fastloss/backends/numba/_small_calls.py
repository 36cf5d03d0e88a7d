"""What the compiled small calls share: the checks of the front's common case in jitted code.

A small call is a jitted entry that checks its arrays and runs a serial kernel in one
call (the elementwise losses, cross-entropy, nll, the multi-class hinge, the softmax
entropy, the softmax functions). Its dispatcher types each argument in C, and an array's
Numba type carries its dtype, dimensions, layout and writeability, so those checks are
settled while the entry compiles for those types (:func:`c_array`); shapes and overlaps
are checked at run time.

Overload implementations that are closures are named per instance (``__qualname__``): a
compiled function's symbol is its module, its name and a count of the functions its
process compiled before, so entries that two processes cached could otherwise carry one
symbol for two losses' code, and a third process that loaded both would link one into the
other (l1 returned MSE's loss).
"""

import numpy as np
from numba import njit, types
from numba.extending import overload, register_jitable

from fastloss.backends.numba import _kernel_copies as copies

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


def fits(out, x, shared):
    """Whether ``out`` (None, or an array of ``x``'s type) has ``x``'s shape and shares no
    memory with it or, with ``shared``, is the same memory."""


@overload(fits)
def _fits_overload(out, x, shared):
    if isinstance(out, types.NoneType):
        return lambda out, x, shared: True
    return lambda out, x, shared: out.shape == x.shape and clear(out, x, shared)


def clear(out, other, shared):
    """Whether ``out`` (None, or an array) shares no memory with ``other`` or, with
    ``shared``, is the same memory (both C-contiguous, of one shape and dtype)."""


@overload(clear)
def _clear_overload(out, other, shared):
    if isinstance(out, types.NoneType):
        return lambda out, other, shared: True
    return lambda out, other, shared: (same_or_apart(out, other) if shared
                                       else apart(out, other))


def same(out, x):
    """Whether ``out`` (None, or an array) starts where ``x`` does: with :func:`fits`, the
    same memory."""


@overload(same)
def _same_overload(out, x):
    if isinstance(out, types.NoneType):
        return lambda out, x: False
    return lambda out, x: out.ctypes.data == x.ctypes.data


def raveled(out):
    """``out.ravel()`` (a view: ``out`` is C-contiguous), or None."""


@overload(raveled)
def _raveled_overload(out):
    if isinstance(out, types.NoneType):
        return lambda out: None
    return lambda out: out.ravel()


def cached(template, namespace, name: str, *sources: str):
    """``template`` (an entry's code, with ``namespace`` for its globals) jitted and cached as
    ``_small_call__<name>_<digest>``, the digest of this file and of ``sources`` (the files,
    in this package's folder, whose code the entry embeds): Numba's cache notices edits to
    the template's own file only."""
    digest = copies.source_tag("_small_calls.py", *sources)
    return njit(cache=True)(copies.copy(template, namespace, f"_small_call__{name}_{digest}"))


# --- losses over rows against class labels -----------------------------------------------


@register_jitable
def kept_divisor(kept, mean):
    """What a small call divides by: for a "mean" the number of rows kept, NaN where none is
    (``fastloss.losses._class_labels.mean_of``: the same NaN as the front's path), else 1."""
    if not mean:
        return 1.0
    return np.float64(kept) if kept != 0 else np.nan


@register_jitable
def _rows_fit(x, labels, out, limit):
    """Whether ``labels`` has one label per row of ``x``, ``x`` has classes and at most
    ``limit`` elements, and ``out`` fits (:func:`fits`) and is apart from the labels."""
    rows, classes = x.shape
    return (labels.size == rows and classes > 0 and x.size <= limit and fits(out, x, True)
            and clear(out, labels, False))


def _rows_template(x, labels, out, mean, options):
    return _checked(x, labels, out, mean, options)  # noqa: F821


def rows_small_call(run, limit: int, name: str, *sources: str):
    """``small_call(x, labels, out, mean, options) -> float | None`` of a loss over (N, k)
    rows against int64 labels, with default options but its own (``options``, the
    kernel's: a tuple), reduced ("mean" with ``mean``, else "sum"), its gradient written
    to ``out`` (None: none): for the front's common case (``fastloss._validate.plain_rows``)
    of at most ``limit`` elements, the jitted ``run(x, labels, out, mean, options)``,
    which checks the labels (None for an invalid one: the front raises its error) and
    runs the serial kernel; else None, having written nothing. ``x`` must be a NumPy
    float32 or float64 array, ``labels`` an int64 one, ``out`` None or one of ``x``'s
    dtype. The entry is cached under ``name`` and ``sources`` (:func:`cached`): the files of
    ``run`` and of what it calls."""


    def checked(x, labels, out, mean, options):
        raise TypeError("runs in jitted code only")

    @overload(checked)
    def _checked_overload(x, labels, out, mean, options):
        if not (c_array(x, FLOATS, 2) and c_array(labels, (types.int64,), 1)
                and writable_like(out, x)):
            return lambda x, labels, out, mean, options: None

        def run_if_fit(x, labels, out, mean, options):
            if not _rows_fit(x, labels, out, limit):
                return None
            return run(x, labels, out, mean, options)

        run_if_fit.__qualname__ = f"_run_if_fit__{name}"  # per loss: see the module's text
        return run_if_fit

    return cached(_rows_template, dict(globals(), _checked=checked), name, *sources)
