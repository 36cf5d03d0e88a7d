"""MSE in plain NumPy, float64 throughout."""

import numpy as np


def mse(pred, target, grad_out, loss_out, grad_scale):
    diff = pred.astype(np.float64) - target
    if grad_out is not None:
        np.multiply(diff, grad_scale, out=grad_out, casting="unsafe")
    squares = np.square(diff)
    if loss_out is not None:
        np.copyto(loss_out, squares, casting="unsafe")
    # NumPy's pairwise summation is both accurate and a fixed order.
    return np.float64(squares.sum())
