"""Negative log-likelihood on Numba's threads (contract: ``fastloss.backends``).

Rows go in fixed blocks whose float64 partial sums are added in block order: the same bits
at any thread count. Each row not ignored reads one log-probability. The gradient, zeros
but for the label's element of each row not ignored, is filled by parts, one per thread,
a part's rows in one fill and then their elements: a large fill is a memset that glibc
streams past the caches (from about the size of the last-level cache), where a row at a
time wrote each line after reading it (2.5x the time at (4096, 32000)).
"""

import numba
import numpy as np
from numba import njit, prange

from fastloss.backends.numba import _kernel_copies as copies
from fastloss.backends.numba import _small_calls as small
from fastloss.backends.numba.softmax_cross_entropy import (
    BLOCK_ELEMENTS,
    LANES,
    _serial_label_summary,
)

# Up to this many log-probabilities a call runs the serial copy of the kernel: nll reads
# one element a row and fills the gradient, bound by memory as the elementwise losses are,
# and at 82K-131K elements the threaded copy took 1.2-2.5x the serial copy's time (Zen 3).
SERIAL_ELEMENTS = 1 << 17


def _kernel(log_probs, labels, weight, grad_out, loss_out, ignore_index, divisor, parts):
    rows, classes = log_probs.shape
    row_block = max(1, BLOCK_ELEMENTS // classes)
    blocks = (rows + row_block - 1) // row_block
    partials = np.empty(blocks)
    for part in prange(parts):
        first, last = part * blocks // parts, (part + 1) * blocks // parts
        for block in range(first, last):
            # A block's rows in sums of LANES rows, added in order: a sum of up to 65536 rows
            # one by one lost about 1e-12 of a float64 loss.
            block_sum = 0.0
            stop = min((block + 1) * row_block, rows)
            for chunk in range(block * row_block, stop, LANES):
                chunk_sum = 0.0
                for row in range(chunk, min(chunk + LANES, stop)):
                    label = labels[row]
                    loss = 0.0
                    if label != ignore_index:
                        loss = -_weight_of(weight, label) * np.float64(log_probs[row, label])
                    if loss_out.size:
                        loss_out[row] = loss
                    chunk_sum += loss
                block_sum += chunk_sum
            partials[block] = block_sum
        # The part's gradient rows, after its reads (grad_out may be log_probs itself):
        # zeros in one fill, then each row's element.
        if grad_out is not None:
            start, stop = first * row_block, min(last * row_block, rows)
            grad_out.reshape(-1)[start * classes:stop * classes] = 0
            for row in range(start, stop):
                label = labels[row]
                if label != ignore_index:
                    grad_out[row, label] = -_weight_of(weight, label) / divisor
    total = 0.0
    for block in range(blocks):
        total += partials[block]
    return total / divisor


@njit(inline="always")
def _weight_of(weight, label):
    """The weight of class ``label`` (1 without a weight array)."""
    return weight[label] if weight.size else 1.0


# BLOCK_ELEMENTS comes from softmax_cross_entropy.py: its text is part of the cache key.
_serial_kernel, _parallel_kernel = copies.serial_and_parallel(
    _kernel, globals(), copies.source_tag("nll.py", "softmax_cross_entropy.py")
)


def nll(log_probs, labels, weight, grad_out, loss_out, ignore_index, divisor):
    if log_probs.size <= SERIAL_ELEMENTS:
        kernel, parts = _serial_kernel, 1
    else:
        kernel, parts = _parallel_kernel, numba.get_num_threads()
    return kernel(log_probs, labels, copies.present(weight), grad_out, copies.present(loss_out),
                  int(ignore_index), float(divisor), parts)


# Not cached on its own: compiled into its entry, whose name carries the digest of every
# file it embeds.
@njit(error_model="numpy")
def _small_call_run(log_probs, labels, out, mean, options):
    (ignore_index,) = options
    first, kept = _serial_label_summary(labels, None, log_probs.shape[1], ignore_index)
    if first >= 0:
        return None  # the front raises the label's error
    return _serial_kernel(log_probs, labels, np.empty(0), out, np.empty(0), ignore_index,
                          small.kept_divisor(kept, mean), 1)


# options: (ignore_index,).
nll.small_call = small.rows_small_call(
    _small_call_run, SERIAL_ELEMENTS, "nll", "nll.py", "softmax_cross_entropy.py")
