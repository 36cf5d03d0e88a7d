"""Hinge (``param`` = margin, targets -1 or +1) in plain NumPy, float64 throughout."""

import numpy as np

from fastloss.backends.numpy import elementwise


def _hinge(scores, target, aux, margin):
    gap = margin - target * scores
    valid = (target == 1.0) | (target == -1.0)
    loss = np.where(valid, np.where(gap > 0, gap, np.where(gap <= 0, 0.0, gap)), np.nan)
    slope = np.where(valid, np.where(gap > 0, -target, np.where(gap <= 0, 0.0, gap)), np.nan)
    return loss, slope


hinge = elementwise.fused(_hinge, scale=1.0)
