"""The entropy of each row's softmax on Numba's threads (contract: ``fastloss.backends``).

A row is read for its max, then once more for ``e = exp(z - max)``, stored into the
gradient row a chunk at a time, with the float64 sums ``s = sum(e)`` and ``sum(e (z - max))``
(cross-entropy's fixed lane order) taken from each chunk as it is stored; the gradient comes
from the stored row while it is in cache. The exponentials are the compute-bound part: each
is computed once. Without a gradient both sums come from one pass. An in-place gradient
keeps the exponentials in a scratch row instead. Rows of at most ``ENTROPY_LANE_CLASSES`` classes go
64 at a time through the cross-entropy kernel's rows in lanes instead (the layout chosen by
k alone). Rows go in fixed blocks added in order: the same bits at any thread count.
"""

import numpy as np
from numba import njit, prange
from numba.extending import overload

from fastloss.backends.numba import _kernel_copies as copies
from fastloss.backends.numba import _small_calls as small
from fastloss.backends.numba.softmax_cross_entropy import (
    LANES,
    SERIAL_ELEMENTS,
    _borrow,
    _compensated,
    _exp_nonpositive,
    _flat,
    _fold_exp_sum,
    _fold_sum,
    _lane_add,
    _lanes_exp_sum,
    _lanes_log,
    _lanes_max,
    _lanes_total,
    _load_tile,
    _log_sum,
    _prefetch_chunk,
    _row_max,
    _rows_per_block,
    _stack_array_of,
    _stack_lanes,
    _store_tile,
    _wide_vectors,
    _wide_vectors_out_of_line,
)

# Rows of up to this many classes go through in lanes, more than the multi-class hinge's
# LANE_CLASSES: one at a time, a row's last partial chunk runs scalar, and rows of
# 136-184 classes took 1.2-1.8x the time they take in lanes (float32, one thread,
# Zen 4; k = 192, with no partial chunk, about the same either way).
ENTROPY_LANE_CLASSES = 192
_stack_tile = _stack_array_of(ENTROPY_LANE_CLASSES * LANES)


@njit(cache=True, inline="always", error_model="numpy")
def _sums_chunk(z, row_max, exps, start, count, lane_sum, lane_error, lane_moment, compensated):
    for lane in range(count):
        c = start + lane
        shifted = np.float64(z[c]) - np.float64(row_max)
        e = np.float64(_exp_nonpositive(z[c] - row_max) if exps is None else exps[c])
        _lane_add(lane_sum, lane_error, lane, e, compensated)
        lane_moment[lane] += 0.0 if e == 0.0 else e * shifted  # a logit of -inf adds 0


@njit(cache=True, inline="always", error_model="numpy")
def _row_sums(z, row_max, exps, next_z, next_grad):
    """(sum(e), its error, sum(e (z - max))), e = exp(z - max), the first two a pair (see
    _confident's comment); with ``exps`` given, e is first stored there, a chunk at a time,
    and the sums take it from the chunk just stored, in L1, instead of from a pass of their
    own over the row (a tenth of the entropy's time at k = 32000).
    Through a stack chunk: a loop that reads z and writes exps would fail LLVM's overlap
    check. Meanwhile the next row (``next_z``, and ``next_grad`` for writing) is fetched into
    cache, as cross-entropy's rows are: its max pass then runs from cache."""
    chunk = _stack_lanes(z)
    compensated = _compensated(z)
    lane_sum, lane_error, lane_moment = _stack_lanes(0.0), _stack_lanes(0.0), _stack_lanes(0.0)
    for lane in range(LANES):
        lane_sum[lane] = 0.0
        lane_error[lane] = 0.0
        lane_moment[lane] = 0.0
    classes = z.size
    full = classes - classes % LANES
    for start in range(0, full, LANES):
        if exps is not None:
            for lane in range(LANES):
                chunk[lane] = _exp_nonpositive(z[start + lane] - row_max)
            for lane in range(LANES):
                exps[start + lane] = chunk[lane]
        _sums_chunk(z, row_max, exps, start, LANES, lane_sum, lane_error, lane_moment,
                    compensated)
        _prefetch_chunk(next_z, next_grad, start)
    if exps is not None and full < classes:
        # The last, partial chunk at full width, its absent lanes masked (exp(0)), through a
        # view indexed from 0: a loop of its own count, from ``full``, ran scalar.
        rest, z_rest, exps_rest = classes - full, z[full:], exps[full:]
        for lane in range(LANES):
            chunk[lane] = _exp_nonpositive((z_rest[lane] if lane < rest else row_max) - row_max)
        for lane in range(LANES):
            if lane < rest:
                exps_rest[lane] = chunk[lane]
    _sums_chunk(z, row_max, exps, full, classes - full, lane_sum, lane_error, lane_moment,
                compensated)
    total, error = _fold_exp_sum(lane_sum, lane_error, compensated, z, row_max, exps)
    return total, error, _fold_sum(lane_moment)


@njit(cache=True, inline="always", error_model="numpy")
def _grad_value(z, row_max, exps, scale, offset, c):
    e = np.float64(exps[c])
    shifted = np.float64(z[c]) - np.float64(row_max)
    # A logit of -inf has gradient 0; offset - offset is that 0, or NaN in a NaN row.
    return offset - offset if e == 0.0 else scale * e * (shifted + offset)


@njit(cache=True, inline="always", error_model="numpy")
def _row_grad(z, row_max, exps, grad_row, scale, offset):
    """grad_c = scale e_c ((z_c - max) + offset), 0 where e_c is (NaN in a NaN row, such as
    one with a logit of +inf). Whole chunks go through a
    stack chunk: ``exps`` is usually ``grad_row`` itself, and a loop that reads and writes
    one argument's row fails LLVM's overlap check at run time and goes scalar (two thirds
    of the entropy's time at k = 4096). The rest, fewer than LANES classes, is scalar in
    any case."""
    values = _stack_lanes(grad_row)
    classes = z.size
    full = classes - classes % LANES
    for start in range(0, full, LANES):
        for lane in range(LANES):
            values[lane] = _grad_value(z, row_max, exps, scale, offset, start + lane)
        for lane in range(LANES):
            grad_row[start + lane] = values[lane]
    for c in range(full, classes):
        grad_row[c] = _grad_value(z, row_max, exps, scale, offset, c)


# The row functions below are calls, not inline="always": Numba's inliner copies a callee's
# whole IR at every call site, which made this kernel take 9 s per signature to compile
# (4 s as calls, as fast to run, the same bits). They are not cached on their own (their
# code is softmax_cross_entropy.py's too): each copy of _kernel, whose cache key covers
# both files, compiles them in.
@njit(error_model="numpy")
def _entropy_row(z, grad_row, exps, grad_scale, next_z, next_grad):
    """The entropy of softmax(z); ``grad_row`` (when given) receives its gradient times
    ``grad_scale``, and ``exps`` holds the exponentials between passes: ``grad_row`` itself,
    or a scratch row when ``grad_row`` is ``z`` (each z_c is then read before grad_c is
    written). ``next_z`` and ``next_grad`` are the rows processed next."""
    _wide_vectors()
    row_max = _row_max(z)
    # exps is None when grad_row is.
    total, total_error, moment = _row_sums(z, row_max, exps, next_z, next_grad)
    log_total = _log_sum(total, total_error)
    entropy = log_total - moment / total
    if grad_row is not None:
        # -p (log p + H) with p = e / s and log p = (z - max) - log s.
        scale = -grad_scale / total
        offset = entropy - log_total
        _row_grad(z, row_max, exps, grad_row, scale, offset)
    return entropy


@njit(error_model="numpy")
def _lanes_block(logits, grad_out, loss_out, grad_scale, start, stop):
    """The sum of the entropies of rows [start, stop), LANES rows at a time in the
    cross-entropy kernel's tile of rows in lanes (start is a multiple of LANES), for rows
    of at most ENTROPY_LANE_CLASSES classes, which one at a time would leave lanes idle:
    _entropy_row's arithmetic, each row's sums in class order. A pass's rows are read
    before their gradient is written, so grad_out may be logits itself."""
    _wide_vectors()
    classes = logits.shape[1]
    flat, grad_flat = logits.reshape(logits.size), _flat(grad_out)
    tile, shifted = _stack_tile(flat), _stack_tile(flat)
    row_max = _stack_lanes(flat)
    total, moment, log_total = _stack_lanes(0.0), _stack_lanes(0.0), _stack_lanes(0.0)
    total_error = _stack_lanes(0.0)
    entropy, scale, offset = _stack_lanes(0.0), _stack_lanes(0.0), _stack_lanes(0.0)
    lane_totals = _stack_lanes(0.0)
    for r in range(LANES):
        lane_totals[r] = 0.0
    for row in range(start, stop, LANES):
        count = min(LANES, stop - row)
        _load_tile(flat, row * classes, count, classes, tile)
        _lanes_max(tile, classes, row_max)
        for i in range(classes * LANES):
            shifted[i] = tile[i]
        paired = _lanes_exp_sum(
            tile, classes, row_max, total, total_error, flat, (row + LANES) * classes,
            grad_flat, row * classes,
        )
        for r in range(LANES):
            moment[r] = 0.0
        for c in range(classes):
            for r in range(LANES):
                e = np.float64(tile[c * LANES + r])
                gap = np.float64(shifted[c * LANES + r]) - np.float64(row_max[r])
                moment[r] += 0.0 if e == 0.0 else e * gap  # a logit of -inf adds 0
        _lanes_log(total, total_error, paired, log_total)
        for r in range(LANES):
            entropy[r] = log_total[r] - moment[r] / total[r]
            scale[r] = -grad_scale / total[r]
            offset[r] = entropy[r] - log_total[r]
        for r in range(count):
            lane_totals[r] += entropy[r]
            if loss_out.size:
                loss_out[row + r] = entropy[r]
        if grad_out is None:  # an argument: the branch is pruned while compiling
            continue
        # -p (log p + H), as _entropy_row: scale e ((z - max) + (H - log s)).
        for c in range(classes):
            for r in range(LANES):
                e = np.float64(tile[c * LANES + r])
                gap = np.float64(shifted[c * LANES + r]) - np.float64(row_max[r])
                tile[c * LANES + r] = (offset[r] - offset[r] if e == 0.0
                                       else scale[r] * e * (gap + offset[r]))
        _store_tile(tile, grad_flat, row * classes, count, classes, None)
    return _lanes_total(lane_totals)


@njit(error_model="numpy")
def _row(logits, grad_out, scratch, in_place, row, grad_scale):
    # Row views of a None grad_out would be optional types; the branch is settled while
    # compiling.
    following = min(row + 1, logits.shape[0] - 1)
    if grad_out is None:
        return _entropy_row(logits[row], None, None, grad_scale, logits[following], None)
    grad_row = grad_out[row]
    return _entropy_row(logits[row], grad_row, scratch if in_place else grad_row, grad_scale,
                        logits[following], grad_out[following])


@njit(error_model="numpy")
def _block_sum(logits, grad_out, loss_out, divisor, in_place, start, stop):
    _wide_vectors_out_of_line()
    # Borrowed: a row view of a counted array costs two atomic operations, four views a row.
    logits, grad_out, loss_out = _borrow(logits), _borrow(grad_out), _borrow(loss_out)
    if logits.shape[1] <= ENTROPY_LANE_CLASSES:
        return _lanes_block(logits, grad_out, loss_out, 1.0 / divisor, start, stop)
    scratch = np.empty(logits.shape[1] if in_place else 0, logits.dtype)
    block_sum = 0.0
    for row in range(start, stop):
        entropy = _row(logits, grad_out, scratch, in_place, row, 1.0 / divisor)
        if loss_out.size:
            loss_out[row] = entropy
        block_sum += entropy
    return block_sum


def _kernel(logits, grad_out, loss_out, divisor, in_place):
    rows, classes = logits.shape
    row_block = _rows_per_block(classes, ENTROPY_LANE_CLASSES)
    blocks = (rows + row_block - 1) // row_block
    partials = np.empty(blocks)
    for block in prange(blocks):
        partials[block] = _block_sum(
            logits, grad_out, loss_out, divisor, in_place, block * row_block,
            min((block + 1) * row_block, rows),
        )
    total = 0.0
    for block in range(blocks):
        total += partials[block]
    return total / divisor


# The row passes come from softmax_cross_entropy.py: its text is part of the cache key.
_serial_kernel, _parallel_kernel = copies.serial_and_parallel(
    _kernel, globals(), copies.source_tag("softmax_entropy.py", "softmax_cross_entropy.py")
)


def softmax_entropy(logits, grad_out, loss_out, divisor):
    loss_out = copies.present(loss_out)
    kernel = _serial_kernel if logits.size <= SERIAL_ELEMENTS else _parallel_kernel
    # grad_out is logits' own memory or apart from it (fastloss.backends).
    in_place = grad_out is not None and np.may_share_memory(grad_out, logits)
    return kernel(logits, grad_out, loss_out, float(divisor), in_place)


def _small_call_run(logits, out, mean):
    """Typed by its overload: ``small_call``'s work."""
    raise TypeError("runs in jitted code only")


@overload(_small_call_run)
def _small_call_run_overload(logits, out, mean):
    if not (small.c_array(logits, small.FLOATS, 2) and small.writable_like(out, logits)):
        return lambda logits, out, mean: None

    def run(logits, out, mean):
        rows, classes = logits.shape
        if classes == 0 or logits.size > SERIAL_ELEMENTS or not small.fits(out, logits, True):
            return None
        return _serial_kernel(logits, out, np.empty(0), np.float64(rows) if mean else 1.0,
                              small.same(out, logits))

    return run


def _small_call(logits, out, mean):
    """``small_call(logits, out, mean) -> float | None``: the entropy of (N, k) rows, "mean"
    (``mean``) or "sum", its gradient written to ``out`` (None: none), for the front's
    common case (C-contiguous logits, ``out`` apart or the logits themselves) of at most
    SERIAL_ELEMENTS logits, in one compiled call through the serial kernel; None, having
    written nothing, for other arrays. The arrays must be NumPy arrays, the logits float32
    or float64, out of their dtype."""
    return _small_call_run(logits, out, mean)


softmax_entropy.small_call = small.cached(
    _small_call, globals(), "softmax_entropy", "softmax_entropy.py", "softmax_cross_entropy.py")
