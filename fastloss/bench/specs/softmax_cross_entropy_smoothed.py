"""Softmax cross-entropy with integer labels and label smoothing 0.1: the labels' spec
(``softmax_cross_entropy``) with ``label_smoothing=0.1`` in fastloss, PyTorch and the NumPy
expression. A variant: run it by name (``--losses softmax_cross_entropy_smoothed``)."""

import numpy as np

from fastloss.bench import bounds, peers
from fastloss.bench.specs import softmax_cross_entropy as labels

LOSS = "softmax_cross_entropy_smoothed"
SMOOTHING = 0.1


def reference(xp, logits, target):
    """The summed loss of a block of rows, logits in float64: the target is
    ``(1 - s) * one_hot + s / k``."""
    rows = logits.shape[0]
    lse = labels._log_sum_exp(xp, logits)[:, 0]
    picked = logits[xp.arange(rows), target]
    return float((lse - (1 - SMOOTHING) * picked - SMOOTHING * logits.mean(axis=1)).sum())


def _loss(xp, logits, target, lse):
    log_probs = logits - lse
    picked = xp.take_along_axis(log_probs, target[:, None], axis=1)[:, 0]
    return -xp.mean((1 - SMOOTHING) * picked + SMOOTHING * log_probs.mean(axis=1))


def _grad(xp, logits, target, lse):
    rows, classes = logits.shape
    grad = xp.exp(logits - lse)
    grad -= np.float64(SMOOTHING / classes).astype(grad.dtype)
    grad[xp.arange(rows), target] -= np.float64(1 - SMOOTHING).astype(grad.dtype)
    grad /= rows
    return grad


SPEC = peers.Spec(
    loss=LOSS, make=labels.make, bytes=labels.op_bytes, reference=reference,
    count=lambda shape: shape[0],
    expression=labels.expressions(_loss, _grad),
    torch=lambda F, logits, target: F.cross_entropy(logits, target, label_smoothing=SMOOTHING),
    sizes=("256x32000", "1024x32000"), quick_sizes=("1024x32000",), width=None,
    sweep=labels.CLASS_SWEEP, peers=(bounds.SOFTMAX_CROSS_ENTROPY,),
    options={"label_smoothing": SMOOTHING}, variant_of="softmax_cross_entropy",
    torch_drop_in=True,
)
