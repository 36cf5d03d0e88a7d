"""The multi-class hinge loss in plain NumPy, float64 throughout.

The contract: ``fastloss.backends``.
"""

import numpy as np


def multi_margin(x, labels, weight, grad_out, loss_out, p, margin, divisor):
    z = x.astype(np.float64)
    rows, classes = z.shape
    picked = z[np.arange(rows), labels][:, None]
    w = (np.ones(rows) if weight is None else weight[labels])[:, None]
    with np.errstate(all="ignore"):
        h = margin - picked + z
        # As PyTorch: a term counts where h > 0, so a NaN h (a NaN score, inf - inf) adds
        # nothing to the loss and has slope 0.
        hinge = np.where(h > 0.0, h, 0.0)
        hinge[np.arange(rows), labels] = 0.0
        # The weight multiplies the terms that count only (an infinite one adds no 0 * inf).
        counts = hinge > 0.0
        row_losses = np.where(counts, w * hinge**p, 0.0).sum(axis=1) / classes
        divisor = np.float64(divisor)
        if grad_out is not None:
            # p after the division by k: p h before it may overflow where the slope does not.
            slope = np.where(counts, w * hinge ** (p - 1), 0.0) / classes * p
            # 0 - sum, not -sum: a row without terms gets +0 at its label, as PyTorch.
            slope[np.arange(rows), labels] = 0.0 - slope.sum(axis=1)
            np.copyto(grad_out, slope / divisor, casting="unsafe")
        if loss_out is not None:
            loss_out[...] = row_losses
        return row_losses.sum() / divisor
