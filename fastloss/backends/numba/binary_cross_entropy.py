"""Numba binary cross-entropy of probabilities through the fused elementwise kernel, in the
input's precision."""

import math

from numba import njit

from fastloss.backends.numba import elementwise
from fastloss.backends.numba._vector_math import (
    clamped,
    like,
    log1m,
    log_nonnegative,
    log_or_log1m,
)

# PyTorch's floor of the gradient's denominator: 1e-12 as a float32.
_EPSILON = 9.999999960041972e-13


@njit(inline="always")
def _binary_cross_entropy(probs, target, aux, param):
    if probs < 0.0 or probs > 1.0 or target < 0.0 or target > 1.0:
        return like(probs, math.nan), like(probs, math.nan)
    one = like(probs, 1.0)
    loss = -(target * clamped(log_nonnegative(probs)) + (one - target) * clamped(log1m(probs)))
    return loss, _slope(probs, target)


@njit(inline="always")
def _binary_cross_entropy_of_hard_target(probs, target, aux, param):
    # For a target of 0 or 1 one of the two terms above is a zero factor times a finite
    # (clamped) log, whose -0 or +0 leaves the other term's bits: that term's log alone.
    if probs < 0.0 or probs > 1.0:
        return like(probs, math.nan), like(probs, math.nan)
    return -clamped(log_or_log1m(probs, target == like(probs, 1.0))), _slope(probs, target)


@njit(inline="always")
def _slope(probs, target):
    spread = (like(probs, 1.0) - probs) * probs
    epsilon = like(probs, _EPSILON)
    return (probs - target) / (epsilon if spread < epsilon else spread)


binary_cross_entropy = elementwise.fused(
    _binary_cross_entropy, scale=1.0, input_precision=True, weighted=True,
    binary_pair=_binary_cross_entropy_of_hard_target,
)
