"""Backends: one fused kernel per loss per backend, behind one contract.

Each backend package holds one module per loss (the loss's basename), and the
registry (``fastloss._registry``) maps ``(loss, backend)`` to its function.
Validation, dtype policy, reduction bookkeeping and result wrapping live in
``fastloss.losses``; a backend function only computes.

Both losses take a ``divisor``: the front passes the element count, the row
count or the weight sum for "mean", and 1 for "sum" and "none" (where it
ignores the returned loss). A zero divisor gives inf or NaN as IEEE division
does, never an exception or a warning. Each backend returns the loss
``total / divisor`` with ``total`` summed in float64 in fixed-size blocks
combined in a fixed order (the same bits whatever the thread count or device
size): a float64 on the CPU backends (a Python float or a NumPy float64),
which the front rounds once to the input dtype; on cuda, a 0-d device array
already in the input dtype, written by the last kernel (rounded once from
float64), so the front adds no device operation.

MSE: ``mse(pred, target, grad_out, loss_out, divisor) -> loss``

- ``pred``, ``target``: 1-D contiguous arrays, same length and dtype
  (float32/float64; the cuda backend also float16/bfloat16).
- ``grad_out``: ``None`` or a 1-D contiguous array of ``pred``'s dtype and
  length, possibly the same memory as ``pred`` or ``target``; receives
  ``2 * (pred - target) / divisor`` (as ``(2 / divisor) * (pred - target)``),
  computed in the accumulator precision and rounded once.
- ``loss_out``: ``None`` or a 1-D contiguous array of ``pred``'s dtype and
  length; receives ``(pred - target) ** 2``.
- ``divisor``: a Python number.
- Returns ``sum((pred - target) ** 2) / divisor``.

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
  over labels, from ``cuda.softmax_cross_entropy.mean_divisor``), which the
  kernels read without a host sync.
- Returns ``sum_i L_i / divisor``.

Class indices on the CPU backends: ``label_summary(labels, weight, classes,
ignore_index) -> (first, kept)`` (registered apart from the kernels, see
``fastloss._registry.label_summary``), one pass over ``(N,)`` int64 labels:

- ``first``: the position of the first label outside ``[0, classes)`` that is
  not ``ignore_index``, or -1; the front raises the ValueError for it before
  any kernel runs.
- ``kept`` (meaningful when ``first`` is -1): a "mean"'s divisor, the number
  of rows not ignored (an int) or, with a ``(k,)`` float64 ``weight``, the sum
  of their labels' weights, in a fixed order.
"""
