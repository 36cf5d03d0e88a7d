"""Mean absolute error (L1), its gradient, and both in one pass."""

from __future__ import annotations

from fastloss.losses._elementwise import Elementwise, contract, evaluate

SPEC = Elementwise("l1")
_CONTRACT, _GRAD_CONTRACT = contract(
    "pred", "Semantics are ``torch.nn.functional.l1_loss``'s (no broadcasting); the "
    "gradient is 0 where pred == target."
)


def l1(pred, target, *, reduction: str = "mean", backend: str = "auto"):
    return evaluate(SPEC, pred, target, reduction, backend, None, False)[0]


def l1_grad(pred, target, *, reduction: str = "mean", backend: str = "auto", out=None):
    return evaluate(SPEC, pred, target, reduction, backend, out, True)[1]


def l1_with_grad(pred, target, *, reduction: str = "mean", backend: str = "auto", out=None):
    return evaluate(SPEC, pred, target, reduction, backend, out, True)


l1.__doc__ = """L1 loss ``|pred - target|``, reduced.

    Returns a scalar of pred's dtype (a NumPy scalar, or a 0-d CuPy array with
    no host synchronisation), or an array of pred's shape for "none".
""" + _CONTRACT
l1_grad.__doc__ = """Gradient of the L1 loss with respect to ``pred``, in one pass.
""" + _CONTRACT + _GRAD_CONTRACT
l1_with_grad.__doc__ = """``(loss, grad)`` of the L1 loss, both from a single pass over memory.
""" + _CONTRACT + _GRAD_CONTRACT
