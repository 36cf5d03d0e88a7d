"""Mean squared error, its gradient, and both in one pass."""

from __future__ import annotations

from fastloss.losses._elementwise import Elementwise, contract, evaluate

SPEC = Elementwise("mse")
_CONTRACT, _GRAD_CONTRACT = contract(
    "pred", "Semantics are ``torch.nn.functional.mse_loss``'s (no broadcasting)."
)


def mse(pred, target, *, reduction: str = "mean", backend: str = "auto"):
    return evaluate(SPEC, pred, target, reduction, backend, None, False)[0]


def mse_grad(pred, target, *, reduction: str = "mean", backend: str = "auto", out=None):
    return evaluate(SPEC, pred, target, reduction, backend, out, True)[1]


def mse_with_grad(pred, target, *, reduction: str = "mean", backend: str = "auto", out=None):
    return evaluate(SPEC, pred, target, reduction, backend, out, True)


mse.__doc__ = """Mean squared error ``(pred - target) ** 2``, reduced.

    Returns a scalar of pred's dtype (a NumPy scalar, or a 0-d CuPy array with
    no host synchronisation), or an array of pred's shape for "none".
""" + _CONTRACT
mse_grad.__doc__ = """Gradient of the MSE loss with respect to ``pred``, in one pass.
""" + _CONTRACT + _GRAD_CONTRACT
mse_with_grad.__doc__ = """``(loss, grad)`` of the MSE loss, both from a single pass over memory.
""" + _CONTRACT + _GRAD_CONTRACT
