"""The elementwise reference: a loss's functor on whole float64 arrays, then one sum.

A loss module defines ``pair(x, t, aux, param) -> (loss, slope)`` on float64
arrays (``aux`` is 1.0 without an aux array) and makes its backend function
with :func:`fused`; ``slope * scale`` is the derivative of the loss.
"""

import numpy as np

from fastloss.backends import repeated


def fused(pair, scale: float):
    """The backend function of the elementwise loss ``pair`` (contract: ``fastloss.backends``)."""

    def backend_function(x, target, grad_out, loss_out, divisor, weight=None, aux=None,
                         param=0.0):
        divisor = np.float64(divisor)
        weight, aux = repeated(weight, x.size, np), repeated(aux, x.size, np)
        with np.errstate(all="ignore"):
            auxiliary = 1.0 if aux is None else aux.astype(np.float64)
            loss, slope = pair(x.astype(np.float64), target.astype(np.float64), auxiliary,
                               np.float64(param))
            if weight is not None:
                loss, slope = loss * weight, slope * weight
            if grad_out is not None:
                np.multiply(slope, scale / divisor, out=grad_out, casting="unsafe")
            if loss_out is not None:
                np.copyto(loss_out, loss, casting="unsafe")
            # NumPy's pairwise summation is both accurate and a fixed order.
            return loss.sum() / divisor

    return backend_function
