"""fastloss: fused, stable, deterministic losses and their gradients.

Importing fastloss imports neither numba, cupy nor dask: backends load on first use, and a
call with dask arrays goes to ``fastloss.dask``.
"""

from fastloss._registry import routes_dask
from fastloss.losses.mse import mse, mse_grad, mse_with_grad
from fastloss.losses.softmax_cross_entropy import (
    softmax_cross_entropy,
    softmax_cross_entropy_grad,
    softmax_cross_entropy_with_grad,
)

mse, mse_grad, mse_with_grad = map(routes_dask, (mse, mse_grad, mse_with_grad))
softmax_cross_entropy, softmax_cross_entropy_grad, softmax_cross_entropy_with_grad = map(
    routes_dask,
    (softmax_cross_entropy, softmax_cross_entropy_grad, softmax_cross_entropy_with_grad),
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
