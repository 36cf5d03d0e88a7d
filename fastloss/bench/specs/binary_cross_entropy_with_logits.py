"""Binary cross-entropy of logits against soft targets in [0, 1]:
``binary_cross_entropy_with_logits_with_grad`` against the NumPy expression, PyTorch and the
memory floor.
"""

from fastloss.bench import bounds, peers

LOSS = "binary_cross_entropy_with_logits"


def make(xp, rng, shape):
    return (rng.standard_normal(shape, dtype=peers.DTYPE) * 3,
            rng.random(shape, dtype=peers.DTYPE))


def bce_with_logits(xp, logits, target):
    # The stable form a user writes: max(x, 0) - x t + log(1 + exp(-|x|)).
    return xp.maximum(logits, 0) - logits * target + xp.log1p(xp.exp(-xp.abs(logits)))


def expression_grad(xp, logits, target):
    return (1 / (1 + xp.exp(-logits)) - target) / logits.size


SPEC = peers.elementwise_spec(
    LOSS, make, bce_with_logits, expression_grad,
    lambda F, logits, target: F.binary_cross_entropy_with_logits(logits, target),
    peers=(bounds.BINARY_CROSS_ENTROPY_WITH_LOGITS,), torch_drop_in=True,
)
