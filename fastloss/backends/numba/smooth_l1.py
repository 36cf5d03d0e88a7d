"""Numba smooth L1 (``param`` = beta) through the fused elementwise kernel."""

import numpy as np
from numba import njit

from fastloss.backends.numba import elementwise

_SMALLEST_NORMAL = float(np.finfo(np.float64).tiny)
_LIFT = 2.0**64


@njit(inline="always")
def _smooth_l1(pred, target, aux, beta):
    diff = pred - target
    size = abs(diff)
    # A multiple of 1 / beta, which LLVM computes once per call: a division
    # per element would cost more than the rest of the loss. Within one
    # float64 rounding of the quotient (the same bits for a power-of-2 beta).
    # A subnormal beta's 1 / beta would overflow: both sides are then scaled
    # by 2**64 first (exactly; a diff that needs the quotient is below beta).
    lift = _LIFT if beta < _SMALLEST_NORMAL else 1.0
    scaled = (diff * lift) * (1.0 / (beta * lift))
    if size < beta:
        return 0.5 * diff * scaled, scaled
    return size - 0.5 * beta, elementwise.signum(diff)


smooth_l1 = elementwise.fused(_smooth_l1, scale=1.0)
