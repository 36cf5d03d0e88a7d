"""Numba Huber (``param`` = delta) through the fused elementwise kernel."""

from numba import njit

from fastloss.backends.numba import elementwise


@njit(inline="always")
def _huber(pred, target, aux, delta):
    diff = pred - target
    size = abs(diff)
    if size < delta:
        return 0.5 * diff * diff, diff
    return delta * (size - 0.5 * delta), delta * elementwise.signum(diff)


huber = elementwise.fused(_huber, scale=1.0)
