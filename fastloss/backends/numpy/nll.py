"""Negative log-likelihood in plain NumPy, float64 throughout.

The contract: ``fastloss.backends``.
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
    with np.errstate(all="ignore"):  # 0 * -inf; an empty mean's 0 / 0
        row_losses = np.where(kept, -w * picked, 0.0)
        if grad_out is not None:
            grad_out[...] = 0
            grad_out[np.flatnonzero(kept), labels[kept]] = -w[kept] / divisor
        if loss_out is not None:
            loss_out[...] = row_losses
        return row_losses.sum() / divisor
