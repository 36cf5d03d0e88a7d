"""fastloss: fused, stable, deterministic losses and their gradients.

Importing fastloss imports neither numba nor cupy: backends load on first use.
"""

from fastloss.losses.mse import mse, mse_grad, mse_with_grad
from fastloss.losses.softmax_cross_entropy import (
    softmax_cross_entropy,
    softmax_cross_entropy_grad,
    softmax_cross_entropy_with_grad,
)

__version__ = "0.1.0"

__all__ = [
    "mse",
    "mse_grad",
    "mse_with_grad",
    "softmax_cross_entropy",
    "softmax_cross_entropy_grad",
    "softmax_cross_entropy_with_grad",
]
