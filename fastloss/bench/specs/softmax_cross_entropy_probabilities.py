"""Softmax cross-entropy against class probabilities (soft targets, as in distillation): each
target row a softmax of normal noise, of the logits' shape and dtype. A variant of
``softmax_cross_entropy``: run it by name (``--losses softmax_cross_entropy_probabilities``)."""

from fastloss.bench import bounds, peers
from fastloss.bench.specs import softmax_cross_entropy as labels

LOSS = "softmax_cross_entropy_probabilities"


def make(xp, rng, shape):
    noise = rng.standard_normal(shape, dtype=peers.DTYPE)
    probabilities = xp.exp(noise - noise.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return rng.standard_normal(shape, dtype=peers.DTYPE), probabilities


def op_bytes(op, shape, itemsize=4):
    """Logits and targets read; the gradient written."""
    block = shape[0] * shape[1] * itemsize
    return 2 * block if op == "forward" else 3 * block


def reference(xp, logits, probabilities):
    """The summed loss of a block of rows, both in float64."""
    return float((probabilities * (labels._log_sum_exp(xp, logits) - logits)).sum())


def _loss(xp, logits, probabilities, lse):
    return -xp.mean((probabilities * (logits - lse)).sum(axis=1))


def _grad(xp, logits, probabilities, lse):
    # What a user writes for rows of probabilities that sum to 1 (fastloss and PyTorch scale
    # the softmax by each row's sum).
    grad = xp.exp(logits - lse)
    grad -= probabilities
    grad /= logits.shape[0]
    return grad


SPEC = peers.Spec(
    loss=LOSS, make=make, bytes=op_bytes, reference=reference, count=lambda shape: shape[0],
    expression=labels.expressions(_loss, _grad),
    torch=lambda F, logits, probabilities: F.cross_entropy(logits, probabilities),
    sizes=("256x32000", "1024x32000"), quick_sizes=("1024x32000",), width=None,
    sweep=labels.CLASS_SWEEP, peers=(bounds.SOFTMAX_CROSS_ENTROPY,),
    variant_of="softmax_cross_entropy", torch_drop_in=True,
)
