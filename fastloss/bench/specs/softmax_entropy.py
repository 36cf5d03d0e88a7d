"""The entropy of each row's softmax: ``softmax_entropy_with_grad`` against the NumPy
expression, PyTorch's ``-(softmax * log_softmax).sum(1).mean()`` and the memory floor."""

from fastloss.bench import peers
from fastloss.bench.specs.log_softmax import log_softmax

LOSS = "softmax_entropy"


def make(xp, rng, shape):
    return rng.standard_normal(shape, dtype=peers.DTYPE) * peers.DTYPE(3), None


def op_bytes(op, shape, itemsize=4):
    block = shape[0] * shape[1] * itemsize
    return block if op == "forward" else 2 * block


def _rows(xp, logits):
    log_p = log_softmax(xp, logits, None)
    p = xp.exp(log_p)
    return p, log_p, -(p * log_p).sum(axis=1)


def reference(xp, logits, _):
    """The summed entropies of a block of rows, logits in float64."""
    return float(_rows(xp, logits)[2].sum())


def entropy_loss(xp, logits, _):
    return xp.mean(_rows(xp, logits)[2])


def entropy_grad(xp, logits, _):
    p, log_p, rows = _rows(xp, logits)
    return -p * (log_p + rows[:, None]) / logits.shape[0]


def entropy_with_grad(xp, logits, _):
    p, log_p, rows = _rows(xp, logits)
    return xp.mean(rows), -p * (log_p + rows[:, None]) / logits.shape[0]


def torch_entropy(F, logits, _):
    return -(F.softmax(logits, 1) * F.log_softmax(logits, 1)).sum(1).mean()


SPEC = peers.Spec(
    loss=LOSS, make=make, bytes=op_bytes, reference=reference, count=lambda shape: shape[0],
    expression={"forward": entropy_loss, "gradient": entropy_grad, "fused": entropy_with_grad},
    torch=torch_entropy, sizes=("256x32000", "1024x32000"), quick_sizes=("1024x32000",),
    width=None,
)
