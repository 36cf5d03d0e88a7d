"""Softmax, log-softmax and their vector-Jacobian products over rows: the float64 reference.

The contract: ``fastloss.backends``.
"""

import numpy as np


def exp_sum_excess(shifted, exps):
    """sum_c exp(z_c - max) - 1 per row (as a column), without rounding the sum near 1: the
    exponentials at the max (exactly 1) stand apart from the others, which add up to a
    confident row's excess to full precision, where a sum taken whole keeps it only to an
    ulp of 1 (log of that sum: the row's loss to about 1e-16 absolute, however small)."""
    at_max = shifted == 0.0
    rest = np.where(at_max, 0.0, exps).sum(axis=1, keepdims=True)
    return rest + (at_max.sum(axis=1, keepdims=True) - 1.0)


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
        out[...] = x - np.log1p(exp_sum_excess(x, np.exp(x)))


def softmax_backward(p, g, out):
    p, g = p.astype(np.float64), g.astype(np.float64)
    with np.errstate(all="ignore"):
        out[...] = p * (g - (p * g).sum(axis=1, keepdims=True))


# log p above this is p > 1/2: a row's only such class, its max.
LOG_HALF = -0.6931471805599453


def log_softmax_backward(logp, g, out):
    """g_c - p_c sum(g); for p_c > 1/2, where a confident row's max has p_c = 1 - r with r
    small, as (g_c - sum(g)) - expm1(log p_c) sum(g): the exponential rounded to an ulp of
    1 would keep r (NLL's gradient there, -r) only to 1e-16 absolute. A non-finite sum(g)
    takes the first form (the second would give inf - inf)."""
    logp, g = logp.astype(np.float64), g.astype(np.float64)
    with np.errstate(all="ignore"):
        total = g.sum(axis=1, keepdims=True)
        confident = (logp > LOG_HALF) & np.isfinite(total)
        out[...] = np.where(confident, (g - total) - np.expm1(logp) * total,
                            g - np.exp(logp) * total)
