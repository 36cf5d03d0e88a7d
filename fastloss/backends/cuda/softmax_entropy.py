"""The entropy of each row's softmax on the GPU: the launcher of ``kernels/softmax_entropy.cu``.

Contract (called by the front inside the inputs' device scope): ``logits`` is
``(N, k)``, C-contiguous, float16, bfloat16, float32 or float64, k >= 1, N >= 0.
Two launches per call: the row pass (none when N == 0), then the finishing
kernel that writes the loss in the logits' dtype. Halves and float32 compute
elements in float32 and row sums in float64; float64 in float64. A row of up to
4096 classes is read once and its gradient written once; a longer row is read
twice when there is a gradient (once without). The same inputs give the same
bits run after run; float64 also on any GPU, while the others' exponentials are
the GPU's hardware ``exp``, whose bits may differ between architectures (as
cross-entropy's).
"""

from __future__ import annotations

import numpy as np

from fastloss.backends.cuda import _module

# The row kernels' launch, in cross-entropy's geometry (common/rows.cuh), fixed by (rows, k) alone.
from fastloss.backends.cuda.softmax_cross_entropy import launch_rows


def softmax_entropy(logits, grad_out, loss_out, divisor):
    """Row ``r``: ``H_r = -sum_j p_j log p_j`` with ``p = softmax(logits[r])`` (terms
    with ``p_j == 0`` count 0), and gradient row ``-p_j (log p_j + H_r) / divisor``.

    ``grad_out``: like ``logits`` (may be it) or None; ``loss_out``: ``(N,)`` float64
    or None, receives ``H_r``; ``divisor``: a number (N for "mean", 1 otherwise) or a
    0-d float64 device array. Returns ``sum_r H_r / divisor`` as a new 0-d array of
    ``logits``' dtype, summed in an order fixed by ``(N, k)``. A row of only -inf,
    or with a NaN or +inf, has NaN entropy and gradient.
    """
    dtype = logits.dtype
    entry = _module.entry("softmax_entropy", dtype)
    assert logits.ndim == 2 and logits.shape[1] >= 1, logits.shape
    rows = logits.shape[0]
    _module.expect(logits, "logits", logits.shape, dtype)
    _module.expect(grad_out, "grad_out", logits.shape, dtype)
    _module.expect(loss_out, "loss_out", (rows,), np.float64)
    return launch_rows("softmax_entropy", entry, logits,
                       (logits,), grad_out, loss_out, (), divisor)
