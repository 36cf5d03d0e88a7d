"""Numba binary cross-entropy of probabilities through the fused elementwise kernel."""

import math

from numba import njit

from fastloss.backends.numba import elementwise
from fastloss.backends.numba._vector_math import log_clamped

# PyTorch's floor of the gradient's denominator: 1e-12 as a float32.
_EPSILON = 9.999999960041972e-13


@njit(inline="always")
def _binary_cross_entropy(probs, target, aux, param):
    if probs < 0.0 or probs > 1.0:
        return math.nan, math.nan
    loss = -(target * log_clamped(probs) + (1.0 - target) * log_clamped(1.0 - probs))
    spread = (1.0 - probs) * probs
    return loss, (probs - target) / (_EPSILON if spread < _EPSILON else spread)


binary_cross_entropy = elementwise.fused(_binary_cross_entropy, scale=1.0)
