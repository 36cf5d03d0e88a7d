"""Numba MSE: the loss and its gradient in one pass, summed in fixed blocks.

See ``fastloss.backends`` for the contract of :func:`mse`.
"""

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

# Partial sums kept per lane: element j of a block adds into lane j % LANES, so
# the order of every float64 addition is fixed by the source, not by the
# vector width LLVM picks. 64 keeps the lane loops long enough that LLVM
# vectorises them instead of unrolling them into scalar code.
LANES = 64
# Elements per parallel work item. Blocks, not threads, decide where partial
# sums start and end, which makes the result independent of the thread count.
# Each sum is float64 over at most BLOCK / LANES + LANES + blocks terms, so its
# relative error stays below 1e-12 up to 1e8 elements.
BLOCK = 256 * LANES
# Up to this many elements a call runs on one thread: it takes tens of
# microseconds, which starting the other threads would not shorten, and on a
# busy machine waiting for a second core to be scheduled costs milliseconds.
# The choice depends on the size alone and leaves the blocks as they are, so
# it changes no bit of the result.
SERIAL_ELEMENTS = 1 << 17


# The same helper as in softmax_cross_entropy.py: Numba's cache only notices
# edits to the file of the function it caches, so each kernel file keeps its own.
@intrinsic
def _stack_lanes(typingctx, like):
    """A 1-D array of LANES items of ``like``'s (dtype's) type on the stack.

    LLVM knows a stack buffer aliases no argument, so a chunk read into it
    and written out of it vectorises without runtime overlap checks, which
    would fail, and fall back to scalar code, exactly when the gradient is
    computed in place. Contents start undefined; the array must not outlive
    the function that created it.
    """
    item = like.dtype if isinstance(like, types.Array) else like
    array_type = types.Array(item, 1, "C")

    def codegen(context, builder, signature, args):
        item_type = context.get_value_type(item)
        data = cgutils.alloca_once(builder, item_type, size=LANES)
        intp = context.get_value_type(types.intp)
        itemsize = ir.Constant(intp, context.get_abi_sizeof(item_type))
        lanes = context.make_array(array_type)(context, builder)
        context.populate_array(
            lanes,
            data=data,
            shape=cgutils.pack_array(builder, [ir.Constant(intp, LANES)]),
            strides=cgutils.pack_array(builder, [itemsize]),
            itemsize=itemsize,
            meminfo=None,
        )
        return lanes._getvalue()

    return array_type(like), codegen


def _part(array, start, stop):
    """``array[start:stop]``, or None for a None array; resolved while typing
    so that the part is a plain array type, never an optional one."""
    return None if array is None else array[start:stop]


@overload(_part)
def _part_overload(array, start, stop):
    if isinstance(array, types.NoneType):
        return lambda array, start, stop: None
    return lambda array, start, stop: array[start:stop]


@njit(cache=True, inline="always", error_model="numpy")
def _chunk(pred, target, grad_out, loss_out, grad_scale, start, count, lane_sums, diff):
    # All loads of the chunk happen before any store, so an output that is
    # the same memory as an input is read before it is overwritten.
    for lane in range(count):
        diff[lane] = np.float64(pred[start + lane]) - np.float64(target[start + lane])
    for lane in range(count):
        square = diff[lane] * diff[lane]
        lane_sums[lane] += square
        if grad_out is not None:
            grad_out[start + lane] = grad_scale * diff[lane]
        if loss_out is not None:
            loss_out[start + lane] = square


@njit(cache=True, error_model="numpy")
def _block_sum(pred, target, grad_out, loss_out, grad_scale):
    size = pred.size
    lane_sums = _stack_lanes(0.0)
    diff = _stack_lanes(0.0)
    for lane in range(LANES):
        lane_sums[lane] = 0.0
    full = size - size % LANES
    for start in range(0, full, LANES):
        _chunk(pred, target, grad_out, loss_out, grad_scale, start, LANES, lane_sums, diff)
    _chunk(pred, target, grad_out, loss_out, grad_scale, full, size - full, lane_sums, diff)
    total = 0.0
    for lane in range(LANES):
        total += lane_sums[lane]
    return total


@njit(cache=True, error_model="numpy")
def _block_of(pred, target, grad_out, loss_out, grad_scale, block):
    start = block * BLOCK
    stop = min(start + BLOCK, pred.size)
    return _block_sum(
        pred[start:stop],
        target[start:stop],
        _part(grad_out, start, stop),
        _part(loss_out, start, stop),
        grad_scale,
    )


@njit(parallel=True, cache=True, error_model="numpy")
def _mse_kernel(pred, target, grad_out, loss_out, divisor):
    size = pred.size
    grad_scale = 2.0 / divisor
    blocks = (size + BLOCK - 1) // BLOCK
    partials = np.empty(blocks)
    if size <= SERIAL_ELEMENTS:
        for block in range(blocks):
            partials[block] = _block_of(pred, target, grad_out, loss_out, grad_scale, block)
    else:
        for block in prange(blocks):
            partials[block] = _block_of(pred, target, grad_out, loss_out, grad_scale, block)
    total = 0.0
    for block in range(blocks):
        total += partials[block]
    return total / divisor


def mse(pred, target, grad_out, loss_out, divisor):
    """Sum of ``(pred - target) ** 2`` over ``divisor`` as a Python float;
    optionally writes ``2 * (pred - target) / divisor`` to ``grad_out`` and the
    squares to ``loss_out`` (see ``fastloss.backends`` for shapes and aliasing)."""
    return _mse_kernel(pred, target, grad_out, loss_out, float(divisor))
