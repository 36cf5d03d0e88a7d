"""Numba binary cross-entropy of logits (``aux`` = pos_weight) through the fused elementwise
kernel, in the input's precision."""

from numba import njit

from fastloss.backends.numba import elementwise
from fastloss.backends.numba._vector_math import exp_nonpositive, like, log1p_unit


@njit(inline="always")
def _binary_cross_entropy_with_logits(logits, target, pos_weight, param):
    # loss = (1 - t) x + l softplus(-x), l = 1 + (pos_weight - 1) t, in the
    # form without cancellation: for x < 0, (1 - t) x - l x = -pos_weight t x.
    # A zero coefficient adds nothing even to an infinite logit.
    one, zero = like(logits, 1.0), like(logits, 0.0)
    tail = exp_nonpositive(-abs(logits))
    log_weight = one + (pos_weight - one) * target
    coefficient = one - target if logits >= zero else -pos_weight * target
    linear = coefficient * logits if coefficient != zero else zero
    # One division serves the sigmoid and log1p's correction.
    inverse = one / (one + tail)
    small = tail * inverse  # sigmoid(-|x|), without cancellation
    softplus = log1p_unit(tail, inverse)
    # The slope (1 - t) - l sigmoid(-x) is l sigmoid(x) - pos_weight t: for x < 0 the
    # second form, whose sigmoid is the small one, so that t = 0 keeps every digit. Either
    # way the coefficient, plus or minus l sigmoid(-|x|).
    weighted_small = log_weight * small
    slope = coefficient - weighted_small if logits >= zero else coefficient + weighted_small
    return linear + log_weight * softplus, slope


binary_cross_entropy_with_logits = elementwise.fused(
    _binary_cross_entropy_with_logits, scale=1.0, input_precision=True, weighted=True
)
