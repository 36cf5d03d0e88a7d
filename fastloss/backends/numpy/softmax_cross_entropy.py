"""Softmax cross-entropy in plain NumPy, float64 throughout."""

import numpy as np

from fastloss.backends.numpy.softmax import exp_sum_excess


def _target_weights(target, rows, classes, weight, ignore_index, label_smoothing):
    """``q_ic * w_c`` for every row and class, and the mask of ignored rows."""
    if target.ndim == 1:
        ignored = target == ignore_index
        onehot = np.zeros((rows, classes))
        onehot[np.arange(rows), np.where(ignored, 0, target)] = 1.0
    else:
        ignored = np.zeros(rows, dtype=bool)
        onehot = target.astype(np.float64)
    q = (1.0 - label_smoothing) * onehot + label_smoothing / classes
    if weight is not None and target.ndim == 1:
        # A class that is no row's label: 0, even at w = inf (PyTorch reads only w[label]).
        q = np.where(q == 0.0, 0.0, q * weight)
    elif weight is not None:
        q = q * weight  # as PyTorch's w * t: an infinite weight on a class of t = 0 is NaN
    q[ignored] = 0.0
    return q, ignored


def softmax_cross_entropy(
    logits, target, weight, grad_out, loss_out, ignore_index, label_smoothing, divisor
):
    z = logits.astype(np.float64)
    rows, classes = z.shape
    with np.errstate(all="ignore"):
        qw, ignored = _target_weights(target, rows, classes, weight, ignore_index,
                                      label_smoothing)
        shifted = z - z.max(axis=1, keepdims=True)
        exps = np.exp(shifted)
        excess = exp_sum_excess(shifted, exps)
        log_softmax = shifted - np.log1p(excess)
        # 0 * log 0 is 0 (a target of no mass on a logit of -inf), but NaN stays NaN.
        row_losses = -np.where((qw == 0) & ~np.isnan(log_softmax), 0.0, qw * log_softmax).sum(1)
        row_losses[ignored] = 0.0  # an ignored row adds nothing, NaN logits or not
        divisor = np.float64(divisor)
        total = row_losses.sum() / divisor
        if grad_out is not None:
            # p S - q = (e S - q (1 + excess)) / (1 + excess), with S = sum q: at a
            # confident row's max (e = 1, p near 1) against its label, e S - q is exactly 0
            # and the rest keeps the digits that p S - q would cancel away.
            weights = qw.sum(axis=1, keepdims=True)
            grad = 1.0 / divisor * (((exps * weights - qw) - qw * excess) / (1.0 + excess))
            grad[ignored] = 0.0
            np.copyto(grad_out, grad, casting="unsafe")
    if loss_out is not None:
        loss_out[...] = row_losses
    return total


def label_summary(labels, weight, classes, ignore_index):
    """``(first, kept)`` for int64 class indices: the position of the first
    label outside [0, classes) that is not ignore_index (-1 when all are
    valid), and, when all are, what a "mean" divides by: the number of rows
    not ignored, or the sum of their labels' class weights."""
    kept = labels != ignore_index
    invalid = np.flatnonzero(kept & ((labels < 0) | (labels >= classes)))
    if invalid.size:
        return int(invalid[0]), 0
    if weight is None:
        return -1, int(kept.sum())
    # The kept rows' labels alone: an ignored row looks up no weight (inf or NaN times 0).
    return -1, float(weight[labels[kept]].sum())
