"""Backends: one fused kernel per loss per backend, behind one contract.

Each backend package holds one module per loss (the loss's basename), and the
registry (``fastloss._registry``) maps ``(loss, backend)`` to its function,
and ``(hook, backend)`` to a helper (the hooks, at the end). Validation, dtype
policy, reduction bookkeeping and result wrapping live in ``fastloss.losses``
and on the backend objects of ``fastloss._backend``; a backend function only
computes.

An output array (a gradient, a softmax function's ``out``) may be an input's
own memory (the same array: an in-place result) or share none with any
input; the fronts write any other overlap, such as a shifted view of an
input's buffer, through a buffer of their own (``fastloss.losses._tail``).
A cross-entropy's probability target is the exception: the gradient never
shares memory with it, not even as the same array.

Every loss takes a ``divisor``: the front passes the element count, the row
count or the weight sum for "mean", 1 for "none" (where it ignores the
returned loss), and for "sum" 1 or a loss's own divisor (KL divergence's
"batchmean" the row count, crysx_nn's losses the node count). A zero
divisor gives inf or NaN as IEEE division does, never an exception or a
warning. Each backend returns the loss
``total / divisor`` with ``total`` summed in float64 in fixed-size blocks
combined in a fixed order (the same bits whatever the thread count or device
size): a float64 on the CPU backends (a Python float or a NumPy float64),
which the front rounds once to the input dtype; on cuda, a 0-d device array
already in the input dtype, written by the last kernel (rounded once from
float64), so the front adds no device operation.

The signature of every backend function is a Protocol below (``CONTRACTS``,
by registered name), against which tests/test_dispatch.py checks every
backend's function: the names, order, kinds and defaults of its parameters.
The Protocols' docstrings say the rest of the contract.

Optionally, a numba kernel carries a ``small_call``: the same result for
unraveled arrays of the front's common case, checked in compiled code, or
None, having written nothing, for any other arrays. The elementwise losses'
is ``small_call(x, target, out, divisor, param, shared) -> float or None``,
with ``out`` the gradient buffer or None (the same memory as an input only
with ``shared``); cross-entropy's, nll's and the multi-class hinge's
``small_call(x, labels, out, mean, options)`` (``options``: the kernel's own,
a tuple), the softmax entropy's ``small_call(logits, out, mean)``, the
softmax functions' ``small_call(x, g, out) -> True or None`` (``g``: the
second input, or ``x`` again); their docstrings say more.
"""

from __future__ import annotations

from typing import Protocol

from fastloss._registry import ELEMENTWISE


class ElementwiseLoss(Protocol):
    def __call__(self, x, target, grad_out, loss_out, divisor, weight=None, aux=None,
                 param=0.0):
        """Made per backend by ``<backend>.elementwise.fused`` from the loss's functor
        ``f(x, t, aux, param) -> (loss, slope)`` and its constant ``scale`` (the
        derivative is ``scale * slope``).

        - ``x``, ``target``: 1-D contiguous arrays, same length and dtype
          (float32/float64; the cuda backend also float16/bfloat16).
        - ``weight``, ``aux``: ``None`` or 1-D contiguous arrays of ``x``'s dtype whose
          length divides ``x``'s (never aliasing an output): element ``e`` reads
          ``weight[e % len(weight)]``, so a weight that repeats (a ``(k,)`` one of
          ``(N, k)`` input) is passed once (:func:`repeated` makes it whole). ``weight``
          multiplies each element's loss and slope; ``aux`` is the functor's per-element
          value (1.0 when None).
        - ``grad_out``: ``None`` or a 1-D contiguous array of ``x``'s dtype and
          length, possibly the same memory as ``x`` or ``target``; receives
          ``(scale / divisor) * (weight * slope)``, computed in float64 and rounded
          once.
        - ``loss_out``: ``None`` or a 1-D contiguous array of ``x``'s dtype and
          length; receives ``weight * f``.
        - ``param``: a Python float, the loss's scalar option (beta, delta, margin).
        - Returns ``sum(weight * f) / divisor``. Values outside a loss's domain
          (probabilities outside [0, 1], hinge targets other than -1 and +1) give a
          NaN loss and slope; the CPU front turns that into ValueError.
        """


class SoftmaxCrossEntropy(Protocol):
    def __call__(self, logits, target, weight, grad_out, loss_out, ignore_index,
                 label_smoothing, divisor):
        """Softmax cross-entropy.

        - ``logits``: ``(N, k)`` C-contiguous, float32/float64 (cuda: also halves).
        - ``target``: ``(N,)`` int64 class indices, or ``(N, k)`` C-contiguous
          probabilities of ``logits``' dtype.
        - ``weight``: ``None`` or a ``(k,)`` contiguous float64 array of class weights
          (``w_c = 1`` when ``None``).
        - Row ``i`` has the target distribution ``q_i = (1 - label_smoothing) * t_i
          + label_smoothing / k``, where ``t_i`` is ``onehot(target[i])`` or
          ``target[i]``; its loss is ``L_i = -sum_c q_ic * w_c * log_softmax(z_i)_c``
          with ``0 * log 0 = 0``, and ``L_i = 0`` for a label equal to
          ``ignore_index``. Labels reaching a CPU backend are valid (checked by the
          front); the cuda backend turns an invalid label's row into NaN.
        - ``grad_out``: ``None`` or ``(N, k)`` C-contiguous of ``logits``' dtype,
          possibly the same memory as ``logits``; receives ``(softmax(z_i)_c * S_i -
          q_ic * w_c) / divisor`` (as a product with ``1 / divisor``) with ``S_i =
          sum_c q_ic * w_c``; rows of ignored labels are exactly zero, whatever the
          divisor.
        - ``loss_out``: ``None`` or an ``(N,)`` float64 array; receives ``L_i``.
        - ``ignore_index``: int; ``label_smoothing``: float; ``divisor``: a Python
          number, or on the cuda backend a 0-d float64 device array (a mean's divisor
          over labels, from the cuda backend's ``mean_divisor`` hook), which the
          kernels read without a host sync.
        - Returns ``sum_i L_i / divisor``.
        """


class Nll(Protocol):
    def __call__(self, log_probs, labels, weight, grad_out, loss_out, ignore_index, divisor):
        """Negative log-likelihood: returns the summed row losses ``-weight[y] *
        log_probs[row, y]`` (0 for ignored rows) over ``divisor`` and writes ``-weight[y] /
        divisor`` at each row's label and 0 elsewhere into ``grad_out`` (when given; it may
        be ``log_probs``), and the row losses into ``loss_out``. Arrays as
        :class:`SoftmaxCrossEntropy`'s, labels only; the CPU fronts check the labels first.
        """


class MultiMargin(Protocol):
    def __call__(self, x, labels, weight, grad_out, loss_out, p, margin, divisor):
        """The multi-class hinge: returns the summed row losses ``w_y sum_{j != y} max(0,
        margin - x_y + x_j)**p / k`` over ``divisor``, and writes their gradient over
        ``divisor`` into ``grad_out`` (when given; it may be ``x``) and the row losses into
        ``loss_out``. As in PyTorch, a term whose ``margin - x_y + x_j`` is NaN adds nothing.
        Arrays as :class:`SoftmaxCrossEntropy`'s, labels only; the CPU fronts check the
        labels first.
        """


class SoftmaxEntropy(Protocol):
    def __call__(self, logits, grad_out, loss_out, divisor):
        """The entropy of each row's softmax: returns the summed row entropies ``H =
        -sum(p log p)`` over ``divisor`` and writes ``-p (log p + H) / divisor`` into
        ``grad_out`` (when given; it may be ``logits``) and the row entropies into
        ``loss_out``.
        """


# The softmax functions write ``out`` and return None. Arrays are ``(N, k)``, k >= 1,
# C-contiguous, of one compute dtype; ``out`` may be an input itself.


class Softmax(Protocol):
    def __call__(self, z, out):
        """``out = softmax(z)`` over each row."""


class LogSoftmax(Protocol):
    def __call__(self, z, out):
        """``out = log_softmax(z)`` over each row."""


class SoftmaxBackward(Protocol):
    def __call__(self, p, g, out):
        """``out = p * (g - sum(p * g))`` per row: the gradient with respect to the logits of
        the softmax ``p``, given ``g``, the gradient with respect to ``p``."""


class LogSoftmaxBackward(Protocol):
    def __call__(self, logp, g, out):
        """``out = g - exp(logp) * sum(g)`` per row: the gradient with respect to the logits
        of the log-softmax ``logp``, given ``g``, the gradient with respect to ``logp``."""


# Hooks (``fastloss._registry._HOOKS``, ``Backend.hooks[name]``): helpers a front asks its
# backend for, apart from the kernels.


class LabelSummary(Protocol):
    def __call__(self, labels, weight, classes, ignore_index):
        """numpy and numba: ``(first, kept)``, one pass over ``(N,)`` int64 labels.

        - ``first``: the position of the first label outside ``[0, classes)`` that is not
          ``ignore_index``, or -1; the front raises the ValueError for it before any kernel
          runs.
        - ``kept`` (meaningful when ``first`` is -1): a "mean"'s divisor, the number of rows
          not ignored (an int) or, with a ``(k,)`` float64 ``weight``, the sum of their
          labels' weights, in a fixed order.
        """


class MeanDivisor(Protocol):
    def __call__(self, labels, weight, classes, ignore_index):
        """cuda: a "mean"'s divisor over ``(N,)`` int64 labels as a new 0-d float64 device
        array, by one small kernel up to 4096 rows, two above (no synchronisation)."""


def repeated(values, size: int, xp):
    """An elementwise kernel's ``weight`` or ``aux`` (``ElementwiseLoss``) as all ``size`` of
    its elements (``xp``: the arrays' module), for backends that read them whole; None stays
    None."""
    if values is None or values.size == size:
        return values
    whole = xp.empty(size, values.dtype)
    whole.reshape(-1, values.size)[...] = values
    return whole


# Every registered kernel and hook name, and the Protocol its functions follow.
CONTRACTS: dict[str, type] = {name: ElementwiseLoss for name in ELEMENTWISE} | {
    "softmax_cross_entropy": SoftmaxCrossEntropy,
    "nll": Nll,
    "multi_margin": MultiMargin,
    "softmax_entropy": SoftmaxEntropy,
    "softmax": Softmax,
    "log_softmax": LogSoftmax,
    "softmax_backward": SoftmaxBackward,
    "log_softmax_backward": LogSoftmaxBackward,
    "label_summary": LabelSummary,
    "mean_divisor": MeanDivisor,
}
