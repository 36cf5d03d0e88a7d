"""Negative log-likelihood of ``(N, k)`` log-probabilities (PyTorch's ``nll_loss`` on 2-D
input), its gradient, and both in one pass."""

from __future__ import annotations

from fastloss import _registry
from fastloss import _validate as v
from fastloss.losses import _class_labels, _tail


def _nll(log_probs, target, reduction, ignore_index, weight, backend, out, want_grad,
         check_labels):
    reduction = v.check_reduction(reduction)
    ignore_index = v.check_int(ignore_index, "ignore_index")
    backend = _registry.backend(backend, log_probs, target, weight, out)
    x = backend.asarray(log_probs, "log_probs")
    with backend.scope(x):
        target = backend.asarray(target, "target")
        backend.check_float(x, "log_probs")
        if x.ndim != 2 or x.shape[1] == 0:
            raise ValueError(
                "log_probs must be 2-D (N, k) with the class axis last and k >= 1; "
                f"got shape {x.shape}"
            )
        if target.dtype.kind not in "iu":
            raise TypeError(
                f"target holds class indices, which must be integers; got dtype {target.dtype}"
            )
        rows, classes = x.shape
        xp, dtype = backend.xp, x.dtype
        work = backend.compute_dtype(dtype)
        labels = _class_labels.labels(target, rows, xp)
        weight = _class_labels.weight(weight, classes, backend, xp)
        divisor = _class_labels.divisor(labels, weight, classes, ignore_index, reduction,
                                        backend, check_labels)
        out = backend.check_out(out, "out", x)
        backend.same_device(x, labels, weight, out)
        grad, writes_out = _tail.grad_buffer(xp, x.shape, work, dtype, out, want_grad)
        row_losses = xp.empty(rows, xp.float64) if reduction == "none" else None
        reduced = backend.kernel("nll")(
            xp.ascontiguousarray(x, dtype=work), labels, weight, grad, row_losses, ignore_index,
            divisor,
        )
        return _tail.results(backend, dtype, reduced, row_losses, grad, writes_out, out)


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
