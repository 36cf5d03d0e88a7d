"""The multi-class hinge loss (p = 1, margin 1): ``multi_margin_with_grad`` against the
NumPy expression, PyTorch and the memory floor."""

import numpy as np

from fastloss.bench import peers

LOSS = "multi_margin"


def make(xp, rng, shape):
    rows, classes = shape
    return (rng.standard_normal(shape, dtype=peers.DTYPE) * peers.DTYPE(0.1),
            rng.integers(0, classes, size=rows, dtype=np.int64))


def op_bytes(op, shape, itemsize=4):
    rows, classes = shape
    read = rows * classes * itemsize + rows * 8
    return read if op == "forward" else read + rows * classes * itemsize


def _hinges(xp, scores, labels):
    rows = xp.arange(labels.shape[0])
    hinge = xp.maximum(1.0 - scores[rows, labels][:, None] + scores, 0.0)
    hinge[rows, labels] = 0.0
    return hinge


def reference(xp, scores, labels):
    """The summed loss of a block of rows, scores in float64."""
    return float(_hinges(xp, scores, labels).sum() / scores.shape[1])


def margin_loss(xp, scores, labels):
    return _hinges(xp, scores, labels).sum() / scores.size


def margin_grad(xp, scores, labels):
    slope = (_hinges(xp, scores, labels) > 0).astype(scores.dtype) / scores.size
    slope[xp.arange(labels.shape[0]), labels] = -slope.sum(axis=1)
    return slope


SPEC = peers.Spec(
    loss=LOSS, make=make, bytes=op_bytes, reference=reference, count=lambda shape: shape[0],
    expression={"forward": margin_loss, "gradient": margin_grad,
                "fused": lambda xp, x, labels: (margin_loss(xp, x, labels),
                                                margin_grad(xp, x, labels))},
    torch=lambda F, scores, labels: F.multi_margin_loss(scores, labels),
    sizes=("256x32000", "1024x32000"), quick_sizes=("1024x32000",), width=None,
    torch_drop_in=True,
)
