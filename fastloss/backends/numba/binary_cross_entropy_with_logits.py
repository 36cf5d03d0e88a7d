"""Numba binary cross-entropy of logits (``aux`` = pos_weight) through the fused elementwise
kernel."""

from numba import njit

from fastloss.backends.numba import elementwise
from fastloss.backends.numba._vector_math import exp_nonpositive, log1p_unit


@njit(inline="always")
def _binary_cross_entropy_with_logits(logits, target, pos_weight, param):
    # loss = (1 - t) x + l softplus(-x), l = 1 + (pos_weight - 1) t, in the
    # form without cancellation: for x < 0, (1 - t) x - l x = -pos_weight t x.
    # A zero coefficient adds nothing even to an infinite logit.
    tail = exp_nonpositive(-abs(logits))
    log_weight = 1.0 + (pos_weight - 1.0) * target
    coefficient = 1.0 - target if logits >= 0.0 else -pos_weight * target
    linear = coefficient * logits if coefficient != 0.0 else 0.0
    # One division for both forms (a multiply by it is within one float64
    # rounding of a second division).
    inverse = 1.0 / (1.0 + tail)
    sigmoid_neg = tail * inverse if logits >= 0.0 else inverse
    return linear + log_weight * log1p_unit(tail), (1.0 - target) - log_weight * sigmoid_neg


binary_cross_entropy_with_logits = elementwise.fused(_binary_cross_entropy_with_logits,
                                                     scale=1.0)
