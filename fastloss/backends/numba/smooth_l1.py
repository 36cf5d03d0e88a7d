"""Numba smooth L1 (``param`` = beta) through the fused elementwise kernel."""

from numba import njit

from fastloss.backends.numba import elementwise


@njit(inline="always")
def _smooth_l1(pred, target, aux, beta):
    diff = pred - target
    size = abs(diff)
    # A multiple of 1 / beta, which LLVM computes once per call: a division
    # per element would cost more than the rest of the loss. Within one
    # float64 rounding of the quotient (the same bits for a power-of-2 beta).
    scaled = diff * (1.0 / beta)
    if size < beta:
        return 0.5 * diff * scaled, scaled
    return size - 0.5 * beta, elementwise.signum(diff)


smooth_l1 = elementwise.fused(_smooth_l1, scale=1.0)
