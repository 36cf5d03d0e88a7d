"""MSE in plain NumPy, float64 throughout."""

import numpy as np


def mse(pred, target, grad_out, loss_out, divisor):
    diff = pred.astype(np.float64) - target
    with np.errstate(divide="ignore", invalid="ignore"):
        if grad_out is not None:
            np.multiply(diff, 2.0 / np.float64(divisor), out=grad_out, casting="unsafe")
        squares = np.square(diff)
        if loss_out is not None:
            np.copyto(loss_out, squares, casting="unsafe")
        # NumPy's pairwise summation is both accurate and a fixed order.
        return squares.sum() / np.float64(divisor)
