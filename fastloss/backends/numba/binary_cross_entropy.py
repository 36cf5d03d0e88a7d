"""Numba binary cross-entropy of probabilities through the fused elementwise kernel, in the
input's precision."""

import math

from numba import njit

from fastloss.backends.numba import elementwise
from fastloss.backends.numba._vector_math import clamped, like, log1m, log_nonnegative

# PyTorch's floor of the gradient's denominator: 1e-12 as a float32.
_EPSILON = 9.999999960041972e-13


@njit(inline="always")
def _binary_cross_entropy(probs, target, aux, param):
    if probs < 0.0 or probs > 1.0 or target < 0.0 or target > 1.0:
        return like(probs, math.nan), like(probs, math.nan)
    one = like(probs, 1.0)
    loss = -(target * clamped(log_nonnegative(probs)) + (one - target) * clamped(log1m(probs)))
    spread = (one - probs) * probs
    epsilon = like(probs, _EPSILON)
    return loss, (probs - target) / (epsilon if spread < epsilon else spread)


binary_cross_entropy = elementwise.fused(_binary_cross_entropy, scale=1.0,
                                         input_precision=True, weighted=True)
