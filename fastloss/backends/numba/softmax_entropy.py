"""The entropy of each row's softmax on Numba's threads (contract:
``fastloss.backends.numpy.softmax_entropy``).

A row is read for its max, then once more for ``s = sum(e)`` and ``sum(e (z - max))``
(``e = exp(z - max)``, float64 sums in cross-entropy's fixed lane order), and the gradient
row is written from ``z`` (``e`` computed again) while the row is in cache: each element is
read before it is written, so the gradient may overwrite the logits. Rows go in fixed blocks
added in order: the same bits at any thread count.
"""

import hashlib
import math
from pathlib import Path

import numpy as np
from numba import njit, prange

from fastloss.backends.numba import _kernel_copies as copies
from fastloss.backends.numba.softmax_cross_entropy import (
    BLOCK_ELEMENTS,
    LANES,
    SERIAL_ELEMENTS,
    _exp_nonpositive,
    _fold_sum,
    _row_max,
    _stack_lanes,
)


@njit(cache=True, inline="always", error_model="numpy")
def _sums_chunk(z, row_max, start, count, lane_sum, lane_moment):
    for lane in range(count):
        e = np.float64(_exp_nonpositive(z[start + lane] - row_max))
        shifted = np.float64(z[start + lane]) - np.float64(row_max)
        lane_sum[lane] += e
        lane_moment[lane] += 0.0 if e == 0.0 else e * shifted  # a logit of -inf adds 0


@njit(cache=True, inline="always", error_model="numpy")
def _entropy_row(z, grad_row, grad_scale):
    """The entropy of softmax(z); ``grad_row`` (when given) receives its gradient times
    ``grad_scale``."""
    row_max = _row_max(z)
    lane_sum = _stack_lanes(0.0)
    lane_moment = _stack_lanes(0.0)
    for lane in range(LANES):
        lane_sum[lane] = 0.0
        lane_moment[lane] = 0.0
    classes = z.size
    full = classes - classes % LANES
    for start in range(0, full, LANES):
        _sums_chunk(z, row_max, start, LANES, lane_sum, lane_moment)
    _sums_chunk(z, row_max, full, classes - full, lane_sum, lane_moment)
    total = _fold_sum(lane_sum)
    log_total = math.log(total)
    entropy = log_total - _fold_sum(lane_moment) / total
    if grad_row is not None:
        # -p (log p + H) with p = e / s and log p = (z - max) - log s.
        scale = -grad_scale / total
        offset = entropy - log_total
        for c in range(classes):
            shifted = np.float64(z[c]) - np.float64(row_max)
            e = np.float64(_exp_nonpositive(z[c] - row_max))
            grad_row[c] = 0.0 if e == 0.0 else scale * e * (shifted + offset)
    return entropy


@njit(cache=True, inline="always", error_model="numpy")
def _row(logits, grad_out, row, grad_scale):
    # Row views of a None grad_out would be optional types; the branch is settled while
    # compiling.
    if grad_out is None:
        return _entropy_row(logits[row], None, grad_scale)
    return _entropy_row(logits[row], grad_out[row], grad_scale)


def _kernel(logits, grad_out, loss_out, divisor):
    rows, classes = logits.shape
    row_block = max(1, BLOCK_ELEMENTS // classes)
    blocks = (rows + row_block - 1) // row_block
    partials = np.empty(blocks)
    for block in prange(blocks):
        block_sum = 0.0
        for row in range(block * row_block, min((block + 1) * row_block, rows)):
            entropy = _row(logits, grad_out, row, 1.0 / divisor)
            if loss_out is not None:
                loss_out[row] = entropy
            block_sum += entropy
        partials[block] = block_sum
    total = 0.0
    for block in range(blocks):
        total += partials[block]
    return total / divisor


# The row passes come from softmax_cross_entropy.py: its text is part of the cache key.
_SOURCES = ("softmax_entropy.py", "softmax_cross_entropy.py")
_TAG = hashlib.sha256(
    b"".join(Path(__file__).with_name(name).read_bytes() for name in _SOURCES)
).hexdigest()[:12]
_serial_kernel, _parallel_kernel = copies.serial_and_parallel(_kernel, globals(), _TAG)


def softmax_entropy(logits, grad_out, loss_out, divisor):
    kernel = _serial_kernel if logits.size <= SERIAL_ELEMENTS else _parallel_kernel
    return kernel(logits, grad_out, loss_out, float(divisor))
