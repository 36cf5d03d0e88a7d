"""Hinge loss over targets of -1 and +1, its subgradient, and both in one pass."""

from __future__ import annotations

import numpy as np

from fastloss import _validate as v
from fastloss.losses._elementwise import Elementwise, contract, evaluate


def _labels_are_signs(scores, target) -> str | None:
    bad = ~((target == 1) | (target == -1) | np.isnan(target))
    if bad.any():
        return f"target must hold -1 or +1; got {target[bad].flat[0].item()!r}"
    return None


SPEC = Elementwise("hinge", input="scores", domain=_labels_are_signs)
_CONTRACT, _GRAD_CONTRACT = contract(
    "scores", "target holds -1 or +1: another value is a ValueError on the CPU and NaN on "
    "cuda (a check would synchronise). margin: a finite float. The subgradient is "
    "``-target`` where ``margin - target * scores > 0`` and 0 elsewhere, the kink included."
)


def _run(scores, target, reduction, margin, backend, out, want_grad):
    margin = v.check_real(margin, "margin")
    return evaluate(SPEC, scores, target, reduction, backend, out, want_grad, param=margin)


def hinge(scores, target, *, reduction: str = "mean", margin: float = 1.0,
          backend: str = "auto"):
    return _run(scores, target, reduction, margin, backend, None, False)[0]


def hinge_grad(scores, target, *, reduction: str = "mean", margin: float = 1.0,
               backend: str = "auto", out=None):
    return _run(scores, target, reduction, margin, backend, out, True)[1]


def hinge_with_grad(scores, target, *, reduction: str = "mean", margin: float = 1.0,
                    backend: str = "auto", out=None):
    return _run(scores, target, reduction, margin, backend, out, True)


hinge.__doc__ = """Hinge loss ``max(0, margin - target * scores)``, reduced.

    Returns a scalar of scores' dtype, or an array of scores' shape for "none".
""" + _CONTRACT
hinge_grad.__doc__ = """Subgradient of the hinge loss with respect to ``scores``, in one pass.
""" + _CONTRACT + _GRAD_CONTRACT
hinge_with_grad.__doc__ = """``(loss, grad)`` of the hinge loss, from a single pass.
""" + _CONTRACT + _GRAD_CONTRACT
