"""The tail every loss front shares: the gradient buffer a kernel writes, then the caller's
``(loss, grad)`` from what the kernel wrote (out=, "none", dtype and layout)."""

from __future__ import annotations

import numpy as np


def _contiguous(array, order: str) -> bool:
    return array.flags.c_contiguous if order == "C" else array.flags.f_contiguous


def overlaps(xp, out, *inputs, distinct=()) -> bool:
    """Whether ``out`` may share memory with one of ``inputs`` without being it, or with
    one of ``distinct`` at all (None ones skipped). A kernel reads each of its ``inputs``
    elements before it writes the output at the same position, so ``out`` may be such an
    input itself; one that overlaps an input elsewhere (a shifted view of the same buffer)
    would be read after it is written, so it gets the kernel's output copied in
    afterwards, as NumPy's ufuncs do. ``distinct`` inputs are read after the output is
    written (a cross-entropy's probability target, with long rows)."""
    if out is None:
        return False
    # Arrays that own their memory were allocated apart: the common case, decided from flags
    # at a third of the cost of may_share_memory.
    owned = out.flags.owndata
    for x in inputs:
        if (x is not None and x is not out and not (owned and x.flags.owndata)
                and xp.may_share_memory(out, x)):
            return True
    for x in distinct:
        if x is out or (x is not None and xp.may_share_memory(out, x)):
            return True
    return False


def plain_grad(x, out, want_grad: bool):
    """The gradient buffer of a call on the common path (``fastloss._validate.plain_floats``):
    ``out``, or a new array like ``x``; None when no gradient is wanted."""
    if not want_grad:
        return None
    return np.empty_like(x) if out is None else out


def grad_buffer(xp, shape, work, dtype, out, want_grad: bool, order: str = "C", inputs=(),
                distinct=()):
    """``(buffer, writes_out)``: where the kernel writes the gradient, contiguous in ``order``.

    ``out`` itself when it has the compute dtype and that layout and does not
    overlap one of the kernel's ``inputs`` other than by being it, nor one of
    ``distinct`` at all (:func:`overlaps`; an in-place gradient costs nothing);
    otherwise a new array of the compute dtype, copied into ``out`` by
    :func:`results`. ``None`` when no gradient is wanted.
    """
    if not want_grad:
        return None, False
    if (out is not None and work == dtype and _contiguous(out, order)
            and not overlaps(xp, out, *inputs, distinct=distinct)):
        return out, True
    return xp.empty(shape, work, order=order), False


def results(backend, dtype, reduced, items, grad, writes_out: bool, out):
    """The caller's ``(loss, grad or None)``.

    ``items``: the per-element or per-row losses for "none" (any float dtype,
    made ``dtype``), else None and ``reduced`` is the backend's loss.
    ``grad``: the buffer of :func:`grad_buffer`.
    """
    loss = backend.result(reduced, dtype) if items is None else narrowed(items, dtype)
    return loss, None if grad is None else output(grad, writes_out, out, dtype)


def output(buffer, writes_out: bool, out, dtype):
    """The caller's array from a kernel's ``buffer`` of :func:`grad_buffer`: ``out``
    (written unless the kernel wrote it), or ``buffer`` in ``dtype``."""
    if writes_out:
        return buffer
    if out is None:
        return narrowed(buffer, dtype)
    with np.errstate(over="ignore", under="ignore"):
        out[...] = buffer
    return out


def narrowed(values, dtype, order="K"):
    """``values`` in ``dtype`` (itself when it has it; else a copy in ``order``), rounded as
    IEEE rounds: a value past the dtype's range is inf, one below its smallest subnormal 0,
    without NumPy's overflow and underflow warnings (or errors, under the caller's
    ``np.errstate``), as in PyTorch."""
    if values.dtype == dtype:
        return values
    with np.errstate(over="ignore", under="ignore"):
        return values.astype(dtype, order=order)
