"""``fastloss.log_softmax(z, out=)`` against the NumPy expression, ``torch.log_softmax`` and the
memory floor (reading ``z``, writing the output)."""

from fastloss.bench import peers
from fastloss.bench.specs.softmax import logits

LOSS = "log_softmax"


def log_softmax(xp, z, _):
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))


SPEC = peers.function_spec(
    LOSS, lambda xp, rng, shape: (logits(xp, rng, shape), None), 2, log_softmax,
    lambda F, z, _: F.log_softmax(z, 1),
)
