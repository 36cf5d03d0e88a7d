"""Numba hinge (``param`` = margin, targets -1 or +1) through the fused elementwise kernel."""

import math

from numba import njit

from fastloss.backends.numba import elementwise


@njit(inline="always")
def _hinge(scores, target, aux, margin):
    gap = margin - target * scores
    if target != 1.0 and target != -1.0:
        return math.nan, math.nan
    if gap > 0.0:
        return gap, -target
    if gap <= 0.0:
        return 0.0, 0.0
    return gap, gap


hinge = elementwise.fused(_hinge, scale=1.0)
