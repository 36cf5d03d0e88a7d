"""The multi-class hinge loss on Numba's threads (contract: ``fastloss.backends``).

A row is read once, for its loss and its gradient in the same pass; rows of at most
``LANE_CLASSES`` classes go 64 at a time through the cross-entropy kernel's rows in lanes (the
layout chosen by k alone). Rows go in fixed blocks whose float64 partial sums are added in
block order: the same bits at any thread count.
"""

import numpy as np
from numba import njit, prange

from fastloss.backends.numba import _kernel_copies as copies
from fastloss.backends.numba import _small_calls as small
from fastloss.backends.numba.softmax_cross_entropy import (
    LANE_CLASSES,
    LANES,
    SERIAL_ELEMENTS,
    _compensated,
    _flat,
    _fold_sum,
    _lanes_total,
    _load_tile,
    _rows_per_block,
    _stack_lanes,
    _stack_tile,
    _store_tile,
    _two_sum,
    _wide_vectors_out_of_line,
)


@njit(cache=True, inline="always", error_model="numpy")
def _term(w, h, p, counts):
    """A term of a row's loss, w h**p, as PyTorch weighs each term that counts: 0 where it
    does not, even for an infinite or NaN weight, and no sum of terms near the largest float
    overflows where the weighted terms would not."""
    return w * (h if p == 1 else h * h) if counts else 0.0


@njit(cache=True, inline="always", error_model="numpy")
def _slope(h, p, scale, counts):
    """A term's slope, scale (h**p)' where it counts, else 0."""
    if not counts:
        return 0.0
    return scale if p == 1 else h * (2.0 * scale)  # 2 h alone may overflow


@njit(cache=True, inline="always", error_model="numpy")
def _chunk(scores, label, w, shift, p, scale, start, count, grad_row, lane_total, lane_slope):
    # Each score is read before its slope is stored: grad_row may be scores.
    for lane in range(count):
        j = start + lane
        h = shift + np.float64(scores[j])
        # As PyTorch: a term counts where h > 0, so a NaN h (a NaN score, inf - inf) adds
        # nothing to the loss and has slope 0.
        counts = j != label and h > 0.0
        lane_total[lane] += _term(w, h, p, counts)
        if grad_row is not None:
            slope = _slope(h, p, scale, counts)
            lane_slope[lane] += slope
            grad_row[j] = slope


@njit(cache=True, inline="always", error_model="numpy")
def _row(scores, label, w, grad_row, p, margin, grad_scale):
    """The row's loss; ``grad_row`` (when given) receives its gradient times ``grad_scale``,
    in the same pass. Sums go in LANES partial sums folded in a fixed tree (see
    softmax_cross_entropy): an order fixed by the source, which LLVM can vectorise."""
    classes = scores.size
    full = classes - classes % LANES
    shift = margin - np.float64(scores[label])
    scale = w * grad_scale / classes
    lane_total = _stack_lanes(0.0)
    lane_slope = _stack_lanes(0.0)
    for lane in range(LANES):
        lane_total[lane] = 0.0
        lane_slope[lane] = 0.0
    for start in range(0, full, LANES):
        _chunk(scores, label, w, shift, p, scale, start, LANES, grad_row, lane_total,
               lane_slope)
    _chunk(scores, label, w, shift, p, scale, full, classes - full, grad_row, lane_total,
           lane_slope)
    if grad_row is not None:
        grad_row[label] = 0.0 - _fold_sum(lane_slope)  # +0, not -0, without terms (PyTorch)
    return _fold_sum(lane_total) / classes


@njit(cache=True, error_model="numpy")
def _compensated_sums(tile, classes, row_label, row_weight, shift, scale, p, total, slope_sum):
    """A tile's rows' sums of terms and of slopes, in class order as _lanes_block's, but
    compensated (TwoSum), for float64 rows: their own loop, since the choice inside
    _lanes_block's loop, even settled while compiling, kept its float32 version from
    vectorising (twice the time)."""
    total_error, slope_error = _stack_lanes(0.0), _stack_lanes(0.0)
    for r in range(LANES):
        total[r], slope_sum[r], total_error[r], slope_error[r] = 0.0, 0.0, 0.0, 0.0
    for c in range(classes):
        for r in range(LANES):
            h = shift[r] + np.float64(tile[c * LANES + r])
            counts = row_label[r] != c and h > 0.0  # as _chunk
            total[r], error = _two_sum(total[r], _term(row_weight[r], h, p, counts))
            total_error[r] += error
            slope_sum[r], error = _two_sum(slope_sum[r], _slope(h, p, scale[r], counts))
            slope_error[r] += error
    for r in range(LANES):
        total[r] += total_error[r]
        slope_sum[r] += slope_error[r]


@njit(error_model="numpy")
def _lanes_block(x, labels, weight, grad_out, loss_out, p, margin, divisor, start, stop):
    """The sum of the losses of rows [start, stop), LANES rows at a time in the
    cross-entropy kernel's tile of rows in lanes (start is a multiple of LANES), for rows
    of at most LANE_CLASSES classes, which one at a time would leave most lanes idle:
    _row's arithmetic, each row's sums in class order (float64 rows': those of
    _compensated_sums). A pass's rows are read before their gradient is written, so grad_out
    may be x itself."""
    _wide_vectors_out_of_line()
    classes = x.shape[1]
    flat, grad_flat = x.reshape(x.size), _flat(grad_out)
    tile = _stack_tile(flat)
    row_label = _stack_lanes(np.int64(0))
    row_weight, shift, scale = _stack_lanes(0.0), _stack_lanes(0.0), _stack_lanes(0.0)
    total, slope_sum, lane_totals = _stack_lanes(0.0), _stack_lanes(0.0), _stack_lanes(0.0)
    exact_total, exact_slope_sum = _stack_lanes(0.0), _stack_lanes(0.0)
    grad_scale = 1.0 / divisor
    for r in range(LANES):
        lane_totals[r] = 0.0
    for row in range(start, stop, LANES):
        count = min(LANES, stop - row)
        _load_tile(flat, row * classes, count, classes, tile)
        for r in range(LANES):
            label = labels[row + r] if r < count else 0  # absent rows: class 0
            w = weight[label] if weight.size else 1.0
            row_label[r] = label
            row_weight[r] = w
            shift[r] = margin - np.float64(tile[label * LANES + r])
            scale[r] = w * grad_scale / classes
            total[r] = 0.0
            slope_sum[r] = 0.0
        if _compensated(tile):
            _compensated_sums(tile, classes, row_label, row_weight, shift, scale, p, exact_total,
                              exact_slope_sum)
        for c in range(classes):
            for r in range(LANES):
                i = c * LANES + r
                h = shift[r] + np.float64(tile[i])
                counts = row_label[r] != c and h > 0.0  # as _chunk
                total[r] += _term(row_weight[r], h, p, counts)
                if grad_out is not None:
                    slope = _slope(h, p, scale[r], counts)
                    slope_sum[r] += slope
                    tile[i] = slope
        if _compensated(tile):
            for r in range(LANES):
                total[r], slope_sum[r] = exact_total[r], exact_slope_sum[r]
        for r in range(count):
            loss = total[r] / classes
            lane_totals[r] += loss
            if loss_out.size:
                loss_out[row + r] = loss
        if grad_out is None:  # an argument: the branch is pruned while compiling
            continue
        for r in range(LANES):
            tile[row_label[r] * LANES + r] = 0.0 - slope_sum[r]
        _store_tile(tile, grad_flat, row * classes, count, classes, None)
    return _lanes_total(lane_totals)


@njit(error_model="numpy")
def _rows_block(x, labels, weight, grad_out, loss_out, p, margin, divisor, start, stop):
    """The sum of the losses of rows [start, stop), one row at a time."""
    block_sum = 0.0
    for row in range(start, stop):
        label = labels[row]
        w = weight[label] if weight.size else 1.0
        if grad_out is None:
            loss = _row(x[row], label, w, None, p, margin, 1.0 / divisor)
        else:
            loss = _row(x[row], label, w, grad_out[row], p, margin, 1.0 / divisor)
        if loss_out.size:
            loss_out[row] = loss
        block_sum += loss
    return block_sum


@njit(error_model="numpy")
def _block_sum(x, labels, weight, grad_out, loss_out, p, margin, divisor, start, stop):
    # Compiled once per signature for both copies of _kernel (the threaded one
    # compiles only its loop over blocks) and cached as part of each copy. The row loop is
    # a function of its own: here, beside the call of _lanes_block, it ran 1.5x slower.
    if x.shape[1] <= LANE_CLASSES:
        return _lanes_block(x, labels, weight, grad_out, loss_out, p, margin, divisor, start,
                            stop)
    return _rows_block(x, labels, weight, grad_out, loss_out, p, margin, divisor, start, stop)


def _kernel(x, labels, weight, grad_out, loss_out, p, margin, divisor):
    rows, classes = x.shape
    row_block = _rows_per_block(classes)
    blocks = (rows + row_block - 1) // row_block
    partials = np.empty(blocks)
    for block in prange(blocks):
        partials[block] = _block_sum(
            x, labels, weight, grad_out, loss_out, p, margin, divisor, block * row_block,
            min((block + 1) * row_block, rows),
        )
    total = 0.0
    for block in range(blocks):
        total += partials[block]
    return total / divisor


# The lane sums come from softmax_cross_entropy.py: its text is part of the cache key.
_serial_kernel, _parallel_kernel = copies.serial_and_parallel(
    _kernel, globals(), copies.source_tag("multi_margin.py", "softmax_cross_entropy.py")
)


def multi_margin(x, labels, weight, grad_out, loss_out, p, margin, divisor):
    kernel = _serial_kernel if x.size <= SERIAL_ELEMENTS else _parallel_kernel
    return kernel(x, labels, copies.present(weight), grad_out, copies.present(loss_out), int(p),
                  float(margin), float(divisor))


# Not cached on its own: compiled into its entry, whose name carries the digest of every
# file it embeds.
@njit(error_model="numpy")
def _small_call_run(scores, labels, out, mean, options):
    p, margin = options
    classes = scores.shape[1]
    for label in labels:
        if label < 0 or label >= classes:
            return None  # the front raises the label's error
    return _serial_kernel(scores, labels, np.empty(0), out, np.empty(0), p, margin,
                          np.float64(labels.size) if mean else 1.0)


# options: (p, margin).
multi_margin.small_call = small.rows_small_call(
    _small_call_run, SERIAL_ELEMENTS, "multi_margin", "multi_margin.py",
    "softmax_cross_entropy.py")
