"""Backends: one fused kernel per loss per backend, behind one contract.

Each backend package holds one module per loss (the loss's basename), and the
registry (``fastloss._registry``) maps ``(loss, backend)`` to its function.
Validation, dtype policy, reduction bookkeeping and result wrapping live in
``fastloss.losses``; a backend function only computes.

MSE: ``mse(pred, target, grad_out, loss_out, grad_scale) -> total``

- ``pred``, ``target``: 1-D contiguous arrays, same length and dtype
  (float32/float64; the cuda backend also float16/bfloat16).
- ``grad_out``: ``None`` or a 1-D contiguous array of ``pred``'s dtype and
  length, possibly the same memory as ``pred`` or ``target``; receives
  ``grad_scale * (pred - target)``, computed in the accumulator precision and
  rounded once.
- ``loss_out``: ``None`` or a 1-D contiguous array of ``pred``'s dtype and
  length; receives ``(pred - target) ** 2``.
- ``grad_scale``: a Python float.
- Returns the float64 sum of ``(pred - target) ** 2`` (a NumPy float64, or a
  0-d float64 device array), accumulated in fixed-size blocks combined in a
  fixed order: the same bits whatever the thread count or device size.

Softmax cross-entropy: ``softmax_cross_entropy(logits, target, weight,
grad_out, loss_out, ignore_index, label_smoothing, grad_scale) -> total``

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
  possibly the same memory as ``logits``; receives ``grad_scale *
  (softmax(z_i)_c * S_i - q_ic * w_c)`` with ``S_i = sum_c q_ic * w_c``
  (zero rows for ignored labels).
- ``loss_out``: ``None`` or an ``(N,)`` float64 array; receives ``L_i``.
- ``ignore_index``: int; ``label_smoothing``: float; ``grad_scale``: float,
  or on the cuda backend a 0-d float64 device array (a weighted mean's
  divisor computed on the device, read by the kernel without a host sync).
- Returns the float64 sum of ``L_i``, combined in a fixed order.
"""
