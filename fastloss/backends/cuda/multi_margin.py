"""The multi-class margin loss on the GPU: the launcher of ``kernels/multi_margin.cu``.

Contract (called by the front inside the inputs' device scope): ``x`` is
``(N, k)``, C-contiguous, float16, bfloat16, float32 or float64, k >= 1, N >= 0.
Two launches per call: the row pass (none when N == 0), then the finishing
kernel that writes the loss in ``x``'s dtype. Halves and float32 compute
elements in float32 and row sums in float64; float64 in float64. A row of up to
4096 classes is read once and its gradient written once; a longer row is
streamed: read twice when there is a gradient (once without). The same inputs
give the same bits, run after run, on any GPU.
"""

from __future__ import annotations

import numpy as np

from fastloss.backends.cuda import _module

# The row kernels' launch, in cross-entropy's geometry (common/rows.cuh), fixed by (rows, k) alone.
from fastloss.backends.cuda.softmax_cross_entropy import launch_rows


def multi_margin(x, labels, weight, grad_out, loss_out, p, margin, divisor):
    """Row ``r`` with label ``y``: ``h_j = max(0, margin - x[r, y] + x[r, j])`` for
    ``j != y``, loss ``w_y * sum_j h_j**p / k`` (``w_y = weight[y]``, or 1), gradient
    ``w_y * p * h_j**(p-1) / k / divisor`` where ``h_j > 0`` (0 elsewhere) and minus
    their sum at ``y``. A label outside ``[0, k)`` gives a NaN loss and gradient row.

    ``labels``: ``(N,)`` int64; ``weight``: ``(k,)`` float64 or None; ``grad_out``:
    like ``x`` (may be it) or None; ``loss_out``: ``(N,)`` float64 or None; ``p``: 1
    or 2; ``margin``: a float; ``divisor``: a number (N for "mean", 1 otherwise) or a
    0-d float64 device array. Returns the sum of the row losses / divisor as a new
    0-d array of ``x``'s dtype, summed in an order fixed by ``(N, k)``.
    """
    dtype = x.dtype
    entry = _module.entry("multi_margin", dtype)
    assert x.ndim == 2 and x.shape[1] >= 1, x.shape
    assert p in (1, 2), p
    rows, classes = x.shape
    _module.expect(x, "x", x.shape, dtype)
    _module.expect(labels, "labels", (rows,), np.int64)
    _module.expect(weight, "weight", (classes,), np.float64)
    _module.expect(grad_out, "grad_out", x.shape, dtype)
    _module.expect(loss_out, "loss_out", (rows,), np.float64)
    return launch_rows("multi_margin", entry, x,
                       (x, labels, _module.pointer_or_null(weight)), grad_out, loss_out,
                       (np.int32(p), np.float64(margin)), divisor)
