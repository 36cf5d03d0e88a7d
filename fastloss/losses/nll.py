"""Negative log-likelihood of ``(N, k)`` log-probabilities (PyTorch's ``nll_loss`` on 2-D
input), its gradient, and both in one pass."""

from __future__ import annotations

from fastloss import _registry
from fastloss import _validate as v
from fastloss.losses import _class_labels


@_registry.routes_dask
def _nll(log_probs, target, reduction, ignore_index, weight, backend, out, want_grad,
         check_labels):
    reduction = v.check_reduction(reduction)
    ignore_index = v.check_int(ignore_index, "ignore_index")
    check_labels = v.check_bool(check_labels, "check_labels")
    divisor = _class_labels.kept_divisor(ignore_index, reduction, check_labels)
    return _class_labels.evaluate("nll", "log_probs", log_probs, target, weight, reduction,
                                  backend, out, want_grad, divisor, ignore_index,
                                  ignore_index=ignore_index)


def nll(log_probs, target, *, reduction: str = "mean", ignore_index: int = -100, weight=None,
        backend: str = "auto", check_labels: bool = False):
    return _nll(log_probs, target, reduction, ignore_index, weight, backend, None, False,
                check_labels)[0]


def nll_grad(log_probs, target, *, reduction: str = "mean", ignore_index: int = -100,
             weight=None, backend: str = "auto", check_labels: bool = False, out=None):
    return _nll(log_probs, target, reduction, ignore_index, weight, backend, out, True,
                check_labels)[1]


def nll_with_grad(log_probs, target, *, reduction: str = "mean", ignore_index: int = -100,
                  weight=None, backend: str = "auto", check_labels: bool = False, out=None):
    return _nll(log_probs, target, reduction, ignore_index, weight, backend, out, True,
                check_labels)


_CONTRACT = """
    log_probs: ``(N, k)`` floating-point log-probabilities, class axis last (any layout).
    target: ``(N,)`` integer class indices in ``[0, k)`` or ``ignore_index``.
    reduction: "mean" (over the rows not ignored, weighted: divided by the sum of their
        labels' weights, as PyTorch), "sum" or "none" (one loss per row).
    ignore_index: a class index whose rows add no loss and no gradient.
    weight: optional ``(k,)`` class weights.
    backend: "auto", "numpy", "numba" or "cuda".
    check_labels: cuda only: check the labels on the device and raise ValueError (this
        synchronises); without it an invalid label gives its row a NaN loss and gradient.
        The CPU backends always check.

    Semantics are ``torch.nn.functional.nll_loss``'s on 2-D input: a row's loss is
    ``-weight[y] * log_probs[row, y]``. float16 is computed in float32. Raises ValueError
    for bad shapes, labels or options, TypeError for bad dtypes or array types.
"""
_GRAD_CONTRACT = """
    out: optional array of log_probs' shape and dtype that receives the gradient (it may
        be ``log_probs`` itself): ``-weight[y] / divisor`` at each row's label, 0 elsewhere.
"""
nll.__doc__ = """NLL of ``log_probs`` at the ``target`` classes, reduced.

    Returns a scalar of log_probs' dtype (a 0-d CuPy array on cuda), or ``(N,)`` for "none".
""" + _CONTRACT
nll_grad.__doc__ = """Gradient of the NLL with respect to ``log_probs``.
""" + _CONTRACT + _GRAD_CONTRACT
nll_with_grad.__doc__ = """``(loss, grad)`` of the NLL, one pass.
""" + _CONTRACT + _GRAD_CONTRACT
