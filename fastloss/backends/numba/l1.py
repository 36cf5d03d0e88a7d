"""Numba L1: ``|x - t|`` through the fused elementwise kernel (contract: ``fastloss.backends``)."""

from numba import njit

from fastloss.backends.numba import elementwise


@njit(inline="always")
def _absolute_error(pred, target, aux, param):
    diff = pred - target
    return abs(diff), elementwise.signum(diff)


l1 = elementwise.fused(_absolute_error, scale=1.0)
