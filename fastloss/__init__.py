"""fastloss: fused, stable, deterministic losses and their gradients.

Importing fastloss imports neither numba, cupy nor dask: backends load on first use, and a
call with dask arrays goes to ``fastloss.dask``.
"""

from fastloss.losses.binary_cross_entropy import (
    binary_cross_entropy,
    binary_cross_entropy_grad,
    binary_cross_entropy_with_grad,
)
from fastloss.losses.binary_cross_entropy_with_logits import (
    binary_cross_entropy_with_logits,
    binary_cross_entropy_with_logits_grad,
    binary_cross_entropy_with_logits_with_grad,
)
from fastloss.losses.hinge import hinge, hinge_grad, hinge_with_grad
from fastloss.losses.huber import huber, huber_grad, huber_with_grad
from fastloss.losses.kl_div import kl_div, kl_div_grad, kl_div_with_grad
from fastloss.losses.l1 import l1, l1_grad, l1_with_grad
from fastloss.losses.mse import mse, mse_grad, mse_with_grad
from fastloss.losses.multi_margin import (
    multi_margin,
    multi_margin_grad,
    multi_margin_with_grad,
)
from fastloss.losses.nll import nll, nll_grad, nll_with_grad
from fastloss.losses.smooth_l1 import smooth_l1, smooth_l1_grad, smooth_l1_with_grad
from fastloss.losses.softmax import log_softmax, log_softmax_backward, softmax, softmax_backward
from fastloss.losses.softmax_cross_entropy import (
    softmax_cross_entropy,
    softmax_cross_entropy_grad,
    softmax_cross_entropy_with_grad,
)
from fastloss.losses.softmax_entropy import (
    softmax_entropy,
    softmax_entropy_grad,
    softmax_entropy_with_grad,
)

__version__ = "0.1.0"

__all__ = [
    "mse",
    "mse_grad",
    "mse_with_grad",
    "l1",
    "l1_grad",
    "l1_with_grad",
    "smooth_l1",
    "smooth_l1_grad",
    "smooth_l1_with_grad",
    "huber",
    "huber_grad",
    "huber_with_grad",
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy_with_logits_grad",
    "binary_cross_entropy_with_logits_with_grad",
    "binary_cross_entropy",
    "binary_cross_entropy_grad",
    "binary_cross_entropy_with_grad",
    "hinge",
    "hinge_grad",
    "hinge_with_grad",
    "kl_div",
    "kl_div_grad",
    "kl_div_with_grad",
    "softmax_cross_entropy",
    "softmax_cross_entropy_grad",
    "softmax_cross_entropy_with_grad",
    "multi_margin",
    "multi_margin_grad",
    "multi_margin_with_grad",
    "nll",
    "nll_grad",
    "nll_with_grad",
    "softmax_entropy",
    "softmax_entropy_grad",
    "softmax_entropy_with_grad",
    "softmax",
    "log_softmax",
    "softmax_backward",
    "log_softmax_backward",
]
