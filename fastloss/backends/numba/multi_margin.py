"""The multi-class hinge loss on Numba's threads (contract:
``fastloss.backends.numpy.multi_margin``).

A row is read once for its loss and once more, from cache, to write its gradient; rows go in
fixed blocks whose float64 partial sums are added in block order: the same bits at any thread
count.
"""

import numpy as np
from numba import njit, prange

from fastloss.backends.numba import _kernel_copies as copies
from fastloss.backends.numba.softmax_cross_entropy import BLOCK_ELEMENTS, SERIAL_ELEMENTS


@njit(cache=True, inline="always", error_model="numpy")
def _row(scores, label, w, grad_row, p, margin, grad_scale):
    """The row's loss; ``grad_row`` (when given) receives its gradient times ``grad_scale``."""
    classes = scores.size
    shift = margin - np.float64(scores[label])
    total = 0.0
    for j in range(classes):
        h = shift + np.float64(scores[j])
        h = 0.0 if j == label or h < 0.0 else h  # NaN stays NaN
        total += h if p == 1 else h * h
    if grad_row is not None:
        scale = w * grad_scale / classes
        label_grad = 0.0
        for j in range(classes):
            h = shift + np.float64(scores[j])
            slope = 0.0
            if j != label and h > 0.0:
                slope = scale if p == 1 else 2.0 * h * scale
            elif j != label and h != h:
                slope = h
            label_grad -= slope
            grad_row[j] = slope
        grad_row[label] = label_grad
    return w * total / classes


def _kernel(x, labels, weight, grad_out, loss_out, p, margin, divisor):
    rows, classes = x.shape
    row_block = max(1, BLOCK_ELEMENTS // classes)
    blocks = (rows + row_block - 1) // row_block
    partials = np.empty(blocks)
    for block in prange(blocks):
        block_sum = 0.0
        for row in range(block * row_block, min((block + 1) * row_block, rows)):
            label = labels[row]
            w = 1.0 if weight is None else weight[label]
            if grad_out is None:
                loss = _row(x[row], label, w, None, p, margin, 1.0 / divisor)
            else:
                loss = _row(x[row], label, w, grad_out[row], p, margin, 1.0 / divisor)
            if loss_out is not None:
                loss_out[row] = loss
            block_sum += loss
        partials[block] = block_sum
    total = 0.0
    for block in range(blocks):
        total += partials[block]
    return total / divisor


_serial_kernel, _parallel_kernel = copies.serial_and_parallel(_kernel, globals())


def multi_margin(x, labels, weight, grad_out, loss_out, p, margin, divisor):
    kernel = _serial_kernel if x.size <= SERIAL_ELEMENTS else _parallel_kernel
    return kernel(x, labels, weight, grad_out, loss_out, int(p), float(margin), float(divisor))
