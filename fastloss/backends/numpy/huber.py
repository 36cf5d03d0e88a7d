"""Huber (``param`` = delta) in plain NumPy, float64 throughout."""

import numpy as np

from fastloss.backends.numpy import elementwise


def _huber(pred, target, aux, delta):
    diff = pred - target
    size = np.abs(diff)
    inside = size < delta
    return (np.where(inside, 0.5 * diff * diff, delta * (size - 0.5 * delta)),
            np.where(inside, diff, delta * np.sign(diff)))


huber = elementwise.fused(_huber, scale=1.0)
