"""Mean squared error, its gradient, and both in one pass."""

from __future__ import annotations

import numpy as np

from fastloss import _registry
from fastloss import _validate as v


def _is_contiguous(x, order: str) -> bool:
    return x.flags.c_contiguous if order == "C" else x.flags.f_contiguous


def _mse(pred, target, reduction, backend, out, want_grad):
    host = _registry.host_backend(backend)
    if host is not None and v.plain_reduction(reduction) and v.plain_floats(pred, target, out):
        return _plain(pred, target, reduction, host, out, want_grad)
    reduction = v.check_reduction(reduction)
    backend = _registry.resolve(backend, pred, target, out)
    pred = v.as_array(pred, "pred", backend)
    target = v.as_array(target, "target", backend)
    v.check_float(pred, "pred", backend)
    v.check_float(target, "target", backend)
    if target.shape != pred.shape:
        raise ValueError(f"target must have the shape of pred {pred.shape}; got {target.shape}")
    out = v.check_out(out, "out", pred, backend)
    v.check_same_device(backend, pred, target, out)
    with v.device_scope(backend, pred):
        return _compute(pred, target, reduction, backend, out, want_grad)


def _plain(pred, target, reduction, backend, out, want_grad):
    """``(loss, grad or None)`` of C-contiguous NumPy arrays of one native float
    dtype, reduced, on a CPU backend: _compute's result with nothing to
    convert, at a fraction of its per-call cost."""
    grad = None
    if want_grad:
        grad = np.empty_like(pred) if out is None else out
    # ravel() of a C-contiguous array is a view.
    reduced = _registry.kernel("mse", backend)(
        pred.ravel(),
        target.ravel(),
        None if grad is None else grad.ravel(),
        None,
        pred.size if reduction == "mean" else 1,
    )
    return v.host_scalar(reduced, pred.dtype), grad


def _compute(pred, target, reduction, backend, out, want_grad):
    """``(loss, grad or None)`` for checked arrays, on the arrays' device."""
    xp = v.array_module(backend)
    dtype = pred.dtype
    work = v.compute_dtype(dtype, backend)

    # Elementwise loss: walk both arrays in memory order when both are Fortran-ordered,
    # so that neither is copied; any other layout is made C-contiguous once.
    order = "F" if pred.flags.f_contiguous and target.flags.f_contiguous else "C"
    flat_pred = pred.ravel(order).astype(work, copy=False)
    flat_target = target.ravel(order).astype(work, copy=False)
    size = flat_pred.size

    writes_out = want_grad and out is not None and work == dtype and _is_contiguous(out, order)
    grad = None
    if writes_out:
        grad = out.ravel(order)
    elif want_grad:
        grad = xp.empty(size, work)
    items = xp.empty(size, work) if reduction == "none" else None
    divisor = size if reduction == "mean" else 1

    reduced = _registry.kernel("mse", backend)(flat_pred, flat_target, grad, items, divisor)

    if reduction == "none":
        loss = items.reshape(pred.shape, order=order).astype(dtype, copy=False)
    else:
        loss = v.result_scalar(reduced, dtype, xp)
    if not want_grad:
        return loss, None
    if writes_out:
        return loss, out
    grad = grad.reshape(pred.shape, order=order)
    if out is None:
        return loss, grad.astype(dtype, copy=False)
    out[...] = grad
    return loss, out


_CONTRACT = """
    pred, target: floating-point arrays of the same shape (any shape, any
        layout): NumPy for the CPU backends, CuPy or any CUDA array for cuda.
    reduction: "mean" (over all elements), "sum" or "none" (elementwise).
    backend: "auto" (cuda for device arrays, else numba when installed, else
        numpy), "numpy", "numba" or "cuda".

    Semantics are ``torch.nn.functional.mse_loss``'s. Float16 is computed in
    float32 and rounded once. Raises ValueError for mismatched shapes or bad
    options, TypeError for non-float arrays or arrays of the wrong library.
"""

_GRAD_CONTRACT = """
    out: optional array of pred's shape and dtype that receives the gradient;
        it may be ``pred`` or ``target`` itself (an in-place gradient).
    The gradient is that of the reduced loss ("none": of the sum), with
    pred's shape and dtype.
"""


def mse(pred, target, *, reduction: str = "mean", backend: str = "auto"):
    return _mse(pred, target, reduction, backend, None, want_grad=False)[0]


def mse_grad(pred, target, *, reduction: str = "mean", backend: str = "auto", out=None):
    return _mse(pred, target, reduction, backend, out, want_grad=True)[1]


def mse_with_grad(pred, target, *, reduction: str = "mean", backend: str = "auto", out=None):
    return _mse(pred, target, reduction, backend, out, want_grad=True)


mse.__doc__ = """Mean squared error ``(pred - target) ** 2``, reduced.

    Returns a scalar of pred's dtype (a NumPy scalar, or a 0-d CuPy array with
    no host synchronisation), or an array of pred's shape for "none".
""" + _CONTRACT
mse_grad.__doc__ = """Gradient of the MSE loss with respect to ``pred``, in one pass.
""" + _CONTRACT + _GRAD_CONTRACT
mse_with_grad.__doc__ = """``(loss, grad)`` of the MSE loss, both from a single pass over memory.
""" + _CONTRACT + _GRAD_CONTRACT
