"""Binary cross-entropy of probabilities, its gradient, and both in one pass."""

from __future__ import annotations

from fastloss.losses._elementwise import Elementwise, contract, evaluate


def _are_probabilities(probs, target) -> str | None:
    for name, values in (("probs", probs), ("target", target)):
        bad = (values < 0) | (values > 1)
        if bad.any():
            return f"{name} must lie in [0, 1]; got {values[bad].flat[0].item()!r}"
    return None


SPEC = Elementwise("binary_cross_entropy", input="probs", domain=_are_probabilities)
_CONTRACT, _GRAD_CONTRACT = contract(
    "probs",
    "Semantics are ``torch.nn.functional.binary_cross_entropy``'s, its clamp of log at "
    "-100 and of the gradient's denominator at 1e-12 (a float32) included. probs or a "
    "target outside [0, 1] are a ValueError on the CPU (PyTorch raises for both) and NaN "
    "on cuda (a check would synchronise). "
    "weight: optional, broadcastable to probs; it scales each element's loss and gradient "
    "(a \"mean\" still divides by the element count).",
)


def _run(probs, target, reduction, weight, backend, out, want_grad):
    return evaluate(SPEC, probs, target, reduction, backend, out, want_grad, weight=weight)


def binary_cross_entropy(probs, target, *, weight=None, reduction: str = "mean",
                         backend: str = "auto"):
    return _run(probs, target, reduction, weight, backend, None, False)[0]


def binary_cross_entropy_grad(probs, target, *, weight=None, reduction: str = "mean",
                              backend: str = "auto", out=None):
    return _run(probs, target, reduction, weight, backend, out, True)[1]


def binary_cross_entropy_with_grad(probs, target, *, weight=None, reduction: str = "mean",
                                   backend: str = "auto", out=None):
    return _run(probs, target, reduction, weight, backend, out, True)


binary_cross_entropy.__doc__ = """Binary cross-entropy
    ``-weight (target log(probs) + (1 - target) log(1 - probs))``, reduced.

    Returns a scalar of probs' dtype, or an array of probs' shape for "none".
""" + _CONTRACT
binary_cross_entropy_grad.__doc__ = """Gradient of binary cross-entropy with respect to
    ``probs``, in one pass.
""" + _CONTRACT + _GRAD_CONTRACT
binary_cross_entropy_with_grad.__doc__ = """``(loss, grad)`` of binary cross-entropy, from a
    single pass.
""" + _CONTRACT + _GRAD_CONTRACT
