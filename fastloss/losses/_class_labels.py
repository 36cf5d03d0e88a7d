"""Class-index targets, shared by the fronts of the losses over rows of classes (softmax
cross-entropy, NLL, the multi-class hinge): their checks, the class weights, what a "mean"
divides by, and the front of the losses whose target is always class indices."""

from __future__ import annotations

import math

import numpy as np

from fastloss import _registry
from fastloss import _validate as v
from fastloss.losses import _tail

_INT64_MAX = int(np.iinfo(np.int64).max)


def _label_error(label, classes, ignore_index) -> ValueError:
    ignored = "" if ignore_index is None else f" and not ignore_index={ignore_index}"
    return ValueError(f"target holds class index {int(label)}, outside [0, {classes}){ignored}")


def labels(target, rows, ignore_index, xp):
    """``target`` as :func:`int64_labels`; ValueError unless its shape is ``(rows,)``."""
    if target.shape != (rows,):
        raise ValueError(
            f"target of class indices must have shape (N,) = ({rows},); got {target.shape}"
        )
    return int64_labels(target, ignore_index, xp)


def int64_labels(target, ignore_index, xp):
    """Integer class indices ``target`` as C-contiguous int64. A uint64 label past int64's
    range, never a class, is a ValueError naming it on the host. On a device (no
    synchronisation) it would wrap to a negative label, which could pass for ignore_index,
    so it becomes int64's maximum (one less where that is ``ignore_index``; None: no label
    is ignored), which the label check rejects."""
    if target.dtype.kind == "u" and target.dtype.itemsize == 8:
        # uint64 throughout: no float promotion; a label of int64's maximum stays itself.
        huge = target > xp.uint64(_INT64_MAX)
        if xp is np:
            if huge.any():
                raise ValueError(f"target holds class index {int(target[huge][0])}, "
                                 "past int64's range")
        else:
            cap = _INT64_MAX - 1 if ignore_index == _INT64_MAX else _INT64_MAX
            target = xp.where(huge, xp.uint64(cap), target)
    return xp.ascontiguousarray(target, dtype=xp.int64)


def weight(weight, classes, backend, xp):
    """Optional ``(classes,)`` class weights as C-contiguous float64 (None stays None)."""
    if weight is None:
        return None
    weight = backend.asarray(weight, "weight")
    check_class_weight(weight, classes)
    return xp.ascontiguousarray(weight, dtype=xp.float64)


def check_class_weight(weight, classes) -> None:
    """TypeError unless the array ``weight`` is real-valued, ValueError unless its shape is
    ``(classes,)``. Dask's functions check their lazy weights with it too."""
    v.check_real_array(weight, "weight")
    if weight.shape != (classes,):
        raise ValueError(f"weight must have shape (k,) = ({classes},); got {weight.shape}")


def check(labels, classes, ignore_index=None) -> None:
    """ValueError for a label outside [0, classes) that is not ignore_index (None: no label
    is ignored); on a device this synchronises."""
    bad = (labels < 0) | (labels >= classes)
    if ignore_index is not None:
        bad &= labels != ignore_index
    if bool(bad.any()):
        raise _label_error(labels[bad][0], classes, ignore_index)


def host_kept(labels, weight, classes, ignore_index, backend):
    """ValueError for a label outside [0, classes) that is not ignore_index; else the
    weight sum of the rows not ignored (PyTorch's "mean" divisor), from one pass of the
    CPU backend's label summary."""
    first, kept = backend.hooks["label_summary"](labels, weight, classes, ignore_index)
    if first >= 0:
        raise _label_error(labels[first], classes, ignore_index)
    return kept


def divisor(labels, weight, classes, ignore_index, reduction, backend, check_labels):
    """What the kernel divides the summed row losses and the gradient by: 1, or for a
    "mean" the weight sum of the rows not ignored. On the CPU the labels are checked
    (ValueError); on a device the divisor is a device pre-pass (no synchronisation), and the
    labels are checked only with ``check_labels`` (an invalid one makes its row NaN)."""
    if backend.host:
        kept = host_kept(labels, weight, classes, ignore_index, backend)
        return mean_of(kept) if reduction == "mean" else 1
    if check_labels:
        check(labels, classes, ignore_index)
    if reduction != "mean":
        return 1
    return backend.hooks["mean_divisor"](labels, weight, classes, ignore_index)


def mean_of(kept):
    """A "mean"'s divisor from the weight sum of the rows not ignored: NaN where that is 0, so
    that the loss and the kept rows' gradients are NaN, as PyTorch's (its mean is 0 / 0 then,
    also where label smoothing leaves a sum that is not 0)."""
    return kept if kept != 0 else math.nan


def kept_divisor(ignore_index, reduction, check_labels):
    """:func:`divisor` with these options, as the ``divisor(labels, weight, classes,
    backend)`` that :func:`evaluate` and :func:`plain` take."""
    return lambda labels, weight, classes, backend: divisor(
        labels, weight, classes, ignore_index, reduction, backend, check_labels)


def device_arrays(backend, x, target, class_weight, out):
    """``(target, class_weight, out)`` as ``backend``'s arrays, refused unless all are on
    ``x``'s device: the first thing a row front does in ``x``'s scope, before any array
    operation, since a kernel must not read another GPU's memory."""
    target = backend.asarray(target, "target")
    if class_weight is not None:
        class_weight = backend.asarray(class_weight, "weight")
    out = backend.check_out(out, "out", x)
    backend.same_device(x, target, class_weight, out)
    return target, class_weight, out


def check_class_rows(x, name, backend):
    """TypeError or ValueError unless ``x`` (called ``name``) is a float array of
    ``backend``'s dtypes, 2-D (N, k) with k >= 1: rows of classes. Dask's functions check
    their lazy arrays with it too."""
    backend.check_float(x, name)
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(
            f"{name} must be 2-D (N, k) with the class axis last and k >= 1; got shape {x.shape}"
        )


def check_label_dtype(target):
    """TypeError unless ``target`` (an array) holds integers: class indices."""
    if target.dtype.kind not in "iu":
        raise TypeError(
            f"target holds class indices, which must be integers; got dtype {target.dtype}"
        )


def evaluate(loss, name, x, target, class_weight, reduction, backend, out, want_grad, divisor,
             *options, ignore_index=None):
    """``(loss, grad or None)`` of ``loss`` over ``(N, k)`` rows ``x`` (called ``name`` in
    messages) against ``(N,)`` integer labels (``ignore_index``: the one ignored, or None):
    the checks of the error contract, then one call ``kernel(x, labels, weight, grad,
    row_losses, *options, divisor(labels, weight, classes, backend))``; ``reduction`` is
    already checked."""
    host = _registry.host_backend(backend)
    if host is not None:
        result = plain(loss, x, target, reduction, host, out, want_grad, options, divisor,
                       class_weight)
        if result is not None:
            return result
    backend = _registry.backend(backend, x, target, class_weight, out)
    x = backend.asarray(x, name)
    with backend.scope(x):
        target, class_weight, out = device_arrays(backend, x, target, class_weight, out)
        check_class_rows(x, name, backend)
        check_label_dtype(target)
        rows, classes = x.shape
        xp, dtype = backend.xp, x.dtype
        work = backend.compute_dtype(dtype)
        indices = labels(target, rows, ignore_index, xp)
        class_weight = weight(class_weight, classes, backend, xp)
        kernel_divisor = divisor(indices, class_weight, classes, backend)
        x = xp.ascontiguousarray(x, dtype=work)
        grad, writes_out = _tail.grad_buffer(xp, x.shape, work, dtype, out, want_grad,
                                             inputs=(x, indices, class_weight))
        row_losses = xp.empty(rows, xp.float64) if reduction == "none" else None
        reduced = backend.kernels[loss](
            x, indices, class_weight, grad, row_losses, *options, kernel_divisor,
        )
        return _tail.results(backend, dtype, reduced, row_losses, grad, writes_out, out)


def plain(loss, x, labels, reduction, host, out, want_grad, options, divisor, class_weight=None):
    """``(loss, grad or None)`` of ``loss`` for C-contiguous NumPy rows ``x`` of a native
    float dtype and int64 ``labels``, on a CPU backend, without class weights or with a
    NumPy float32 or float64 ``(k,)`` array of them: :func:`evaluate`'s result with nothing
    to convert but the weights, at a fraction of its per-call cost; None for other arrays.
    Reduced and without weights, the backend's small call, where it has one, checks and
    runs such arrays in one compiled call; else the kernel runs with ``options`` and
    ``divisor(labels, weight, classes, host)``."""
    small_call = (host.small_calls[loss] if class_weight is None and reduction != "none"
                  else None)
    grad = reduced = None
    if small_call is not None and v.typed_rows(x, labels, out):
        grad = _tail.plain_grad(x, out, want_grad)
        reduced = small_call(x, labels, grad, reduction == "mean", options)
    if reduced is None:
        if not v.plain_rows(x, labels, out):
            return None
        if class_weight is not None:
            class_weight = _plain_weight(class_weight, x.shape[1])
            if class_weight is None:
                return None
        if _tail.overlaps(np, out, x, labels, class_weight):
            return None
        if grad is None:
            grad = _tail.plain_grad(x, out, want_grad)
        return run_plain(loss, x, labels, class_weight, grad, reduction, host, options,
                         divisor(labels, class_weight, x.shape[1], host))
    return host.result(reduced, x.dtype), grad


def run_plain(loss, x, target, class_weight, grad, reduction, host, options, divisor):
    """``(loss, grad)`` of the host kernel of ``loss`` on arrays the short paths have
    cleared, as :func:`evaluate` gives them: reduced, or per row for "none"."""
    row_losses = np.empty(x.shape[0]) if reduction == "none" else None
    reduced = host.kernels[loss](x, target, class_weight, grad, row_losses, *options, divisor)
    if row_losses is not None:
        return _tail.narrowed(row_losses, x.dtype), grad
    return host.result(reduced, x.dtype), grad


def _plain_weight(class_weight, classes):
    """A NumPy float32 or float64 array of shape ``(classes,)`` as the kernels take class
    weights (C-contiguous float64, as :func:`weight` makes them); None for anything else."""
    if (type(class_weight) is np.ndarray and class_weight.shape == (classes,)
            and class_weight.dtype in (np.float32, np.float64)):
        return np.ascontiguousarray(class_weight, dtype=np.float64)
    return None
