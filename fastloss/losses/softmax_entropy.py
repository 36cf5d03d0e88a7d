"""The entropy of the softmax of each row of ``(N, k)`` logits, reduced over rows, its
gradient, and both in one pass: the entropy bonus of policy-gradient training."""

from __future__ import annotations

import numpy as np

from fastloss import _registry
from fastloss import _validate as v
from fastloss.losses import _class_labels, _tail


@_registry.routes_dask
def _softmax_entropy(logits, reduction, backend, out, want_grad):
    host = _registry.host_backend(backend)
    if host is not None and v.plain_reduction(reduction):
        # The common case on a backend with a small call: checked and run in one compiled
        # call (None for other arrays, which take the checks below).
        small_call = host.small_calls["softmax_entropy"]
        if small_call is not None and v.typed_float(logits, out):
            grad = _tail.plain_grad(logits, out, want_grad)
            reduced = small_call(logits, grad, reduction == "mean")
            if reduced is not None:
                return host.result(reduced, logits.dtype), grad
    elif (host is not None and type(reduction) is str and reduction == "none"
          and v.plain_float(logits, out) and logits.ndim == 2 and logits.shape[1] > 0
          and not _tail.overlaps(np, out, logits)):
        # Per-row entropies of such arrays: the kernel with the full path's arrays.
        grad = _tail.plain_grad(logits, out, want_grad)
        row_losses = np.empty(logits.shape[0])
        host.kernels["softmax_entropy"](logits, grad, row_losses, 1)
        return _tail.narrowed(row_losses, logits.dtype), grad
    reduction = v.check_reduction(reduction)
    backend = _registry.backend(backend, logits, out)
    x = backend.asarray(logits, "logits")
    with backend.scope(x):
        _class_labels.check_class_rows(x, "logits", backend)
        rows = x.shape[0]
        xp, dtype = backend.xp, x.dtype
        work = backend.compute_dtype(dtype)
        out = backend.check_out(out, "out", x)
        backend.same_device(x, out)
        x = xp.ascontiguousarray(x, dtype=work)
        grad, writes_out = _tail.grad_buffer(xp, x.shape, work, dtype, out, want_grad,
                                             inputs=(x,))
        row_losses = xp.empty(rows, xp.float64) if reduction == "none" else None
        reduced = backend.kernels["softmax_entropy"](
            x, grad, row_losses, rows if reduction == "mean" else 1,
        )
        return _tail.results(backend, dtype, reduced, row_losses, grad, writes_out, out)


def softmax_entropy(logits, *, reduction: str = "mean", backend: str = "auto"):
    return _softmax_entropy(logits, reduction, backend, None, False)[0]


def softmax_entropy_grad(logits, *, reduction: str = "mean", backend: str = "auto", out=None):
    return _softmax_entropy(logits, reduction, backend, out, True)[1]


def softmax_entropy_with_grad(logits, *, reduction: str = "mean", backend: str = "auto",
                              out=None):
    return _softmax_entropy(logits, reduction, backend, out, True)


_CONTRACT = """
    logits: ``(N, k)`` floating-point array, class axis last (any layout).
    reduction: "mean" (over rows), "sum" or "none" (one entropy per row).
    backend: "auto", "numpy", "numba" or "cuda".

    A row's entropy is ``-(softmax(z) * log_softmax(z)).sum()``, computed as
    ``log(s) - sum(e * (z - max)) / s`` with ``e = exp(z - max)``, ``s = sum(e)``: stable for
    logits of any magnitude; a class of probability 0 (a logit of -inf) adds 0; a row of
    all -inf, or with a NaN, gives NaN. float16 is computed in float32. Raises ValueError for
    bad shapes or options, TypeError for bad dtypes or array types.
"""
_GRAD_CONTRACT = """
    out: optional array of logits' shape and dtype that receives the gradient (it may be
        ``logits`` itself): ``-p * (log p + H)`` per row, over the rows for "mean".
"""
softmax_entropy.__doc__ = """Entropy of ``softmax(logits)`` per row, reduced.

    Returns a scalar of logits' dtype (a 0-d CuPy array on cuda), or ``(N,)`` for "none".
""" + _CONTRACT
softmax_entropy_grad.__doc__ = """Gradient of the softmax entropy with respect to ``logits``.
""" + _CONTRACT + _GRAD_CONTRACT
softmax_entropy_with_grad.__doc__ = """``(entropy, grad)`` of the softmax entropy, one pass.
""" + _CONTRACT + _GRAD_CONTRACT
