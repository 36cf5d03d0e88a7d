"""Softmax, log-softmax and their vector-Jacobian products over rows: the float64 reference.

The contract: ``fastloss.backends``.
"""

import numpy as np


def _shifted(z):
    x = z.astype(np.float64)
    with np.errstate(invalid="ignore"):  # NaN rows stay NaN; all -inf rows become NaN
        return x - x.max(axis=1, keepdims=True)


def softmax(z, out):
    e = np.exp(_shifted(z))
    out[...] = e / e.sum(axis=1, keepdims=True)


def log_softmax(z, out):
    x = _shifted(z)
    out[...] = x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def softmax_backward(p, g, out):
    p, g = p.astype(np.float64), g.astype(np.float64)
    out[...] = p * (g - (p * g).sum(axis=1, keepdims=True))


def log_softmax_backward(logp, g, out):
    g = g.astype(np.float64)
    out[...] = g - np.exp(logp.astype(np.float64)) * g.sum(axis=1, keepdims=True)
