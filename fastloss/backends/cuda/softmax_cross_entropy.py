"""Softmax cross-entropy on the GPU: the launcher of ``kernels/softmax_cross_entropy.cu``.

Contract: ``fastloss.backends``. Launches per call: two (the fused pass, then
the finishing kernel that writes the loss in the logits' dtype). A "mean" over
class indices is the one exception: its divisor depends on the labels and the
gradient needs it, so :func:`mean_divisor` computes it first, on the device
(one kernel up to 4096 rows, block partials and their sum above), and both
kernels read it there (no host round trip): three launches, or four.
"""

from __future__ import annotations

import numpy as np

from fastloss.backends.cuda import _module

TILE = 16  # FL_ROW_TILE (kernels/common/rows.cuh): logits per thread held in registers per tile
GROUP_BLOCK = 256  # FL_ROW_GROUP_BLOCK: threads per block when rows share warps
MAX_THREADS = 256  # FL_ROW_MAX_THREADS
# A constant, not derived from the GPU: the row-to-block partition, hence the
# bits of the total, must be the same on every device.
MAX_BLOCKS = 16384
DIVISOR_THREADS = 256  # FL_CE_DIVISOR_THREADS
# The divisor pass's grid: a block per DIVISOR_THREADS * DIVISOR_ROWS_PER_THREAD
# labels (one block, writing the divisor itself, up to 4096 rows), capped where
# the labels are read at full bandwidth and one finishing block sums the
# partials. Constants, so the partition of the rows (hence the bits of a weighted
# divisor) is the same on every device.
DIVISOR_ROWS_PER_THREAD = 16
DIVISOR_MAX_BLOCKS = 1024
_DIVISOR_ENTRY = "fl_softmax_cross_entropy_mean_divisor"


def launch_shape(rows: int, classes: int) -> tuple[int, int, int]:
    """``(blocks, threads, row_lanes)`` for ``(rows, classes)`` logits of any dtype.

    Rows of at most 32 * TILE classes share warps: a group of ``row_lanes``
    lanes per row, the fewest power of two whose tiles (TILE elements a lane)
    hold the row (1 lane for k <= 16, 32 from k = 257), so that the row is read
    once and a lane's tile is mostly the row's. A lane pays for its whole tile
    and for the row's set-up (label, reductions, a float64 log and reciprocal)
    whatever k is, so more lanes than the row needs only cost: on an H200 at
    2^26 float32 logits, one lane a row (k = 10) took 0.42 of the time of a
    16-byte packet a lane (4 lanes), and 8 lanes (k = 100) 0.39 of 32 lanes.
    Longer rows get one block each (``row_lanes`` = 0) of up to MAX_THREADS
    threads, enough to hold the row in registers when it fits (at most
    MAX_THREADS * TILE classes), else streamed.
    """
    if classes <= 32 * TILE:
        row_lanes = 1 << (-(-classes // TILE) - 1).bit_length()
        threads, rows_per_block = GROUP_BLOCK, GROUP_BLOCK // row_lanes
    else:
        threads = min(MAX_THREADS, 32 * -(-classes // (32 * TILE)))
        rows_per_block, row_lanes = 1, 0
    blocks = min(MAX_BLOCKS, -(-rows // rows_per_block))
    return blocks, threads, row_lanes


def launch_rows(name: str, entry: str, x, inputs, grad_out, loss_out, options, divisor):
    """The fused pass of a row loss over ``(N, k)`` ``x`` (kernel ``entry`` of
    ``kernels/<name>.cu``), then its finishing kernel; returns :func:`_module.finish`'s
    loss. Every row kernel takes its arguments in this order: ``inputs`` (``x``, then
    its labels or target and weight), the optional gradient and row-loss outputs,
    the block partials, rows, classes, the kernel's own ``options``, the divisor
    and the lanes per row of :func:`launch_shape`."""
    import cupy

    rows, classes = x.shape
    blocks, threads, row_lanes = launch_shape(rows, classes)
    with x.device:
        partials = cupy.empty(blocks, dtype=cupy.float64)
        if blocks:
            args = (
                *inputs,
                _module.pointer_or_null(grad_out),
                _module.pointer_or_null(loss_out),
                partials,
                np.int64(rows),
                np.int64(classes),
                *options,
                *_module.divisor_args(divisor),
                np.int32(row_lanes),
            )
            _module.get_function(name, entry)((blocks,), (threads,), args)
        return _module.finish(name, partials, blocks, divisor, x.dtype)


def mean_divisor(labels, weight, classes: int, ignore_index: int):
    """A "mean"'s divisor over ``(N,)`` int64 labels as a new 0-d float64 device
    array: the sum of ``weight[label]`` (or the count, for no weight) over the
    rows not ignored. Block partials in a fixed partition, then their sum in a
    fixed order (the float64 finishing kernel, dividing by 1); a single block's
    partial is the divisor."""
    import cupy

    assert labels.ndim == 1, labels.shape
    _module.expect(labels, "labels", labels.shape, np.int64)
    _module.expect(weight, "weight", (classes,), np.float64)
    per_block = DIVISOR_THREADS * DIVISOR_ROWS_PER_THREAD
    blocks = max(1, min(DIVISOR_MAX_BLOCKS, -(-labels.size // per_block)))
    args = (labels, _module.pointer_or_null(weight), np.int64(labels.size), np.int64(classes))
    with labels.device:
        partials = cupy.empty(() if blocks == 1 else blocks, dtype=cupy.float64)
        kernel = _module.get_function("softmax_cross_entropy", _DIVISOR_ENTRY)
        kernel((blocks,), (DIVISOR_THREADS,), (*args, np.int64(ignore_index), partials))
        if blocks == 1:
            return partials
        return _module.finish("softmax_cross_entropy", partials, blocks, 1.0, np.dtype(np.float64))


def softmax_cross_entropy(
    logits, target, weight, grad_out, loss_out, ignore_index, label_smoothing, divisor
):
    dtype = logits.dtype
    probabilities = target.ndim == 2
    entry = _module.entry(
        "softmax_cross_entropy_probs" if probabilities else "softmax_cross_entropy", dtype
    )
    assert logits.ndim == 2, logits.shape
    rows, classes = logits.shape
    _module.expect(logits, "logits", logits.shape, dtype)
    if probabilities:
        _module.expect(target, "target", logits.shape, dtype)
    else:
        _module.expect(target, "target", (rows,), np.int64)
    _module.expect(weight, "weight", (classes,), np.float64)
    _module.expect(grad_out, "grad_out", logits.shape, dtype)
    _module.expect(loss_out, "loss_out", (rows,), np.float64)

    inputs = (logits, target, _module.pointer_or_null(weight))
    options = () if probabilities else (np.int64(ignore_index),)
    return launch_rows("softmax_cross_entropy", entry, logits, inputs,
                       grad_out, loss_out, (*options, np.float64(label_smoothing)), divisor)
