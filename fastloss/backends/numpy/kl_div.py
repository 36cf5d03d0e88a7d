"""KL divergence (``param`` = log_target) in plain NumPy, float64 throughout."""

import numpy as np

from fastloss.backends.numpy import elementwise


def _kl_div(input, target, aux, log_target):
    # p log p - p x, with p = target; or with p = e^target, whose log is target, as
    # p (target - x) (PyTorch's form: an e^target past the largest float gives inf, not
    # inf - inf), and 0 log 0 = 0 where p is 0.
    if log_target:
        p = np.exp(target)
        return np.where(p == 0.0, 0.0 - p * input, p * (target - input)), -p
    p_log_p = np.where(target == 0.0, 0.0, target * np.log(target))
    return p_log_p - target * input, -target


kl_div = elementwise.fused(_kl_div, scale=1.0)
