"""NLL of log-probabilities with integer labels: ``nll_with_grad`` against the NumPy
expression, PyTorch and the memory floor. The loss reads one log-probability per row; the
gradient is a write of the whole ``(N, k)`` array, mostly zeros."""

import numpy as np

from fastloss.bench import peers

LOSS = "nll"


def make(xp, rng, shape):
    rows, classes = shape
    return (rng.standard_normal(shape, dtype=peers.DTYPE) - peers.DTYPE(np.log(classes)),
            rng.integers(0, classes, size=rows, dtype=np.int64))


def op_bytes(op, shape, itemsize=4):
    rows, classes = shape
    labels = rows * 8
    if op == "gradient":  # the labels alone say where the gradient is not 0
        return labels + rows * classes * itemsize
    read = labels + rows * itemsize  # and a log-probability per row
    return read if op == "forward" else read + rows * classes * itemsize


def reference(xp, log_probs, labels):
    """The summed loss of a block of rows, log-probabilities in float64."""
    return float(-log_probs[xp.arange(log_probs.shape[0]), labels].sum())


def nll_expr_loss(xp, log_probs, labels):
    return -xp.mean(log_probs[xp.arange(labels.shape[0]), labels])


def nll_expr_grad(xp, log_probs, labels):
    grad = xp.zeros_like(log_probs)
    grad[xp.arange(labels.shape[0]), labels] = -1.0 / labels.shape[0]
    return grad


SPEC = peers.Spec(
    loss=LOSS, make=make, bytes=op_bytes, reference=reference, count=lambda shape: shape[0],
    expression={"forward": nll_expr_loss, "gradient": nll_expr_grad,
                "fused": lambda xp, x, labels: (nll_expr_loss(xp, x, labels),
                                                nll_expr_grad(xp, x, labels))},
    torch=lambda F, log_probs, labels: F.nll_loss(log_probs, labels),
    sizes=("256x32000", "1024x32000"), quick_sizes=("1024x32000",), width=None,
    torch_drop_in=True,
)
