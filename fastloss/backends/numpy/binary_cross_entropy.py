"""Binary cross-entropy of probabilities in plain NumPy, float64 throughout."""

import numpy as np

from fastloss.backends.numpy import elementwise

# PyTorch's floor of the gradient's denominator: 1e-12 as a float32.
_EPSILON = 9.999999960041972e-13


def _clamped(logs):
    # PyTorch's clamp of log at -100; NaN stays NaN.
    return np.where(logs < -100.0, -100.0, logs)


def _binary_cross_entropy(probs, target, aux, param):
    valid = (((probs >= 0) & (probs <= 1) | np.isnan(probs))
             & ((target >= 0) & (target <= 1) | np.isnan(target)))
    # log1p(-p), as PyTorch: log(1 - p) would lose a tiny p's digits in the subtraction.
    loss = -(target * _clamped(np.log(probs)) + (1.0 - target) * _clamped(np.log1p(-probs)))
    spread = (1.0 - probs) * probs
    slope = (probs - target) / np.where(spread < _EPSILON, _EPSILON, spread)
    return np.where(valid, loss, np.nan), np.where(valid, slope, np.nan)


binary_cross_entropy = elementwise.fused(_binary_cross_entropy, scale=1.0)
