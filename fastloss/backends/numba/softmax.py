"""Softmax, log-softmax and their vector-Jacobian products over rows, on Numba's threads.

Contract: ``fastloss.backends``. Each row is read once for its max and sum
(float64, in the fixed lane order of the cross-entropy kernel, whose row passes these are)
and written once; rows are independent, so every thread count gives the same bits.
float32 exponentials use that kernel's vectorised ``exp``. Short rows (``_lane_classes``:
softmax and log-softmax at most ``FORWARD_LANE_CLASSES``, the backward functions at most
``BACKWARD_LANE_CLASSES``) go 64 at a time through that kernel's rows in lanes, the layout
chosen by k alone.
"""

import functools

import numpy as np
from numba import njit, prange
from numba.extending import overload

from fastloss.backends.numba import _kernel_copies as copies
from fastloss.backends.numba import _small_calls as small
from fastloss.backends.numba._vector_math import like
from fastloss.backends.numba.softmax_cross_entropy import (
    EXPM1_LOW,
    LANES,
    SERIAL_ELEMENTS,
    _borrow,
    _ce_lane_classes,
    _compensated,
    _exp_expm1,
    _fold_sum,
    _lane_add,
    _lanes_exp_sum,
    _lanes_log,
    _lanes_max,
    _load_tile,
    _log_sum,
    _row_exp_sum,
    _row_max,
    _row_scale,
    _rows_per_block,
    _stack_array_of,
    _stack_ce_tile,
    _stack_lanes,
    _store_tile,
    _wide_vectors,
    _wide_vectors_out_of_line,
)

SOFTMAX, LOG_SOFTMAX, SOFTMAX_BACKWARD, LOG_SOFTMAX_BACKWARD = range(4)
# The vector-Jacobian products compute little per element, and towards 64 classes a row at
# a time costs less than transposing rows in lanes (one thread, Intel AVX-512, lanes / row
# path: 0.3x at k = 10, 0.67-0.85x at k = 32, 0.86-1.14x at k = 48, 1.4-1.7x at k = 64).
BACKWARD_LANE_CLASSES = 32
# Softmax and log-softmax go through in lanes up to rows of this many float32 classes
# (float64: 128, the 1 KiB rows of cross-entropy's tile). A row at a time, rows of 129 to
# 224 classes end in a partial 64-class chunk: against rows in lanes they took 1.05-1.45x
# the time (softmax) and 0.93-1.3x (log-softmax), rows of 255 0.98x and 0.91x (one thread,
# Zen 4, 2.6M elements).
FORWARD_LANE_CLASSES = 224
# A backward pass's tile: its rows in lanes, BACKWARD_LANE_CLASSES classes of LANES rows.
_stack_backward_tile = _stack_array_of(BACKWARD_LANE_CLASSES * LANES)


@njit(cache=True, inline="always", error_model="numpy")
def _lane_classes(x, op):
    """The most classes a row of ``x`` may have for ``op`` to run rows in lanes: what picks
    the layout and sizes the row blocks."""
    if op <= LOG_SOFTMAX:
        return min(FORWARD_LANE_CLASSES, _ce_lane_classes(x))
    return BACKWARD_LANE_CLASSES


@njit(cache=True, inline="always", error_model="numpy")
def _sum_chunk(a, b, start, count, lane_sum):
    for lane in range(count):
        value = np.float64(a[start + lane])
        if b is not None:
            value *= np.float64(b[start + lane])
        lane_sum[lane] += value


@njit(cache=True, inline="always", error_model="numpy")
def _row_sum(a, b):
    """sum_c a_c * b_c (b None: sum_c a_c) in float64, in LANES lanes folded in a fixed tree
    (whole chunks of LANES, then the rest: a loop of a constant count vectorises)."""
    lane_sum = _stack_lanes(0.0)
    for lane in range(LANES):
        lane_sum[lane] = 0.0
    classes = a.size
    full = classes - classes % LANES
    for start in range(0, full, LANES):
        _sum_chunk(a, b, start, LANES, lane_sum)
    _sum_chunk(a, b, full, classes - full, lane_sum)
    return _fold_sum(lane_sum)


@njit(cache=True, inline="always", error_model="numpy")
def _softmax_row(z, out, log, next_z, next_out):
    """Softmax (``log``: log-softmax) of row z into out; the next row, ``next_z`` and
    ``next_out`` (for writing), is fetched into cache during the exponentials, so that its
    max pass does not wait on memory."""
    row_max = _row_max(z)
    if log:
        # (z - max) - log(sum), not z - (max + log(sum)): max may absorb the log.
        total, total_error = _row_exp_sum(z, row_max, None, next_z, next_out)
        log_total = _log_sum(total, total_error)
        for c in range(z.size):
            out[c] = (np.float64(z[c]) - np.float64(row_max)) - log_total
    else:
        # out holds exp(z - max) after the sum (z is read first where out is z).
        _row_scale(out, 1.0 / _row_exp_sum(z, row_max, out, next_z, next_out)[0])


@njit(cache=True, inline="always", error_model="numpy")
def _confident_bound(total, logp):
    """The least log p that _log_backward_entry takes in its confident form, in the
    precision of the array ``logp``: NaN, which no log p reaches, where total is not finite (that
    form would give inf - inf)."""
    return logp.dtype.type(EXPM1_LOW if abs(total) < np.inf else np.nan)


@njit(cache=True, inline="always", error_model="numpy")
def _log_backward_entry(y, g, total, bound):
    """g - p * total for y = log p; for p >= e**EXPM1_LOW (0.71), where a confident row's
    max has p = 1 - r with r small, as (g - total) - expm1(log p) * total: the exponential
    rounded to an ulp of 1 would keep r (NLL's gradient there, -r) only to 1e-16 absolute.
    ``bound``: _confident_bound(total)."""
    p, p_minus_one = _exp_expm1(y)
    g = np.float64(g)
    if (y >= bound) & (y <= like(y, 0.0)):
        return (g - total) - np.float64(p_minus_one) * total
    return g - np.float64(p) * total


@njit(cache=True, inline="always", error_model="numpy")
def _backward_row(y, g, out, log):
    if log:  # y = log p: g - p * sum(g)
        total = _row_sum(g, None)
        bound = _confident_bound(total, y)
        for c in range(y.size):
            out[c] = _log_backward_entry(y[c], g[c], total, bound)
    else:  # y = p: p * (g - sum(p * g))
        dot = _row_sum(y, g)
        for c in range(y.size):
            out[c] = np.float64(y[c]) * (np.float64(g[c]) - dot)


@njit(error_model="numpy")
def _lanes_softmax(x, out, log, start, stop):
    """Softmax (``log``: log-softmax) of rows [start, stop), LANES rows at a time in the
    cross-entropy kernel's tile of rows in lanes (start is a multiple of LANES): for rows
    of at most _lane_classes, which one at a time would leave most lanes idle. A
    row's sum runs in class order, and out is written once, after its rows are read."""
    _wide_vectors()
    classes = x.shape[1]
    flat, out_flat = x.reshape(x.size), out.reshape(out.size)
    item = flat.dtype.type
    tile, shifted = _stack_ce_tile(flat), _stack_ce_tile(flat)
    row_max, scale = _stack_lanes(flat), _stack_lanes(flat)
    exp_sum, exp_error, log_sum = _stack_lanes(0.0), _stack_lanes(0.0), _stack_lanes(0.0)
    for row in range(start, stop, LANES):
        count = min(LANES, stop - row)
        _load_tile(flat, row * classes, count, classes, tile)
        _lanes_max(tile, classes, row_max)
        if log:
            for i in range(classes * LANES):
                shifted[i] = tile[i]
        paired = _lanes_exp_sum(
            tile, classes, row_max, exp_sum, exp_error, flat, (row + LANES) * classes,
            out_flat, row * classes,
        )
        if log:
            # (z - max) - log(sum), as the row at a time.
            _lanes_log(exp_sum, exp_error, paired, log_sum)
            for c in range(classes):
                for r in range(LANES):
                    shifted[c * LANES + r] = (
                        np.float64(shifted[c * LANES + r]) - np.float64(row_max[r])
                    ) - log_sum[r]
            _store_tile(shifted, out_flat, row * classes, count, classes, None)
        else:
            for r in range(LANES):
                scale[r] = item(1.0 / exp_sum[r])
            _store_tile(tile, out_flat, row * classes, count, classes, scale)


@njit(error_model="numpy")
def _lanes_backward(y, g, out, log, start, stop):
    """_backward_row of rows [start, stop) as _lanes_softmax takes them, each row's sum in
    class order (compensated for float64 rows: _lane_add). Both input tiles are read before
    out is written, so out may be either."""
    _wide_vectors()
    classes = y.shape[1]
    y_flat, g_flat, out_flat = y.reshape(y.size), g.reshape(g.size), out.reshape(out.size)
    y_tile, g_tile = _stack_backward_tile(y_flat), _stack_backward_tile(y_flat)
    total, total_error, bound = _stack_lanes(0.0), _stack_lanes(0.0), _stack_lanes(y_flat)
    compensated = _compensated(y_tile)
    for row in range(start, stop, LANES):
        count = min(LANES, stop - row)
        _load_tile(y_flat, row * classes, count, classes, y_tile)
        _load_tile(g_flat, row * classes, count, classes, g_tile)
        for r in range(LANES):
            total[r] = 0.0
            total_error[r] = 0.0
        if log:  # y = log p: g - p * sum(g)
            for c in range(classes):
                for r in range(LANES):
                    _lane_add(total, total_error, r, np.float64(g_tile[c * LANES + r]),
                              compensated)
            for r in range(LANES):
                total[r] += total_error[r]
                bound[r] = _confident_bound(total[r], y_tile)
            for c in range(classes):
                for r in range(LANES):
                    i = c * LANES + r
                    g_tile[i] = _log_backward_entry(y_tile[i], g_tile[i], total[r], bound[r])
        else:  # y = p: p * (g - sum(p * g))
            for c in range(classes):
                for r in range(LANES):
                    i = c * LANES + r
                    _lane_add(total, total_error, r, np.float64(y_tile[i]) * np.float64(g_tile[i]),
                              compensated)
            for r in range(LANES):
                total[r] += total_error[r]
            for c in range(classes):
                for r in range(LANES):
                    i = c * LANES + r
                    g_tile[i] = np.float64(y_tile[i]) * (np.float64(g_tile[i]) - total[r])
        _store_tile(g_tile, out_flat, row * classes, count, classes, None)


@njit(error_model="numpy")
def _rows(x, g, out, op, start, stop):
    # Compiled once per signature for both copies of _kernel (the threaded one
    # compiles only its loop over blocks) and cached as part of each copy, whose
    # cache key covers this file; out of line, it keeps its 512-bit loops.
    _wide_vectors_out_of_line()
    x, g, out = _borrow(x), _borrow(g), _borrow(out)
    classes = x.shape[1]
    # Two branches, not one limit test around both calls: nested that way, the forward
    # functions in lanes took 1.15-1.35x the time (one thread, Zen 4).
    if op <= LOG_SOFTMAX and classes <= _lane_classes(x, op):
        _lanes_softmax(x, out, op == LOG_SOFTMAX, start, stop)
        return
    if op > LOG_SOFTMAX and classes <= _lane_classes(x, op):
        _lanes_backward(x, g, out, op == LOG_SOFTMAX_BACKWARD, start, stop)
        return
    for row in range(start, stop):
        if op <= LOG_SOFTMAX:
            following = min(row + 1, x.shape[0] - 1)
            _softmax_row(x[row], out[row], op == LOG_SOFTMAX, x[following], out[following])
        else:
            _backward_row(x[row], g[row], out[row], op == LOG_SOFTMAX_BACKWARD)


def _kernel(x, g, out, op):
    rows, classes = x.shape
    row_block = _rows_per_block(classes, _lane_classes(x, op))
    for block in prange((rows + row_block - 1) // row_block):
        _rows(x, g, out, op, block * row_block, min((block + 1) * row_block, rows))


# The row passes come from softmax_cross_entropy.py: its text is part of the cache key.
_serial_kernel, _parallel_kernel = copies.serial_and_parallel(
    _kernel, globals(), copies.source_tag("softmax.py", "softmax_cross_entropy.py")
)


def _run(x, g, out, op):
    (_serial_kernel if x.size <= SERIAL_ELEMENTS else _parallel_kernel)(x, g, out, op)


def _small_call_run(x, g, out, op):
    """Typed by its overload: the small calls' work."""
    raise TypeError("runs in jitted code only")


@overload(_small_call_run)
def _small_call_run_overload(x, g, out, op):
    if not (small.c_array(x, small.FLOATS, 2) and small.c_array(g, (x.dtype,), 2)
            and small.c_array(out, (x.dtype,), 2) and out.mutable):
        return lambda x, g, out, op: None

    def run(x, g, out, op):
        if (g.shape != x.shape or x.size > SERIAL_ELEMENTS or not small.fits(out, x, True)
                or not small.clear(out, g, True)):
            return None
        if x.size:
            _serial_kernel(x, g, out, op)
        return True

    return run


def _small_call(x, g, out, op):
    """``small_call(x, g, out, op) -> True | None``: function ``op`` of (N, k) ``x`` (and
    ``g``, ``x`` itself for softmax and log-softmax) written to ``out``, for the front's
    common case (C-contiguous, of one shape and dtype; ``out`` writeable, an input's own
    memory or apart from both) of at most SERIAL_ELEMENTS elements, in one compiled call
    through the serial kernel; None, having written nothing, for other arrays. The arrays
    must be NumPy arrays of one dtype, float32 or float64."""
    return _small_call_run(x, g, out, op)


_entry = small.cached(_small_call, globals(), "softmax", "softmax.py", "softmax_cross_entropy.py")


def _with_small_call(function, op):
    """``function`` with its ``small_call(x, g, out)``: the entry for ``op``."""
    function.small_call = lambda x, g, out: _entry(x, g, out, op)
    return function


@functools.partial(_with_small_call, op=SOFTMAX)
def softmax(z, out):
    _run(z, z, out, SOFTMAX)


@functools.partial(_with_small_call, op=LOG_SOFTMAX)
def log_softmax(z, out):
    _run(z, z, out, LOG_SOFTMAX)


@functools.partial(_with_small_call, op=SOFTMAX_BACKWARD)
def softmax_backward(p, g, out):
    _run(p, g, out, SOFTMAX_BACKWARD)


@functools.partial(_with_small_call, op=LOG_SOFTMAX_BACKWARD)
def log_softmax_backward(logp, g, out):
    _run(logp, g, out, LOG_SOFTMAX_BACKWARD)
