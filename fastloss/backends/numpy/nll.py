"""Negative log-likelihood in plain NumPy, float64 throughout.

Contract (every backend's ``nll``): ``nll(log_probs, labels, weight, grad_out, loss_out,
ignore_index, divisor)`` returns the summed row losses ``-weight[y] * log_probs[row, y]`` (0
for ignored rows) over ``divisor`` and writes ``-weight[y] / divisor`` at each row's label
and 0 elsewhere into ``grad_out`` (when given; it may be ``log_probs``), and the row losses
into ``loss_out``. The CPU fronts check the labels first.
"""

import numpy as np


def nll(log_probs, labels, weight, grad_out, loss_out, ignore_index, divisor):
    rows = log_probs.shape[0]
    kept = labels != ignore_index
    picked_labels = np.where(kept, labels, 0)
    w = np.ones(rows) if weight is None else weight[picked_labels]
    w = np.where(kept, w, 0.0)
    picked = log_probs[np.arange(rows), picked_labels].astype(np.float64)
    divisor = np.float64(divisor)
    with np.errstate(invalid="ignore", divide="ignore"):  # 0 * -inf; an empty mean's 0 / 0
        row_losses = np.where(kept, -w * picked, 0.0)
        if grad_out is not None:
            grad_out[...] = 0
            grad_out[np.flatnonzero(kept), labels[kept]] = -w[kept] / divisor
        if loss_out is not None:
            loss_out[...] = row_losses
        return row_losses.sum() / divisor
