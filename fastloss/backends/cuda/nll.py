"""Negative log-likelihood over class indices on the GPU: the launcher of ``kernels/nll.cu``.

Contract: ``fastloss.backends``, as softmax cross-entropy's without label
smoothing. Two launches per call: the row pass, then the finishing kernel that
writes the loss in the log-probabilities' dtype. A "mean"'s divisor comes from
softmax cross-entropy's ``mean_divisor`` hook (a 0-d float64 device array).
"""

from __future__ import annotations

import numpy as np

from fastloss.backends.cuda import _module

# The row kernels' launch, in cross-entropy's geometry (common/rows.cuh), fixed by (rows, k) alone.
from fastloss.backends.cuda.softmax_cross_entropy import launch_rows


def nll(log_probs, labels, weight, grad_out, loss_out, ignore_index, divisor):
    """Row ``r`` with label ``y``: loss ``-weight[y] * log_probs[r, y]`` and a gradient row
    of zeros but ``-weight[y] / divisor`` at ``y``; 0 and zeros for ``y == ignore_index``;
    NaN and NaNs for any other ``y`` outside ``[0, k)``.

    ``log_probs``: ``(N, k)`` C-contiguous, k >= 1; ``labels``: ``(N,)`` int64;
    ``weight``: ``(k,)`` float64 or None; ``grad_out``: like ``log_probs`` (may be
    it) or None; ``loss_out``: ``(N,)`` float64 or None; ``divisor``: a number or a
    0-d float64 device array. Returns the sum of the row losses / divisor as a new
    0-d array of ``log_probs``' dtype, summed in an order fixed by ``(N, k)``.
    """
    dtype = log_probs.dtype
    entry = _module.entry("nll", dtype)
    assert log_probs.ndim == 2 and log_probs.shape[1] >= 1, log_probs.shape
    rows, classes = log_probs.shape
    _module.expect(log_probs, "log_probs", log_probs.shape, dtype)
    _module.expect(labels, "labels", (rows,), np.int64)
    _module.expect(weight, "weight", (classes,), np.float64)
    _module.expect(grad_out, "grad_out", log_probs.shape, dtype)
    _module.expect(loss_out, "loss_out", (rows,), np.float64)
    return launch_rows("nll", entry, log_probs,
                       (log_probs, labels, _module.pointer_or_null(weight)), grad_out,
                       loss_out, (np.int64(ignore_index),), divisor)
