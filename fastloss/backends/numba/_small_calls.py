"""What the compiled small calls share: the checks of the front's common case in jitted code.

A small call is a jitted entry that checks its arrays and runs a serial kernel in one
call (``elementwise``, ``softmax_cross_entropy``). Its dispatcher types each argument in
C, and an array's Numba type carries its dtype, dimensions, layout and writeability, so
those checks are settled while the entry compiles for those types (:func:`c_array`);
shapes and overlaps are checked at run time.
"""

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


# --- losses over rows against class labels -----------------------------------------------


@register_jitable
def _rows_fit(x, labels, out, limit):
    """Whether ``labels`` has one label per row of ``x``, ``x`` has classes and at most
    ``limit`` elements, and ``out`` fits (:func:`fits`; apart from the labels)."""
    rows, classes = x.shape
    return (labels.size == rows and classes > 0 and x.size <= limit
            and fits(out, x, labels, False))


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
    dtype. ``name`` and a digest of ``sources`` (the files of ``run`` and of what it calls,
    in this package's folder) name the cached entry: Numba's cache notices edits to this
    file only."""

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

        # Named per loss, as the entry: a compiled function's symbol is its module, name and
        # a count of this process, and entries cached by processes apart would otherwise
        # link one loss's run into another's.
        run_if_fit.__qualname__ = f"_run_if_fit__{tag}"
        return run_if_fit

    tag = f"{name}_{copies.source_tag('_small_calls.py', *sources)}"
    return njit(cache=True)(copies.copy(
        _rows_template, dict(globals(), _checked=checked), f"_small_call__{tag}"))
