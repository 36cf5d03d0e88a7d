"""Softmax cross-entropy over the class axis (last) of ``(N, k)`` logits, its gradient, and both."""

from __future__ import annotations

import numpy as np

from fastloss import _registry
from fastloss import _validate as v
from fastloss.losses import _class_labels, _tail


def _probabilities(target, logits, ignore_index, work, backend, xp):
    backend.check_float(target, "target")
    v.check_probability_target(target, logits.shape, ignore_index)
    return xp.ascontiguousarray(_tail.narrowed(target, work, "C"))


@_registry.routes_dask
def _softmax_cross_entropy(
    logits, target, reduction, ignore_index, label_smoothing, weight, backend, out, want_grad,
    check_labels,
):
    host = _registry.host_backend(backend)
    if (
        host is not None
        and type(check_labels) is bool
        and type(ignore_index) is int
        and -(2**63) <= ignore_index < 2**63
        and type(label_smoothing) in (int, float)
        and 0 <= label_smoothing <= 1
        and v.known_reduction(reduction)
    ):
        divisor = _class_labels.kept_divisor(ignore_index, reduction, check_labels)
        options = (ignore_index, float(label_smoothing))
        result = _class_labels.plain("softmax_cross_entropy", logits, target, reduction, host,
                                     out, want_grad, options, divisor, weight)
        if result is None and weight is None and ignore_index < 0:
            result = _plain_probabilities(logits, target, reduction, host, out, want_grad,
                                          options)
        if result is not None:
            return result
    reduction = v.check_reduction(reduction)
    ignore_index = v.check_int(ignore_index, "ignore_index")
    label_smoothing = v.check_probability(label_smoothing, "label_smoothing")
    check_labels = v.check_bool(check_labels, "check_labels")
    backend = _registry.backend(backend, logits, target, weight, out)
    logits = backend.asarray(logits, "logits")
    with backend.scope(logits):
        return _checked(
            logits, target, reduction, ignore_index, label_smoothing, weight, backend, out,
            want_grad, check_labels,
        )


def _plain_probabilities(logits, target, reduction, host, out, want_grad, options):
    """``(loss, grad or None)`` against class probabilities ``target`` for C-contiguous NumPy
    logits and target of one native float dtype and shape, ``out`` apart from the target
    (``_validate.plain_floats``), on a CPU backend: :func:`_checked`'s result with nothing to
    check or convert; None for other arrays."""
    if (not v.plain_floats(logits, target, out) or logits.ndim != 2 or logits.shape[1] == 0
            or _tail.overlaps(np, out, logits, distinct=(target,))):
        return None
    grad = _tail.plain_grad(logits, out, want_grad)
    divisor = logits.shape[0] if reduction == "mean" else 1
    return _class_labels.run_plain("softmax_cross_entropy", logits, target, None, grad,
                                   reduction, host, options, divisor)


def _checked(
    logits, target, reduction, ignore_index, label_smoothing, weight, backend, out, want_grad,
    check_labels,
):
    """``(loss, grad or None)``, on the logits' device: the remaining checks, then the kernel."""
    target, weight, out = _class_labels.device_arrays(backend, logits, target, weight, out)
    _class_labels.check_class_rows(logits, "logits", backend)
    rows, classes = logits.shape
    xp = backend.xp
    dtype = logits.dtype
    labelled = target.dtype.kind in "iu"
    work = backend.compute_dtype(dtype, *(() if labelled else (target.dtype,)))

    labels = probabilities = None
    if labelled:
        labels = _class_labels.labels(target, rows, ignore_index, xp)
    elif target.dtype.kind == "f" or target.dtype.name == "bfloat16":
        probabilities = _probabilities(target, logits, ignore_index, work, backend, xp)
    else:
        raise TypeError(
            "target must be integer class indices of shape (N,) or floating-point class "
            f"probabilities of shape (N, k); got dtype {target.dtype}"
        )
    weight = _class_labels.weight(weight, classes, backend, xp)
    divisor = rows if reduction == "mean" else 1
    if labels is not None:
        divisor = _class_labels.divisor(labels, weight, classes, ignore_index, reduction,
                                        backend, check_labels)

    z = xp.ascontiguousarray(logits, dtype=work)
    target = labels if labels is not None else probabilities
    # The kernel may read a probability target after writing the gradient row.
    grad, writes_out = _tail.grad_buffer(xp, logits.shape, work, dtype, out, want_grad,
                                         inputs=(z, weight), distinct=(target,))
    row_losses = xp.empty(rows, xp.float64) if reduction == "none" else None

    reduced = backend.kernels["softmax_cross_entropy"](
        z, target, weight, grad, row_losses, ignore_index, label_smoothing, divisor,
    )
    return _tail.results(backend, dtype, reduced, row_losses, grad, writes_out, out)


def softmax_cross_entropy(
    logits, target, *, reduction: str = "mean", ignore_index: int = -100,
    label_smoothing: float = 0.0, weight=None, backend: str = "auto", check_labels: bool = False,
):
    return _softmax_cross_entropy(
        logits, target, reduction, ignore_index, label_smoothing, weight, backend, None, False,
        check_labels,
    )[0]


def softmax_cross_entropy_grad(
    logits, target, *, reduction: str = "mean", ignore_index: int = -100,
    label_smoothing: float = 0.0, weight=None, backend: str = "auto", check_labels: bool = False,
    out=None,
):
    return _softmax_cross_entropy(
        logits, target, reduction, ignore_index, label_smoothing, weight, backend, out, True,
        check_labels,
    )[1]


def softmax_cross_entropy_with_grad(
    logits, target, *, reduction: str = "mean", ignore_index: int = -100,
    label_smoothing: float = 0.0, weight=None, backend: str = "auto", check_labels: bool = False,
    out=None,
):
    return _softmax_cross_entropy(
        logits, target, reduction, ignore_index, label_smoothing, weight, backend, out, True,
        check_labels,
    )


_CONTRACT = """
    logits: ``(N, k)`` floating-point array, class axis last (any layout).
    target: ``(N,)`` integer class indices in ``[0, k)`` or ``ignore_index``,
        or ``(N, k)`` floating-point class probabilities.
    reduction: "mean", "sum" or "none" (one loss per row).
    ignore_index: a class index whose rows add no loss and no gradient, and
        are left out of the mean (index targets only: with probabilities, one
        >= 0 is a ValueError, as in PyTorch).
    label_smoothing: in ``[0, 1]``; the target becomes
        ``(1 - label_smoothing) * target + label_smoothing / k``.
    weight: optional ``(k,)`` class weights; a weighted "mean" of index
        targets divides by the weight sum of the rows not ignored.
    backend: "auto", "numpy", "numba" or "cuda".
    check_labels: cuda only: check the labels on the device and raise
        ValueError (this synchronises). Without it an invalid label gives that
        row a NaN loss and gradient. The CPU backends always check.

    Semantics are ``torch.nn.functional.cross_entropy``'s on 2-D input, with
    ``0 * log 0 = 0`` (a zero target probability never makes NaN). Softmax is
    stable for logits of any magnitude; float16 is computed in float32.
    Raises ValueError for bad shapes, labels or options, TypeError for bad
    dtypes or array types.
"""

_GRAD_CONTRACT = """
    out: optional array of logits' shape and dtype that receives the gradient;
        it may be ``logits`` itself (an in-place gradient).
    The gradient is that of the reduced loss ("none": of the sum), with
    logits' shape and dtype.
"""

softmax_cross_entropy.__doc__ = """Softmax cross-entropy of ``logits`` against ``target``, reduced.

    Returns a scalar of logits' dtype (a NumPy scalar, or a 0-d CuPy array
    with no host synchronisation), or an ``(N,)`` array for "none".
""" + _CONTRACT
softmax_cross_entropy_grad.__doc__ = """Gradient of softmax cross-entropy with respect to logits.
""" + _CONTRACT + _GRAD_CONTRACT
softmax_cross_entropy_with_grad.__doc__ = """``(loss, grad)`` of softmax cross-entropy, one pass.
""" + _CONTRACT + _GRAD_CONTRACT
