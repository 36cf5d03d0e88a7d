"""Binary cross-entropy of logits (``aux`` = pos_weight) in plain NumPy, float64 throughout."""

import numpy as np

from fastloss.backends.numpy import elementwise


def _binary_cross_entropy_with_logits(logits, target, pos_weight, param):
    # loss = (1 - t) x + l softplus(-x), l = 1 + (pos_weight - 1) t; for x < 0
    # as -pos_weight t x + l log1p(exp(x)), without cancellation. A zero
    # coefficient adds nothing even to an infinite logit.
    tail = np.exp(-np.abs(logits))
    log_weight = 1.0 + (pos_weight - 1.0) * target
    positive = logits >= 0
    coefficient = np.where(positive, 1.0 - target, -pos_weight * target)
    linear = np.where(coefficient != 0, coefficient * logits, 0.0)
    # The slope (1 - t) - l sigmoid(-x) is l sigmoid(x) - pos_weight t; for x < 0 the second
    # form, whose sigmoid is sigmoid(-|x|), so that t = 0 keeps every digit. Either way the
    # coefficient, plus or minus l sigmoid(-|x|).
    small = log_weight * (tail / (1.0 + tail))
    slope = np.where(positive, coefficient - small, coefficient + small)
    return linear + log_weight * np.log1p(tail), slope


binary_cross_entropy_with_logits = elementwise.fused(_binary_cross_entropy_with_logits,
                                                     scale=1.0)
