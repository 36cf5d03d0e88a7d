"""Numba softmax cross-entropy: per-row loss and gradient, rows in fixed blocks.

Each row is read from memory once: it is fetched into cache while the row
before it computes its exponentials, and every pass (max, smoothing or
probability term, exponentials, gradient) then works on the cached row. The
exponentials are written into the gradient row as scratch and rescaled in
place, so no temporary of the input's size exists.

See ``fastloss.backends`` for the contract of :func:`softmax_cross_entropy`;
rows must have at least one class (the front rejects k = 0).
"""

import math

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

# Reductions keep LANES partial results (class c goes to lane c % LANES) so
# that the order of every addition is fixed by the source and LLVM can still
# vectorise the lane loops without reassociating.
LANES = 64
# Logits per parallel work item, in whole rows (at least one): enough work to
# outweigh scheduling, small enough that a few long rows still spread over the
# threads. Blocks depend on the shape alone, never on the thread count, and
# fix the summation order.
BLOCK_ELEMENTS = 1 << 16


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


@intrinsic
def _fma(typingctx, a, b, c):
    """a * b + c rounded once (IEEE fma: the same bits on every machine)."""
    if not (a == b == c and isinstance(a, types.Float)):
        return None

    def codegen(context, builder, signature, args):
        float_type = args[0].type
        name = "llvm.fma.f32" if a == types.float32 else "llvm.fma.f64"
        fma = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(float_type, [float_type] * 3), name
        )
        return builder.call(fma, args)

    return a(a, a, a), codegen


def _prefetcher(for_write):
    def prefetch(typingctx, array, index):
        def codegen(context, builder, signature, args):
            data = context.make_array(signature.args[0])(context, builder, args[0]).data
            element = builder.gep(data, [args[1]])
            address = builder.bitcast(element, ir.IntType(8).as_pointer())
            i32 = ir.IntType(32)
            # Unsuffixed, LLVM renames it to its own pointer flavour's overload.
            hint = cgutils.get_or_insert_function(
                builder.module,
                ir.FunctionType(ir.VoidType(), [address.type, i32, i32, i32]),
                "llvm.prefetch",
            )
            # locality 3 (keep in every cache level), data cache
            flags = [ir.Constant(i32, for_write), ir.Constant(i32, 3), ir.Constant(i32, 1)]
            builder.call(hint, [address, *flags])
            return context.get_dummy_value()

        return types.none(array, index), codegen

    return intrinsic(prefetch)


# Cache-line hints for array[index] of a 1-D C array.
_prefetch_read = _prefetcher(0)
_prefetch_write = _prefetcher(1)


@intrinsic
def _float32_bits(typingctx, value):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(types.float32), codegen


@intrinsic
def _bits_float32(typingctx, bits):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


_F32 = np.float32
# Below -104 every result rounds to 0; above ln(FLT_MAX) = 88.72 to inf. The
# clamp keeps the exponent n within [-150, 128], which the split scaling
# below turns into two normal powers of two.
_EXP_MIN = _F32(-104.0)
_EXP_MAX = _F32(89.0)
_LOG2E = _F32(1.4426950408889634)
# Adding 1.5 * 2**23 rounds to the nearest integer and leaves it in the low
# mantissa bits, so n is read off the bits without a float-to-int conversion
# (that conversion is undefined for NaN, which must pass through as NaN).
_ROUND = _F32(12582912.0)
_ROUND_BITS = np.int32(0x4B400000)
# Cody-Waite split of ln 2 (negated): n * ln 2 is subtracted in two steps, the
# first exact, so that r = x - n ln 2 keeps its low bits.
_MINUS_LN2_HI = _F32(-0.693359375)
_MINUS_LN2_LO = _F32(2.12194440e-4)
# Cephes expf minimax coefficients for (e**r - 1 - r) / r**2 on |r| <= ln(2)/2.
_P0 = _F32(1.9875691500e-4)
_P1 = _F32(1.3981999507e-3)
_P2 = _F32(8.3334519073e-3)
_P3 = _F32(4.1665795894e-2)
_P4 = _F32(1.6666665459e-1)
_P5 = _F32(5.0000001201e-1)
_ONE = _F32(1.0)


@njit(cache=True, error_model="numpy")
def _exp_float32(x):
    """exp(x) in float32 arithmetic that LLVM vectorises (libm's does not).

    Measured over every float32 in [-104, 0]: relative error at most 8.4e-8
    (1.41 * 2**-24) where the result is normal, at most 0.75 * 2**-149
    absolute where it is subnormal, and never more than one ulp from the
    correctly rounded value. exp(0) == 1, exp(-inf) == 0, exp(+inf) == inf,
    NaN -> NaN.
    """
    # Comparisons are false for NaN, which therefore passes both clamps.
    x = _EXP_MIN if x < _EXP_MIN else x
    x = _EXP_MAX if x > _EXP_MAX else x
    shifted = _fma(x, _LOG2E, _ROUND)
    n_float = shifted - _ROUND
    r = _fma(n_float, _MINUS_LN2_LO, _fma(n_float, _MINUS_LN2_HI, x))
    poly = _fma(_fma(_fma(_fma(_fma(_P0, r, _P1), r, _P2), r, _P3), r, _P4), r, _P5)
    mantissa = _fma(poly, r * r, r) + _ONE
    n = _float32_bits(shifted) - _ROUND_BITS
    # 2**n as two factors: mantissa * 2**half is exact, and the second
    # product rounds once, also when the result is subnormal.
    half = n >> 1
    low = _bits_float32(np.int32((half + 127) << 23))
    high = _bits_float32(np.int32((n - half + 127) << 23))
    return mantissa * low * high


def _exp(x):
    """exp in the precision of ``x``; replaced by the overload in jitted code."""
    return np.exp(x)


@overload(_exp)
def _exp_overload(x):
    if x == types.float32:
        return lambda x: _exp_float32(x)
    return lambda x: math.exp(x)


@njit(cache=True, inline="always", error_model="numpy")
def _max_chunk(z, start, count, lane_max):
    for lane in range(count):
        value = z[start + lane]
        # NaN is skipped here; it reaches the result through exp(NaN - max).
        lane_max[lane] = value if value > lane_max[lane] else lane_max[lane]


@njit(cache=True, error_model="numpy")
def _row_max(z):
    classes = z.size
    lane_max = _stack_lanes(z)
    used = min(LANES, classes)
    for lane in range(used):
        lane_max[lane] = -np.inf
    full = classes - classes % LANES
    for start in range(0, full, LANES):
        _max_chunk(z, start, LANES, lane_max)
    _max_chunk(z, full, classes - full, lane_max)
    row_max = lane_max[0]
    for lane in range(1, used):
        row_max = lane_max[lane] if lane_max[lane] > row_max else row_max
    return row_max


@njit(cache=True, inline="always", error_model="numpy")
def _gap_chunk(z, row_max, probs, weight, keep, smooth, start, count, lane_weight, lane_gap):
    for lane in range(count):
        c = start + lane
        q = smooth if probs is None else keep * np.float64(probs[c]) + smooth
        qw = q if weight is None else q * weight[c]
        lane_weight[lane] += qw
        # 0 * log 0 = 0: a class with no target mass adds nothing, even when
        # its logit is -inf (the product would be 0 * inf = NaN).
        if qw != 0.0:
            lane_gap[lane] += qw * (np.float64(row_max) - np.float64(z[c]))


@njit(cache=True, error_model="numpy")
def _row_gap(z, row_max, probs, weight, keep, smooth):
    """(sum_c q_c w_c, sum_c q_c w_c (max - z_c)) with q_c = keep * probs_c +
    smooth (q_c = smooth when ``probs`` is None)."""
    classes = z.size
    lane_weight = _stack_lanes(0.0)
    lane_gap = _stack_lanes(0.0)
    used = min(LANES, classes)
    for lane in range(used):
        lane_weight[lane] = 0.0
        lane_gap[lane] = 0.0
    full = classes - classes % LANES
    for start in range(0, full, LANES):
        _gap_chunk(z, row_max, probs, weight, keep, smooth, start, LANES, lane_weight, lane_gap)
    _gap_chunk(z, row_max, probs, weight, keep, smooth, full, classes - full, lane_weight, lane_gap)
    weight_sum = 0.0
    gap_sum = 0.0
    for lane in range(used):
        weight_sum += lane_weight[lane]
        gap_sum += lane_gap[lane]
    return weight_sum, gap_sum


@njit(cache=True, inline="always", error_model="numpy")
def _exp_chunk(z, row_max, grad_row, start, count, exps, lane_sum):
    # Every logit of the chunk is read before its exponential is stored, so
    # grad_row may be the same memory as z.
    for lane in range(count):
        exps[lane] = _exp(z[start + lane] - row_max)
    for lane in range(count):
        lane_sum[lane] += np.float64(exps[lane])
        if grad_row is not None:
            grad_row[start + lane] = exps[lane]


@njit(cache=True, inline="always", error_model="numpy")
def _prefetch_chunk(next_z, next_grad, start):
    # The exponentials are compute-bound; fetching the next row meanwhile
    # lets its max pass run from cache instead of waiting on memory, and
    # fetching its gradient row for writing takes the read-for-ownership of
    # the scratch stores off that row's critical path.
    step = 64 // next_z.itemsize
    stop = min(start + LANES, next_z.size)
    for index in range(start, stop, step):
        _prefetch_read(next_z, index)
        if next_grad is not None:
            _prefetch_write(next_grad, index)


@njit(cache=True, error_model="numpy")
def _row_exp_sum(z, row_max, grad_row, next_z, next_grad):
    """sum_c exp(z_c - max), accumulated in float64 from the exponentials as
    stored into ``grad_row`` (when given) in z's precision; ``next_z`` and
    ``next_grad`` are the rows processed next."""
    classes = z.size
    exps = _stack_lanes(z)
    lane_sum = _stack_lanes(0.0)
    used = min(LANES, classes)
    for lane in range(used):
        lane_sum[lane] = 0.0
    full = classes - classes % LANES
    for start in range(0, full, LANES):
        _exp_chunk(z, row_max, grad_row, start, LANES, exps, lane_sum)
        _prefetch_chunk(next_z, next_grad, start)
    _exp_chunk(z, row_max, grad_row, full, classes - full, exps, lane_sum)
    exp_sum = 0.0
    for lane in range(used):
        exp_sum += lane_sum[lane]
    return exp_sum


@njit(cache=True, error_model="numpy")
def _row_grad(grad_row, exp_scale, probs, weight, keep_scaled, smooth_scaled):
    """grad_c = exp_c * exp_scale - (keep_scaled * probs_c + smooth_scaled) * w_c,
    with grad_row holding exp_c on entry; one rounding to the row's dtype."""
    for c in range(grad_row.size):
        q = smooth_scaled if probs is None else keep_scaled * np.float64(probs[c]) + smooth_scaled
        qw = q if weight is None else q * weight[c]
        grad_row[c] = np.float64(grad_row[c]) * exp_scale - qw


@njit(cache=True, error_model="numpy")
def _row_scale(grad_row, exp_scale):
    """grad_c = exp_c * exp_scale in the row's precision: the common case (no
    smoothing, labels) then costs one multiply per class, at most one ulp
    more error than the float64 path of _row_grad."""
    scale = grad_row.dtype.type(exp_scale)
    for c in range(grad_row.size):
        grad_row[c] = grad_row[c] * scale


def _row_of(array, row):
    """``array[row]``, or None for a None array; resolved while typing so that
    the row is a plain array type, never an optional one."""
    return None if array is None else array[row]


@overload(_row_of)
def _row_of_overload(array, row):
    if isinstance(array, types.NoneType):
        return lambda array, row: None
    return lambda array, row: array[row]


@njit(cache=True, error_model="numpy")
def _label_row(
    z, label, weight, grad_row, next_z, next_grad, ignore_index, keep, smooth, grad_scale
):
    if label == ignore_index:
        if grad_row is not None:
            grad_row[:] = 0
        return 0.0
    label_weight = 1.0 if weight is None else weight[label]
    row_max = _row_max(z)
    # Read before the exponentials may overwrite z (in-place gradient).
    label_gap = np.float64(row_max) - np.float64(z[label])
    weight_sum = keep * label_weight
    gap_sum = 0.0
    if weight_sum != 0.0:
        gap_sum = weight_sum * label_gap
    if smooth != 0.0:
        smooth_weight, smooth_gap = _row_gap(z, row_max, None, weight, 0.0, smooth)
        weight_sum += smooth_weight
        gap_sum += smooth_gap
    exp_sum = _row_exp_sum(z, row_max, grad_row, next_z, next_grad)
    if grad_row is not None:
        exp_scale = grad_scale * weight_sum / exp_sum
        label_exp = np.float64(grad_row[label])
        if smooth != 0.0:
            _row_grad(grad_row, exp_scale, None, weight, 0.0, grad_scale * smooth)
        else:
            _row_scale(grad_row, exp_scale)
        grad_row[label] = label_exp * exp_scale - grad_scale * (keep + smooth) * label_weight
    # L = -sum_c q_c w_c ((z_c - max) - log(sum)), split so that no -inf
    # log-probability is ever multiplied by a zero weight.
    return weight_sum * math.log(exp_sum) + gap_sum


@njit(cache=True, error_model="numpy")
def _probs_row(z, probs, weight, grad_row, next_z, next_grad, keep, smooth, grad_scale):
    row_max = _row_max(z)
    weight_sum, gap_sum = _row_gap(z, row_max, probs, weight, keep, smooth)
    exp_sum = _row_exp_sum(z, row_max, grad_row, next_z, next_grad)
    if grad_row is not None:
        exp_scale = grad_scale * weight_sum / exp_sum
        _row_grad(grad_row, exp_scale, probs, weight, grad_scale * keep, grad_scale * smooth)
    return weight_sum * math.log(exp_sum) + gap_sum


@njit(parallel=True, cache=True, error_model="numpy")
def _kernel(logits, target, weight, grad_out, loss_out, ignore_index, label_smoothing, divisor):
    grad_scale = 1.0 / divisor
    rows, classes = logits.shape
    keep = 1.0 - label_smoothing
    smooth = label_smoothing / classes
    row_block = max(1, BLOCK_ELEMENTS // classes)
    blocks = (rows + row_block - 1) // row_block
    partials = np.empty(blocks)
    for block in prange(blocks):
        block_sum = 0.0
        for row in range(block * row_block, min((block + 1) * row_block, rows)):
            z, grad_row = logits[row], _row_of(grad_out, row)
            following = min(row + 1, rows - 1)
            next_z, next_grad = logits[following], _row_of(grad_out, following)
            # Settled while compiling: target is either labels or probabilities.
            if target.ndim == 1:
                row_loss = _label_row(
                    z,
                    target[row],
                    weight,
                    grad_row,
                    next_z,
                    next_grad,
                    ignore_index,
                    keep,
                    smooth,
                    grad_scale,
                )
            else:
                row_loss = _probs_row(
                    z, target[row], weight, grad_row, next_z, next_grad, keep, smooth, grad_scale
                )
            if loss_out is not None:
                loss_out[row] = row_loss
            block_sum += row_loss
        partials[block] = block_sum
    total = 0.0
    for block in range(blocks):
        total += partials[block]
    return total / divisor


def softmax_cross_entropy(
    logits, target, weight, grad_out, loss_out, ignore_index, label_smoothing, divisor
):
    """Sum over rows of the (smoothed, weighted) softmax cross-entropy over
    ``divisor``, as a NumPy float64; optionally writes the gradient over
    ``divisor`` to ``grad_out`` and the per-row losses to ``loss_out`` (see
    ``fastloss.backends`` for shapes, dtypes and aliasing)."""
    total = _kernel(
        logits,
        target,
        weight,
        grad_out,
        loss_out,
        int(ignore_index),
        float(label_smoothing),
        float(divisor),
    )
    return np.float64(total)
