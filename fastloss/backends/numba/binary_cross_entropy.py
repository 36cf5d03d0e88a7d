"""Numba binary cross-entropy of probabilities through the fused elementwise kernel."""

import math

from numba import njit

from fastloss.backends.numba import elementwise

# PyTorch's floor of the gradient's denominator: 1e-12 as a float32.
_EPSILON = 9.999999960041972e-13


@njit(inline="always")
def _clamped_log(value):
    # PyTorch's clamp of log at -100, which keeps 0 * log 0 finite; NaN stays NaN.
    result = math.log(value)
    return -100.0 if result < -100.0 else result


@njit(inline="always")
def _binary_cross_entropy(probs, target, aux, param):
    if probs < 0.0 or probs > 1.0:
        return math.nan, math.nan
    loss = -(target * _clamped_log(probs) + (1.0 - target) * _clamped_log(1.0 - probs))
    spread = (1.0 - probs) * probs
    return loss, (probs - target) / (_EPSILON if spread < _EPSILON else spread)


binary_cross_entropy = elementwise.fused(_binary_cross_entropy, scale=1.0)
