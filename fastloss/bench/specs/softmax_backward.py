"""``fastloss.softmax_backward(p, grad_p, out=)``, the VJP of softmax, against the NumPy
expression, ``aten._softmax_backward_data`` and the memory floor (reading ``p`` and ``grad_p``,
writing the output)."""

from fastloss.bench import peers
from fastloss.bench.specs.softmax import logits, softmax

LOSS = "softmax_backward"


def make(xp, rng, shape):
    return softmax(xp, logits(xp, rng, shape), None), rng.standard_normal(shape, dtype=peers.DTYPE)


def softmax_backward(xp, p, grad_p):
    return p * (grad_p - (p * grad_p).sum(axis=1, keepdims=True))


def torch_softmax_backward(F, p, grad_p):
    import torch

    return torch.ops.aten._softmax_backward_data(grad_p, p, 1, p.dtype)


SPEC = peers.function_spec(LOSS, make, 3, softmax_backward, torch_softmax_backward)
