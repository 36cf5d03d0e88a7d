"""Backends: one fused kernel per loss per backend, behind one contract.

Each backend package holds one module per loss (the loss's basename), and the
registry (``fastloss._registry``) maps ``(loss, backend)`` to its function,
and ``(hook, backend)`` to a helper (see the end). Validation, dtype policy,
reduction bookkeeping and result wrapping live in ``fastloss.losses`` and on
the backend objects of ``fastloss._backend``; a backend function only
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

Elementwise losses (MSE, L1, smooth L1, Huber, BCE, BCE with logits, hinge, KL
divergence):
``<loss>(x, target, grad_out, loss_out, divisor, weight=None, aux=None,
param=0.0) -> loss``, made per backend by ``<backend>.elementwise.fused``
from the loss's functor ``f(x, t, aux, param) -> (loss, slope)`` and its
constant ``scale`` (the derivative is ``scale * slope``).

- ``x``, ``target``: 1-D contiguous arrays, same length and dtype
  (float32/float64; the cuda backend also float16/bfloat16).
- ``weight``, ``aux``: ``None`` or 1-D contiguous arrays of ``x``'s dtype and
  length (never aliasing an output). ``weight`` multiplies each element's loss
  and slope; ``aux`` is the functor's per-element value (1.0 when None).
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
- Optionally, ``<loss>.small_call(x, target, out, divisor, param, shared) ->
  float or None`` (numba): the same result for unraveled arrays of the
  front's common case, checked in compiled code, with ``out`` the gradient
  buffer or None (the same memory as an input only with ``shared``); None,
  having written nothing, for any other arrays. Cross-entropy, nll and the
  multi-class hinge have ``small_call(x, labels, out, mean, options)``
  (``options``: the kernel's own, a tuple), the softmax entropy
  ``small_call(logits, out, mean)``, the softmax functions ``small_call(x,
  g, out) -> True or None`` (``g``: the second input, or ``x`` again);
  their docstrings say more.

Softmax cross-entropy: ``softmax_cross_entropy(logits, target, weight,
grad_out, loss_out, ignore_index, label_smoothing, divisor) -> loss``

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

Hooks (``fastloss._registry._HOOKS``, ``Backend.hooks[name]``): helpers a
front asks its backend for, apart from the kernels.

- cuda ``mean_divisor(labels, weight, classes, ignore_index)``: a "mean"'s
  divisor over ``(N,)`` int64 labels as a new 0-d float64 device array, by
  one small kernel up to 4096 rows, two above (no synchronisation).
- numpy and numba ``label_summary(labels, weight, classes, ignore_index) ->
  (first, kept)``, one pass over ``(N,)`` int64 labels:

  - ``first``: the position of the first label outside ``[0, classes)`` that
    is not ``ignore_index``, or -1; the front raises the ValueError for it
    before any kernel runs.
  - ``kept`` (meaningful when ``first`` is -1): a "mean"'s divisor, the number
    of rows not ignored (an int) or, with a ``(k,)`` float64 ``weight``, the
    sum of their labels' weights, in a fixed order.
"""
