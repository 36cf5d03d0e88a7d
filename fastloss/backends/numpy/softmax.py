"""Softmax, log-softmax and their vector-Jacobian products over rows: the float64 reference.

The contract: ``fastloss.backends``.
"""

import numpy as np


def _shifted(z):
    x = z.astype(np.float64)
    return x - x.max(axis=1, keepdims=True)


# Each under np.errstate(all="ignore"), as the other reference kernels: an exponential that
# underflows to 0, a result that rounds to 0 or inf in out's dtype, and NaN or all -inf rows
# (NaN) are IEEE's results, whatever NumPy's error settings of the caller.


def softmax(z, out):
    with np.errstate(all="ignore"):
        e = np.exp(_shifted(z))
        out[...] = e / e.sum(axis=1, keepdims=True)


def log_softmax(z, out):
    with np.errstate(all="ignore"):
        x = _shifted(z)
        out[...] = x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def softmax_backward(p, g, out):
    p, g = p.astype(np.float64), g.astype(np.float64)
    with np.errstate(all="ignore"):
        out[...] = p * (g - (p * g).sum(axis=1, keepdims=True))


def log_softmax_backward(logp, g, out):
    g = g.astype(np.float64)
    with np.errstate(all="ignore"):
        out[...] = g - np.exp(logp.astype(np.float64)) * g.sum(axis=1, keepdims=True)
