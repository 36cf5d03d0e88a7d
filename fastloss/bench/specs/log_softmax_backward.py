"""``fastloss.log_softmax_backward(logp, grad_logp, out=)``, the VJP of log-softmax, against the
NumPy expression, ``aten._log_softmax_backward_data`` and the memory floor (reading ``logp`` and
``grad_logp``, writing the output)."""

from fastloss.bench import peers
from fastloss.bench.specs.log_softmax import log_softmax
from fastloss.bench.specs.softmax import logits

LOSS = "log_softmax_backward"


def make(xp, rng, shape):
    logp = log_softmax(xp, logits(xp, rng, shape), None)
    return logp, rng.standard_normal(shape, dtype=peers.DTYPE)


def log_softmax_backward(xp, logp, grad_logp):
    return grad_logp - xp.exp(logp) * grad_logp.sum(axis=1, keepdims=True)


def torch_log_softmax_backward(F, logp, grad_logp):
    import torch

    return torch.ops.aten._log_softmax_backward_data(grad_logp, logp, 1, logp.dtype)


SPEC = peers.function_spec(LOSS, make, 3, log_softmax_backward, torch_log_softmax_backward)
