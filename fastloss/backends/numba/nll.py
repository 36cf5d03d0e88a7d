"""Negative log-likelihood on Numba's threads (contract: ``fastloss.backends.numpy.nll``).

Rows go in fixed blocks whose float64 partial sums are added in block order: the same bits
at any thread count. Each row reads one log-probability and writes its gradient row once.
"""

import numpy as np
from numba import prange

from fastloss.backends.numba import _kernel_copies as copies
from fastloss.backends.numba.softmax_cross_entropy import BLOCK_ELEMENTS, SERIAL_ELEMENTS


def _kernel(log_probs, labels, weight, grad_out, loss_out, ignore_index, divisor):
    rows, classes = log_probs.shape
    row_block = max(1, BLOCK_ELEMENTS // classes)
    blocks = (rows + row_block - 1) // row_block
    partials = np.empty(blocks)
    for block in prange(blocks):
        block_sum = 0.0
        for row in range(block * row_block, min((block + 1) * row_block, rows)):
            label = labels[row]
            loss = 0.0
            w = 0.0
            if label != ignore_index:
                w = weight[label] if weight.size else 1.0
                loss = -w * np.float64(log_probs[row, label])
            # Written after the row's one read: grad_out may be log_probs itself.
            if grad_out is not None:
                grad_out[row, :] = 0
                if label != ignore_index:
                    grad_out[row, label] = -w / divisor
            if loss_out.size:
                loss_out[row] = loss
            block_sum += loss
        partials[block] = block_sum
    total = 0.0
    for block in range(blocks):
        total += partials[block]
    return total / divisor


_serial_kernel, _parallel_kernel = copies.serial_and_parallel(_kernel, globals())


def nll(log_probs, labels, weight, grad_out, loss_out, ignore_index, divisor):
    kernel = _serial_kernel if log_probs.size <= SERIAL_ELEMENTS else _parallel_kernel
    return kernel(log_probs, labels, copies.present(weight), grad_out, copies.present(loss_out),
                  int(ignore_index), float(divisor))
