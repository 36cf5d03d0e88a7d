"""Binary cross-entropy of logits, its gradient, and both in one pass."""

from __future__ import annotations

from fastloss.losses._elementwise import Elementwise, contract, evaluate

SPEC = Elementwise("binary_cross_entropy_with_logits", input="logits")
_CONTRACT, _GRAD_CONTRACT = contract(
    "logits", "Semantics are ``torch.nn.functional.binary_cross_entropy_with_logits``'s, "
    "computed without cancellation (logits of +-1e30 are exact; a zero coefficient times "
    "an infinite logit adds 0, where PyTorch gives NaN). weight: optional, broadcastable "
    "to logits; it scales each element's loss and gradient. pos_weight: optional, typically "
    "of shape ``(k,)`` for the last axis of length k (anything broadcastable to logits); it "
    "weighs the positive term."
)


def _run(logits, target, reduction, weight, pos_weight, backend, out, want_grad):
    return evaluate(SPEC, logits, target, reduction, backend, out, want_grad, weight=weight,
                    aux=pos_weight, aux_name="pos_weight")


def binary_cross_entropy_with_logits(logits, target, *, weight=None, pos_weight=None,
                                     reduction: str = "mean", backend: str = "auto"):
    return _run(logits, target, reduction, weight, pos_weight, backend, None, False)[0]


def binary_cross_entropy_with_logits_grad(logits, target, *, weight=None, pos_weight=None,
                                          reduction: str = "mean", backend: str = "auto",
                                          out=None):
    return _run(logits, target, reduction, weight, pos_weight, backend, out, True)[1]


def binary_cross_entropy_with_logits_with_grad(logits, target, *, weight=None,
                                               pos_weight=None, reduction: str = "mean",
                                               backend: str = "auto", out=None):
    return _run(logits, target, reduction, weight, pos_weight, backend, out, True)


binary_cross_entropy_with_logits.__doc__ = """Binary cross-entropy of ``sigmoid(logits)``,
    ``-weight (pos_weight target log sigmoid(x) + (1 - target) log sigmoid(-x))``, reduced.

    Returns a scalar of logits' dtype, or an array of logits' shape for "none".
""" + _CONTRACT
binary_cross_entropy_with_logits_grad.__doc__ = """Gradient of binary cross-entropy with
    logits with respect to ``logits``, in one pass.
""" + _CONTRACT + _GRAD_CONTRACT
binary_cross_entropy_with_logits_with_grad.__doc__ = """``(loss, grad)`` of binary
    cross-entropy with logits, from a single pass.
""" + _CONTRACT + _GRAD_CONTRACT
