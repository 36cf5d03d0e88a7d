"""Smooth L1 (``param`` = beta) in plain NumPy, float64 throughout."""

import numpy as np

from fastloss.backends.numpy import elementwise


def _smooth_l1(pred, target, aux, beta):
    diff = pred - target
    size = np.abs(diff)
    inside = size < beta
    # d (d / beta), not (d d) / beta: d d underflows for a beta below 1e-154.
    scaled = diff / beta
    return (np.where(inside, 0.5 * diff * scaled, size - 0.5 * beta),
            np.where(inside, scaled, np.sign(diff)))


smooth_l1 = elementwise.fused(_smooth_l1, scale=1.0)
