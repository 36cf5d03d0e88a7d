"""Smooth L1 loss, its gradient, and both in one pass."""

from __future__ import annotations

from fastloss import _validate as v
from fastloss.losses._elementwise import Elementwise, contract, evaluate

SPEC = Elementwise("smooth_l1")
_CONTRACT, _GRAD_CONTRACT = contract(
    "pred", "Semantics are ``torch.nn.functional.smooth_l1_loss``'s (no broadcasting). "
    "beta: a finite float >= 0; beta = 0 is the L1 loss."
)


def check_beta(beta) -> float:
    """``beta`` as a float: TypeError unless a real number, ValueError unless finite and >= 0."""
    return v.check_real(beta, "beta", minimum=0.0)


def _run(pred, target, reduction, beta, backend, out, want_grad):
    beta = check_beta(beta)
    return evaluate(SPEC, pred, target, reduction, backend, out, want_grad, param=beta)


def smooth_l1(pred, target, *, reduction: str = "mean", beta: float = 1.0,
              backend: str = "auto"):
    return _run(pred, target, reduction, beta, backend, None, False)[0]


def smooth_l1_grad(pred, target, *, reduction: str = "mean", beta: float = 1.0,
                   backend: str = "auto", out=None):
    return _run(pred, target, reduction, beta, backend, out, True)[1]


def smooth_l1_with_grad(pred, target, *, reduction: str = "mean", beta: float = 1.0,
                        backend: str = "auto", out=None):
    return _run(pred, target, reduction, beta, backend, out, True)


smooth_l1.__doc__ = """Smooth L1 loss, reduced: with ``d = pred - target``,
    ``0.5 d**2 / beta`` where ``|d| < beta``, else ``|d| - 0.5 beta``.

    Returns a scalar of pred's dtype, or an array of pred's shape for "none".
""" + _CONTRACT
smooth_l1_grad.__doc__ = """Gradient of the smooth L1 loss with respect to ``pred``, in one pass.
""" + _CONTRACT + _GRAD_CONTRACT
smooth_l1_with_grad.__doc__ = """``(loss, grad)`` of the smooth L1 loss, from a single pass.
""" + _CONTRACT + _GRAD_CONTRACT
