"""Huber loss, its gradient, and both in one pass."""

from __future__ import annotations

from fastloss import _validate as v
from fastloss.losses._elementwise import Elementwise, contract, evaluate

SPEC = Elementwise("huber")
_CONTRACT, _GRAD_CONTRACT = contract(
    "pred", "Semantics are ``torch.nn.functional.huber_loss``'s (no broadcasting). "
    "delta: a finite float > 0."
)


def check_delta(delta) -> float:
    """``delta`` as a float: TypeError unless a real number, ValueError unless finite and > 0."""
    return v.check_real(delta, "delta", minimum=0.0, above=True)


def _run(pred, target, reduction, delta, backend, out, want_grad):
    delta = check_delta(delta)
    return evaluate(SPEC, pred, target, reduction, backend, out, want_grad, param=delta)


def huber(pred, target, *, reduction: str = "mean", delta: float = 1.0, backend: str = "auto"):
    return _run(pred, target, reduction, delta, backend, None, False)[0]


def huber_grad(pred, target, *, reduction: str = "mean", delta: float = 1.0,
               backend: str = "auto", out=None):
    return _run(pred, target, reduction, delta, backend, out, True)[1]


def huber_with_grad(pred, target, *, reduction: str = "mean", delta: float = 1.0,
                    backend: str = "auto", out=None):
    return _run(pred, target, reduction, delta, backend, out, True)


huber.__doc__ = """Huber loss, reduced: with ``d = pred - target``, ``0.5 d**2`` where
    ``|d| < delta``, else ``delta (|d| - 0.5 delta)``.

    Returns a scalar of pred's dtype, or an array of pred's shape for "none".
""" + _CONTRACT
huber_grad.__doc__ = """Gradient of the Huber loss with respect to ``pred``, in one pass.
""" + _CONTRACT + _GRAD_CONTRACT
huber_with_grad.__doc__ = """``(loss, grad)`` of the Huber loss, from a single pass.
""" + _CONTRACT + _GRAD_CONTRACT
