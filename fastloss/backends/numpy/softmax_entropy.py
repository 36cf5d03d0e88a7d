"""The entropy of each row's softmax in plain NumPy, float64 throughout.

The contract: ``fastloss.backends``.
"""

import numpy as np

from fastloss.backends.numpy.softmax import exp_sum_excess


def softmax_entropy(logits, grad_out, loss_out, divisor):
    z = logits.astype(np.float64)
    divisor = np.float64(divisor)
    with np.errstate(all="ignore"):
        shifted = z - z.max(axis=1, keepdims=True)
        e = np.exp(shifted)
        excess = exp_sum_excess(shifted, e)
        log_p = shifted - np.log1p(excess)
        p = e / (1.0 + excess)
        p_log_p = np.where(p == 0.0, 0.0, p * log_p)  # a logit of -inf adds 0
        row_losses = -p_log_p.sum(axis=1)
        if grad_out is not None:
            grad = np.where(p == 0.0, 0.0, -p * (log_p + row_losses[:, None]))
            np.copyto(grad_out, grad / divisor, casting="unsafe")
        if loss_out is not None:
            loss_out[...] = row_losses
        return row_losses.sum() / divisor
