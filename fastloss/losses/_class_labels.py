"""Class-index targets, shared by the fronts of the losses over rows of classes (softmax
cross-entropy, NLL): their checks, the class weights, and what a "mean" divides by."""

from __future__ import annotations


def _label_error(label, classes, ignore_index) -> ValueError:
    ignored = "" if ignore_index is None else f" and not ignore_index={ignore_index}"
    return ValueError(f"target holds class index {int(label)}, outside [0, {classes}){ignored}")


def labels(target, rows, xp):
    """``target`` as C-contiguous int64 labels; ValueError unless its shape is ``(rows,)``."""
    if target.shape != (rows,):
        raise ValueError(
            f"target of class indices must have shape (N,) = ({rows},); got {target.shape}"
        )
    return xp.ascontiguousarray(target, dtype=xp.int64)


def weight(weight, classes, backend, xp):
    """Optional ``(classes,)`` class weights as C-contiguous float64 (None stays None)."""
    if weight is None:
        return None
    weight = backend.asarray(weight, "weight")
    if weight.dtype.kind not in "fiu":
        raise TypeError(f"weight must be a real-valued array; got dtype {weight.dtype}")
    if weight.shape != (classes,):
        raise ValueError(f"weight must have shape (k,) = ({classes},); got {weight.shape}")
    return xp.ascontiguousarray(weight, dtype=xp.float64)


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
    first, kept = backend.hook("label_summary")(labels, weight, classes, ignore_index)
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
        return kept if reduction == "mean" else 1
    if check_labels:
        check(labels, classes, ignore_index)
    if reduction != "mean":
        return 1
    return backend.hook("mean_divisor")(labels, weight, classes, ignore_index)
