"""Hinge loss (margin 1, targets -1/+1): ``hinge_with_grad`` against the NumPy expression,
PyTorch (``relu(1 - t x)`` with autograd; it has no elementwise hinge) and the memory floor.
"""

from fastloss.bench import peers

LOSS = "hinge"


def make(xp, rng, shape):
    signs = xp.where(rng.random(shape, dtype=peers.DTYPE) < 0.5, -1, 1).astype(peers.DTYPE)
    return rng.standard_normal(shape, dtype=peers.DTYPE), signs


def hinge(xp, scores, target):
    return xp.maximum(0, 1 - target * scores)


def expression_grad(xp, scores, target):
    return xp.where(1 - target * scores > 0, -target, 0) / scores.size


SPEC = peers.elementwise_spec(LOSS, make, hinge, expression_grad,
                              lambda F, scores, target: F.relu(1 - target * scores).mean())
