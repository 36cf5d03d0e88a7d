"""Numba smooth L1 (``param`` = beta) through the fused elementwise kernel."""

from numba import njit

from fastloss.backends.numba import elementwise


@njit(inline="always")
def _smooth_l1(pred, target, aux, beta):
    diff = pred - target
    size = abs(diff)
    if size < beta:
        return 0.5 * diff * diff / beta, diff / beta
    return size - 0.5 * beta, elementwise.signum(diff)


smooth_l1 = elementwise.fused(_smooth_l1, scale=1.0)
