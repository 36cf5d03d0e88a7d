"""Numba KL divergence (``param`` = log_target) through the fused elementwise kernel, in
the input's precision."""

from numba import njit

from fastloss.backends.numba import elementwise
from fastloss.backends.numba._vector_math import exp, like, xlogx


@njit(inline="always")
def _kl_div(input, target, aux, log_target):
    # p log p - p x, with p = target (or e^target, whose log is target).
    if log_target != 0.0:
        p = exp(target)
        p_log_p = like(p, 0.0) if p == 0.0 else p * target  # 0 log 0 = 0
    else:
        p = target
        p_log_p = xlogx(target)
    return p_log_p - p * input, -p


kl_div = elementwise.fused(_kl_div, scale=1.0, input_precision=True)
