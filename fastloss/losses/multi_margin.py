"""Multi-class hinge loss of ``(N, k)`` scores against class indices (PyTorch's
``multi_margin_loss`` on 2-D input), its gradient, and both in one pass."""

from __future__ import annotations

from fastloss import _registry
from fastloss import _validate as v
from fastloss.losses import _class_labels


@_registry.routes_dask
def _multi_margin(scores, target, reduction, p, margin, weight, backend, out, want_grad,
                  check_labels):
    reduction = v.check_reduction(reduction)
    p = v.check_margin_power(p)
    margin = v.check_real(margin, "margin")
    check_labels = v.check_bool(check_labels, "check_labels")

    def divisor(labels, weight, classes, backend):
        if backend.host or check_labels:
            _class_labels.check(labels, classes)
        return labels.shape[0] if reduction == "mean" else 1

    return _class_labels.evaluate("multi_margin", "scores", scores, target, weight, reduction,
                                  backend, out, want_grad, divisor, p, margin)


def multi_margin(scores, target, *, reduction: str = "mean", p: int = 1, margin: float = 1.0,
                 weight=None, backend: str = "auto", check_labels: bool = False):
    return _multi_margin(scores, target, reduction, p, margin, weight, backend, None, False,
                         check_labels)[0]


def multi_margin_grad(scores, target, *, reduction: str = "mean", p: int = 1,
                      margin: float = 1.0, weight=None, backend: str = "auto",
                      check_labels: bool = False, out=None):
    return _multi_margin(scores, target, reduction, p, margin, weight, backend, out, True,
                         check_labels)[1]


def multi_margin_with_grad(scores, target, *, reduction: str = "mean", p: int = 1,
                           margin: float = 1.0, weight=None, backend: str = "auto",
                           check_labels: bool = False, out=None):
    return _multi_margin(scores, target, reduction, p, margin, weight, backend, out, True,
                         check_labels)


_CONTRACT = """
    scores: ``(N, k)`` floating-point scores, class axis last (any layout).
    target: ``(N,)`` integer class indices in ``[0, k)``.
    reduction: "mean" (over rows), "sum" or "none" (one loss per row).
    p: 1 or 2. margin: a finite float. weight: optional ``(k,)`` class weights (the
        target class's weight scales its row).
    backend: "auto", "numpy", "numba" or "cuda".
    check_labels: cuda only: check the labels on the device and raise ValueError (this
        synchronises); without it an invalid label gives its row a NaN loss and gradient.
        The CPU backends always check.

    Semantics are ``torch.nn.functional.multi_margin_loss``'s on 2-D input: a row's loss
    is ``weight[y] * sum_{j != y} max(0, margin - x[y] + x[j])**p / k``, with a derivative
    of 0 where a term is exactly 0. float16 is computed in float32. Raises ValueError for
    bad shapes, labels or options, TypeError for bad dtypes or array types.
"""
_GRAD_CONTRACT = """
    out: optional array of scores' shape and dtype that receives the gradient (it may be
        ``scores`` itself).
"""
multi_margin.__doc__ = """Multi-class hinge loss of ``scores`` at the ``target`` classes, reduced.

    Returns a scalar of scores' dtype (a 0-d CuPy array on cuda), or ``(N,)`` for "none".
""" + _CONTRACT
multi_margin_grad.__doc__ = """Gradient of the multi-class hinge loss with respect to ``scores``.
""" + _CONTRACT + _GRAD_CONTRACT
multi_margin_with_grad.__doc__ = """``(loss, grad)`` of the multi-class hinge loss, one pass.
""" + _CONTRACT + _GRAD_CONTRACT
