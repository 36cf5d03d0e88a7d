"""Binary cross-entropy of probabilities: ``binary_cross_entropy_with_grad`` against the NumPy
expression, PyTorch and the memory floor.
"""

from fastloss.bench import bounds, peers

LOSS = "binary_cross_entropy"


def make(xp, rng, shape):
    probs = rng.random(shape, dtype=peers.DTYPE) * peers.DTYPE(0.998) + peers.DTYPE(0.001)
    return probs, (rng.random(shape, dtype=peers.DTYPE) < 0.5).astype(peers.DTYPE)


def bce(xp, probs, target):
    return -(target * xp.log(probs) + (1 - target) * xp.log(1 - probs))


def expression_grad(xp, probs, target):
    return (probs - target) / (probs * (1 - probs)) / probs.size


SPEC = peers.elementwise_spec(LOSS, make, bce, expression_grad,
                              lambda F, probs, target: F.binary_cross_entropy(probs, target),
                              peers=(bounds.BINARY_CROSS_ENTROPY,), torch_drop_in=True)
