"""Numba KL divergence (``param`` = log_target) through the fused elementwise kernel, in
the input's precision."""

from numba import njit

from fastloss.backends.numba import elementwise
from fastloss.backends.numba._vector_math import exp, like, xlogx


@njit(inline="always")
def _kl_div(input, target, aux, log_target):
    # p log p - p x, with p = target; or with p = e^target, whose log is target, as
    # p (target - x) (PyTorch's form: an e^target past the largest float gives inf, not
    # inf - inf), and 0 log 0 = 0 where p is 0.
    zero = like(input, 0.0)
    if log_target != 0.0:
        p = exp(target)
        return (zero - p * input if p == zero else p * (target - input)), -p
    return xlogx(target) - target * input, -target


kl_div = elementwise.fused(_kl_div, scale=1.0, input_precision=True)
