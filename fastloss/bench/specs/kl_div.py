"""KL divergence: ``kl_div_with_grad`` against the NumPy expression, PyTorch and the memory
floor (``reduction="mean"``, target probabilities, input their candidates' logs).
"""

import warnings

from fastloss.bench import bounds, peers

LOSS = "kl_div"


def make(xp, rng, shape):
    return (rng.standard_normal(shape, dtype=peers.DTYPE),
            rng.random(shape, dtype=peers.DTYPE) * peers.DTYPE(0.999) + peers.DTYPE(0.001))


def kl(xp, log_q, p):
    return p * xp.log(p) - p * log_q


def expression_grad(xp, log_q, p):
    return -p / p.size


def torch_kl_div(F, log_q, p):
    with warnings.catch_warnings():  # PyTorch warns that "mean" is not "batchmean"
        warnings.simplefilter("ignore", UserWarning)
        return F.kl_div(log_q, p)


SPEC = peers.elementwise_spec(LOSS, make, kl, expression_grad, torch_kl_div,
                              peers=(bounds.KL_DIV,), torch_drop_in=True)
