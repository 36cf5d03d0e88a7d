"""Numba softmax cross-entropy: per-row loss and gradient, rows in fixed blocks.

Two layouts of the same arithmetic, chosen by the number of classes k, the dtype and the
kind of target alone (``lane_classes``), and a closed form for rows of two classes against
labels without weights (``_pairs_block``: softplus and sigmoid of the logits' difference,
in float64):

- Longer rows are computed one at a time, their
  classes spread over the vector lanes. Each row is read from memory once: it
  is fetched into cache while the row before it computes its exponentials,
  and every pass (max, smoothing or probability term, exponentials, gradient)
  then works on the cached row. The exponentials are written into the
  gradient row as scratch and rescaled in place, so no temporary of the
  input's size exists.
- Shorter rows would leave most lanes idle and pay a row's set-up for a few
  classes, so LANES rows go through together, one row per lane: a register
  transposition turns the LANES x k slab into a k x LANES tile on the stack,
  every pass runs down the tile's columns with all lanes busy, and the
  gradient tile is transposed back. While one tile computes its
  exponentials, the next slab of logits and this slab's gradient rows are
  fetched into cache.

The loops are vectorised at 512 bits where the machine has AVX-512
(``_wide_vectors``); the order of every addition is fixed by the source, so
the width changes no bit of a result.

See ``fastloss.backends`` for the contract of :func:`softmax_cross_entropy`;
rows must have at least one class (the front rejects k = 0).
"""

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils, config
from numba.core.codegen import get_host_cpu_features
from numba.extending import intrinsic, overload

from fastloss.backends.numba import _kernel_copies as copies
from fastloss.backends.numba import _small_calls as small


def _target_has_avx512():
    """Whether the CPU that Numba compiles for has AVX-512, found as Numba finds it
    (NUMBA_CPU_FEATURES, else the host's features less any NUMBA_ENABLE_AVX removes)."""
    features = config.CPU_FEATURES
    if features is None:
        features = get_host_cpu_features()
    return "+avx512f" in features.split(",")


# Reductions keep LANES partial results (class c goes to lane c % LANES) so
# that the order of every addition is fixed by the source and LLVM can still
# vectorise the lane loops without reassociating. Short rows go LANES at a
# time, one per lane.
LANES = 64
# Rows of at most this many classes go through in lanes (a multiple of the
# transposition width, so that the tile holds whole transposed blocks): the
# multi-class hinge's, and the tile of the softmax functions' backward passes
# (which stop at 32 classes). The default of ``_rows_per_block``.
LANE_CLASSES = 128
# Cross-entropy goes through in lanes up to rows of this many bytes against class
# labels (256 float32 classes, 128 float64), and up to rows shorter than that
# against probabilities (255, 127). A row at a time, rows of 129 to 255 float32
# classes end in a partial chunk: against labels they took 1.3-2.1x the time of
# rows in lanes (one thread, Zen 3; 1.9-2.7x with two), against probabilities
# 1.2-1.4x (two threads, Zen 4; 0.9-1.05x from 192 classes on). Rows of exactly
# this many bytes are whole chunks: against labels as fast either way (float32),
# against probabilities 0.9x the time a row at a time; float64 rows of 256 took
# 0.72x the time one at a time.
CE_LANE_BYTES = 1024
# Bytes of one transposed block's row, a vector's: a block is W x W items, W =
# bytes / itemsize. Rows go through in wide blocks, but for a last part of at
# most a narrow block's W classes, which goes through in narrow blocks that pad
# it less (cross-entropy, float32, one thread, against all-narrow blocks, which
# pad less but shuffle more per item: 14% less time at k = 24, 5% at k = 48,
# the same at k = 100 and 128). Rows of at most a narrow block's W classes go
# through in narrow blocks only: half or more of a wide block would be padding
# (one thread, Zen 4: float32 0.85x the time at k = 2, 0.91x at k = 8; float64
# 0.89-0.90x at k = 2 to 4). Wide
# blocks are 512-bit vectors where the machine has them; without AVX-512 a
# 512-bit shuffle or masked store is split in two and short rows went 1.5x
# slower (k = 2 to 8, float32, Zen 3) than in 256-bit blocks.
NARROW_BYTES = 32
WIDE_BYTES = 64 if _target_has_avx512() else NARROW_BYTES
# Logits per parallel work item, in whole rows (at least one): enough work to
# outweigh scheduling, small enough that a few long rows still spread over the
# threads. Blocks depend on the shape alone, never on the thread count, and
# fix the summation order.
BLOCK_ELEMENTS = 1 << 16
# Up to this many logits, one block's, a call runs the serial copy of the kernel
# (``_kernel_copies``): one block leaves the other threads nothing to do. Two blocks
# already pay for starting them: at 66K-131K logits the threaded copy took 0.65-0.91x the
# serial copy's time with two idle cores and 1.0-1.3x with other processes busy on them
# (Zen 3, float32 cross-entropy, softmax and softmax entropy; the elementwise kernels,
# bound by memory there, gained nothing and keep their own limit). The blocks stay as
# they are, so no bit of the result changes. Labels are checked and counted serially up
# to LABEL_SERIAL.
SERIAL_ELEMENTS = BLOCK_ELEMENTS
LABEL_SERIAL = 1 << 17


def _stack_array_of(size, in_bytes=False):
    @intrinsic
    def stack_array(typingctx, like):
        """A 1-D array of ``size`` items of ``like``'s (dtype's) type on the stack (with
        ``in_bytes``, of as many items as ``size`` bytes hold).

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
            item_bytes = context.get_abi_sizeof(item_type)
            items = size // item_bytes if in_bytes else size
            data = cgutils.alloca_once(builder, item_type, size=items)
            intp = context.get_value_type(types.intp)
            itemsize = ir.Constant(intp, item_bytes)
            array = context.make_array(array_type)(context, builder)
            context.populate_array(
                array,
                data=data,
                shape=cgutils.pack_array(builder, [ir.Constant(intp, items)]),
                strides=cgutils.pack_array(builder, [itemsize]),
                itemsize=itemsize,
                meminfo=None,
            )
            return array._getvalue()

        return array_type(like), codegen

    return stack_array


@intrinsic
def _borrowed_array(typingctx, array):
    def codegen(context, builder, signature, args):
        view = context.make_array(array)(context, builder, value=args[0])
        view.meminfo = cgutils.get_null_value(view.meminfo.type)
        view.parent = cgutils.get_null_value(view.parent.type)
        return view._getvalue()

    return array(array), codegen


def _borrow(array):
    """``array`` without its reference count (None stays None): views of it and
    calls that take it then skip the atomic increments and decrements of the
    count, which cost more than a short row's arithmetic. Only for arrays that
    outlive every use of the result, such as a kernel's arguments."""


@overload(_borrow)
def _borrow_overload(array):
    if isinstance(array, types.Array):
        return lambda array: _borrowed_array(array)
    return lambda array: array


_stack_lanes = _stack_array_of(LANES)
# A k x LANES tile of rows in lanes: row c holds class c of LANES rows.
_stack_tile = _stack_array_of(LANE_CLASSES * LANES)
_stack_ce_tile = _stack_array_of(CE_LANE_BYTES * LANES, in_bytes=True)


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


# Cache-line hints for the item at flat position ``index`` of a C-contiguous array.
_prefetch_read = _prefetcher(0)
_prefetch_write = _prefetcher(1)


@intrinsic
def _float_bits(typingctx, value):
    """The IEEE bits of a float32 (float64) as an int32 (int64)."""
    if value not in (types.float32, types.float64):
        return None
    bits = types.int32 if value == types.float32 else types.int64

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(bits))

    return bits(value), codegen


@intrinsic
def _bits_float(typingctx, bits):
    """The float32 (float64) whose IEEE bits are an int32 (int64)."""
    if bits not in (types.int32, types.int64):
        return None
    value = types.float32 if bits == types.int32 else types.float64

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(value))

    return value(bits), codegen


def _transposer(vector_bytes):
    @intrinsic
    def transpose_block(
        typingctx, source, source_start, source_stride, destination, destination_start,
        destination_stride, load_count, store_count, scales, store_end,
    ):
        """Transpose one W x W block in registers, W = vector_bytes / itemsize:

            destination[destination_start + j * destination_stride + i]
                = source[source_start + i * source_stride + j]      for i, j < W,

        reading only the first ``load_count`` items of each of the W source rows
        (the others count as 0) and writing only the first ``store_count`` items of
        each of the W destination rows. Masked loads and stores touch no other
        memory, so a source or destination row may end where its array does.
        Unless ``scales`` is None, destination row j is multiplied by
        ``scales[j]`` (one rounding) on its way out. Unless ``store_end`` is None,
        a destination row whose W items end at or before ``store_end`` is written
        whole, items past ``store_count`` included (undefined values, which the
        caller overwrites later): a plain store, where AVX2's masked store is
        microcoded on AMD's cores and cost cross-entropy a third of its time at
        k = 10 (Zen 3).

        Transposing through shuffles costs about a tenth of what element-wise
        strided copies (gathers and scatters) cost.
        """
        if not (
            isinstance(source, types.Array)
            and isinstance(destination, types.Array)
            and source.dtype == destination.dtype
            and source.dtype in (types.float32, types.float64)
            and (scales is types.none or scales == source)
            and (store_end is types.none or isinstance(store_end, types.Integer))
        ):
            return None
        width = vector_bytes // (source.dtype.bitwidth // 8)

        def codegen(context, builder, signature, args):
            i32, i64 = ir.IntType(32), ir.IntType(64)
            vector = ir.VectorType(context.get_value_type(source.dtype), width)
            mask_type = ir.VectorType(ir.IntType(1), width)
            index_vector = ir.VectorType(i64, width)

            def lanes(values):
                return ir.Constant(ir.VectorType(i32, width), values)

            def offset(index):
                return context.cast(builder, args[index], signature.args[index], types.int64)

            def lanes_below(count):
                undefined = ir.Constant(index_vector, ir.Undefined)
                first = builder.insert_element(undefined, count, ir.Constant(i32, 0))
                splat = builder.shuffle_vector(first, undefined, lanes([0] * width))
                positions = ir.Constant(index_vector, list(range(width)))
                return builder.icmp_unsigned("<", positions, splat)

            def row_start(start_index, stride_index, row):
                return builder.add(
                    offset(start_index), builder.mul(ir.Constant(i64, row), offset(stride_index))
                )

            def row_pointer(array_index, start):
                array = context.make_array(signature.args[array_index])(
                    context, builder, args[array_index]
                )
                return builder.bitcast(builder.gep(array.data, [start]), vector.as_pointer())

            # Suffixed by the vector type alone (both widths may share a module);
            # LLVM renames them to their overloads for this vector and pointer type.
            suffix = f".v{width}f{source.dtype.bitwidth}"
            pointer = vector.as_pointer()
            load = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vector, [pointer, i32, mask_type, vector]),
                "llvm.masked.load" + suffix,
            )
            store = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), [vector, pointer, i32, mask_type]),
                "llvm.masked.store" + suffix,
            )
            alignment = ir.Constant(i32, source.dtype.bitwidth // 8)
            load_mask, store_mask = lanes_below(offset(6)), lanes_below(offset(7))
            zeros = ir.Constant(vector, [0.0] * width)
            rows = [
                builder.call(
                    load, [row_pointer(0, row_start(1, 2, row)), alignment, load_mask, zeros]
                )
                for row in range(width)
            ]
            # Swap the off-diagonal half x half sub-blocks of every 2 half x 2 half
            # block, for half = W / 2, ..., 1: log2(W) rounds of W shuffles.
            half = width // 2
            while half:
                swapped = list(rows)
                for row in range(width):
                    if row & half:
                        continue
                    upper, lower = rows[row], rows[row + half]
                    swapped[row] = builder.shuffle_vector(upper, lower, lanes(
                        [lane if not lane & half else width + lane - half for lane in range(width)]
                    ))
                    swapped[row + half] = builder.shuffle_vector(upper, lower, lanes(
                        [lane + half if not lane & half else width + lane for lane in range(width)]
                    ))
                rows = swapped
                half //= 2
            if scales is not types.none:
                scale_data = context.make_array(signature.args[8])(context, builder, args[8]).data
                for row in range(width):
                    scale = builder.load(builder.gep(scale_data, [ir.Constant(i64, row)]))
                    splat = builder.insert_element(
                        ir.Constant(vector, ir.Undefined), scale, ir.Constant(i32, 0)
                    )
                    splat = builder.shuffle_vector(splat, splat, lanes([0] * width))
                    rows[row] = builder.fmul(rows[row], splat)
            for row in range(width):
                start = row_start(4, 5, row)
                pointer = row_pointer(3, start)
                if store_end is types.none:
                    builder.call(store, [rows[row], pointer, alignment, store_mask])
                    continue
                end = builder.add(start, ir.Constant(i64, width))
                whole = builder.icmp_signed("<=", end, offset(9))
                with builder.if_else(whole) as (then, otherwise):
                    with then:
                        builder.store(rows[row], pointer, align=alignment.constant)
                    with otherwise:
                        builder.call(store, [rows[row], pointer, alignment, store_mask])
            return context.get_dummy_value()

        signature = types.none(
            source, source_start, source_stride, destination, destination_start,
            destination_stride, load_count, store_count, scales, store_end,
        )
        return signature, codegen


    return transpose_block


_transpose_narrow = _transposer(NARROW_BYTES)
_transpose_wide = _transposer(WIDE_BYTES) if WIDE_BYTES != NARROW_BYTES else _transpose_narrow


def _vector_function(*attributes):
    @intrinsic
    def mark(typingctx):
        """Lets LLVM vectorise the calling function's loops at 512 bits where
        the machine has them (its default, 256, leaves half of AVX-512's width
        idle), and gives the function ``attributes``."""

        def codegen(context, builder, signature, args):
            function_attributes = builder.function.attributes
            # String attributes, which llvmlite's list of known ones lacks.
            set.add(function_attributes, '"prefer-vector-width"="512"')
            set.add(function_attributes, '"min-legal-vector-width"="512"')
            for name in attributes:
                function_attributes.add(name)
            return context.get_dummy_value()

        return types.none(), codegen

    return mark


# For a function whose loops should vectorise at 512 bits. LLVM vectorises a
# loop by the attributes of the function it ends up in after inlining, so the
# outermost such function stays out of line: inlined into a caller without
# them, its loops would fall back to 256 bits.
_wide_vectors = _vector_function()
_wide_vectors_out_of_line = _vector_function("noinline")


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
    return _exp_expm1_float32(x)[0]


@njit(cache=True, inline="always", error_model="numpy")
def _scaled_float32(excess, n):
    """(1 + excess) * 2**n for n in [-150, 128]: 2**n as two factors, so that
    (1 + excess) * 2**half is exact and the second product rounds once, also
    when the result is subnormal."""
    half = n >> 1
    low = _bits_float(np.int32((half + 127) << 23))
    high = _bits_float(np.int32((n - half + 127) << 23))
    return (excess + _ONE) * low * high


# 2**-64: scales a product that is exact while normal into the subnormal range.
_TWO_TO_MINUS_64 = _F32(2.0**-64)


@njit(cache=True, error_model="numpy")
def _exp_nonpositive_float32(x):
    """_exp_float32 for x <= 0 (and NaN, -inf), bit for bit, in fewer steps:
    no upper clamp, and 2**n (n in [-150, 0]) applied as 2**(n + 64), an exact
    product, times 2**-64, which rounds once. Softmax exponentials z - max
    are never positive."""
    excess, n = _exp_parts_float32(x)
    return (excess + _ONE) * _bits_float(np.int32((n + 64 + 127) << 23)) * _TWO_TO_MINUS_64


@njit(cache=True, inline="always", error_model="numpy")
def _exp_parts_float32(x):
    """(m - 1, n) with exp(x) = m * 2**n, m - 1 within an ulp of expm1(r), |r| <=
    ln(2) / 2, for x clamped below at _EXP_MIN (NaN passes through)."""
    x = _EXP_MIN if x < _EXP_MIN else x
    shifted = _fma(x, _LOG2E, _ROUND)
    n_float = shifted - _ROUND
    r = _fma(n_float, _MINUS_LN2_LO, _fma(n_float, _MINUS_LN2_HI, x))
    poly = _fma(_fma(_fma(_fma(_fma(_P0, r, _P1), r, _P2), r, _P3), r, _P4), r, _P5)
    return _fma(poly, r * r, r), _float_bits(shifted) - _ROUND_BITS


def _by_precision(float32_version, float64_version):
    """A function of one float that runs ``float32_version`` on a float32 and
    ``float64_version`` on anything else, chosen while compiling; jitted code only."""

    def generic(x):
        raise TypeError("runs in jitted code only")

    @overload(generic)
    def _generic_overload(x):
        if x == types.float32:
            return lambda x: float32_version(x)
        return lambda x: float64_version(x)

    return generic


# fdlibm's log (e_log.c): x = 2**n (1 + f) with 1 + f in [sqrt(2) / 2, sqrt(2)),
# log(1 + f) = f - s (f - R(s**2)) with s = f / (2 + f) and R a minimax
# polynomial; n ln 2 is added in two parts, the first exact.
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_LG1 = 6.666666666666735130e-01
_LG2 = 3.999999999940941908e-01
_LG3 = 2.857142874366239149e-01
_LG4 = 2.222219843214978396e-01
_LG5 = 1.818357216161805012e-01
_LG6 = 1.531383769920937332e-01
_LG7 = 1.479819860511658591e-01


@njit(cache=True, inline="always", error_model="numpy")
def _log(x):
    """log(x) of a float64 in arithmetic that LLVM vectorises (libm's is a call).

    fdlibm's algorithm with both of its final forms computed and one selected,
    so that a loop over lanes has no branch. Domain: normal x > 0, +inf and
    NaN (zero, negative and subnormal x give wrong finite values). Measured
    against long-double logs: within one ulp. log(1) == 0, inf -> inf,
    NaN -> NaN.
    """
    bits = _float_bits(x)
    high = bits >> 32
    n = (high >> 20) - 1023
    high &= 0x000FFFFF
    # Significands above sqrt(2) are halved (exponent 0x3fe instead of 0x3ff)
    # and n counts one more.
    halve = (high + 0x95F64) & 0x100000
    significand = _bits_float((bits & 0xFFFFFFFF) | ((high | (halve ^ 0x3FF00000)) << 32))
    n += halve >> 20
    f = significand - 1.0
    s = f / (2.0 + f)
    n_float = np.float64(n)
    z = s * s
    w = z * z
    r = z * (_LG1 + w * (_LG3 + w * (_LG5 + w * _LG7))) + w * (_LG2 + w * (_LG4 + w * _LG6))
    half_square = 0.5 * f * f
    # fdlibm's choice of form by the leading significand bits, for accuracy.
    low = n_float * _LN2_LO
    near_form = n_float * _LN2_HI - ((half_square - (s * (half_square + r) + low)) - f)
    far_form = n_float * _LN2_HI - ((s * (f - r) - low) - f)
    value = near_form if ((high - 0x6147A) | (0x6B851 - high)) > 0 else far_form
    # Comparisons are false for NaN, which therefore passes through, as inf does.
    return value if x < np.inf else x


# float64 exp: below -746 every result rounds to 0, and the clamp keeps 2**n within two normal
# factors. Adding 1.5 * 2**52 rounds to the nearest integer and leaves it in the low mantissa
# bits. n ln 2 is subtracted in fdlibm's two parts (above), the first exact.
_EXP64_MIN = -746.0
_LOG2E64 = 1.4426950408889634
_ROUND64 = 6755399441055744.0
_ROUND64_BITS = np.int64(0x4338000000000000)
# 1 / j! for j = 13 .. 2: the Taylor series of e**r, whose remainder on |r| <= ln(2) / 2 is
# below 4e-18 relative.
_INVERSE_FACTORIALS = tuple(1.0 / float(np.prod(np.arange(1, j + 1, dtype=np.float64)))
                            for j in range(13, 1, -1))


@njit(cache=True, inline="always", error_model="numpy")
def _exp_nonpositive_float64(x):
    """e**x for float64 x <= 0 (and -inf, NaN) in arithmetic that LLVM vectorises (libm's
    is a call, which kept float64 softmax rows scalar: 5-10x float32's time), within two
    ulp; 0 below -745.2."""
    excess, n = _exp_parts_float64(x)
    return _scaled_nonpositive_float64(excess, n)


@njit(cache=True, inline="always", error_model="numpy")
def _scaled_nonpositive_float64(excess, n):
    """(1 + excess) * 2**n for n in [-1077, 0], as 2**(n + 64), an exact product, times
    2**-64, which rounds once, also to a subnormal result."""
    return (excess + 1.0) * _bits_float((n + 64 + 1023) << 52) * 2.0**-64


@njit(cache=True, inline="always", error_model="numpy")
def _exp_parts_float64(x):
    """_exp_parts_float32 in float64, for x clamped below at _EXP64_MIN."""
    x = _EXP64_MIN if x < _EXP64_MIN else x  # NaN fails the comparison and passes
    shifted = _fma(x, _LOG2E64, _ROUND64)
    n_float = shifted - _ROUND64
    r = _fma(n_float, -_LN2_LO, _fma(n_float, -_LN2_HI, x))
    poly = _INVERSE_FACTORIALS[0]
    for coefficient in _INVERSE_FACTORIALS[1:]:
        poly = _fma(poly, r, coefficient)
    return _fma(poly, r * r, r), _float_bits(shifted) - _ROUND64_BITS


@njit(cache=True, inline="always", error_model="numpy")
def _exp_float64(x):
    """e**x for any float64 x: exp_nonpositive of -|x|, inverted for x > 0 (within
    four ulp up to 709, about five above, where e**-x is subnormal; inf above 709.8)."""
    return _exp_expm1_float64(x)[0]


@njit(cache=True, inline="always", error_model="numpy")
def _exp_expm1_float32(x):
    # Comparisons are false for NaN, which therefore passes both clamps.
    x = _EXP_MAX if x > _EXP_MAX else x
    excess, n = _exp_parts_float32(x)
    return _scaled_float32(excess, n), excess


@njit(cache=True, inline="always", error_model="numpy")
def _exp_expm1_float64(x):
    excess, n = _exp_parts_float64(-abs(x))
    small = _scaled_nonpositive_float64(excess, n)
    # NaN takes the second form, and stays NaN.
    return (small if x <= 0.0 else 1.0 / small), excess


# exp in the precision of x; _exp_nonpositive for x <= 0 (or NaN).
_exp = _by_precision(_exp_float32, _exp_float64)
_exp_nonpositive = _by_precision(_exp_nonpositive_float32, _exp_nonpositive_float64)
# (e**x, m): e**x as _exp gives it, bit for bit, and for EXPM1_LOW <= x <= 0 (where the
# reduction leaves x whole) m = e**x - 1 within an ulp, the polynomial itself, which no 1
# has rounded (elsewhere m is not e**x - 1).
EXPM1_LOW = -0.34
_exp_expm1 = _by_precision(_exp_expm1_float32, _exp_expm1_float64)


# --------------------------------------------- one row at a time (k > lane_classes)


@njit(cache=True, inline="always", error_model="numpy")
def _fold_sum(lanes):
    """The sum of LANES float64 lanes, added pairwise in a fixed tree. Each
    round's width is a constant, so that it adds as vectors; a loop over the
    rounds would leave them scalar. (LANES = 64: six rounds, written out: as
    calls of an inlined helper they cost compile time at every fold.)"""
    for lane in range(LANES // 2):
        lanes[lane] += lanes[lane + LANES // 2]
    for lane in range(LANES // 4):
        lanes[lane] += lanes[lane + LANES // 4]
    for lane in range(LANES // 8):
        lanes[lane] += lanes[lane + LANES // 8]
    for lane in range(LANES // 16):
        lanes[lane] += lanes[lane + LANES // 16]
    for lane in range(LANES // 32):
        lanes[lane] += lanes[lane + LANES // 32]
    return lanes[0] + lanes[1]


# A row's sum of exponentials is kept as an unevaluated pair (sum, error), error within
# half an ulp of sum, read by _log_sum and _label_gradient: a float64 sum taken whole
# rounds to an ulp of 1 near 1, where a confident row's log-sum-exp (its loss) is small,
# and kept it to 1e-16 absolute (a loss of 1e-20 came out 0, one of 1e-10 1e-6 off).
# - float64 rows (_compensated) sum with TwoSum, their rounding errors aside;
# - float32 rows' float64 sums have digits to spare but where the max's exponential, 1,
#   absorbs the rest: _confident rows are summed again without it (_add_below_one).
CONFIDENT_EXCESS_PER_CLASS = 2.0**-23


@njit(cache=True, inline="always", error_model="numpy")
def _confident(total, classes):
    """Whether a float32 row's plain float64 sum of exponentials ``total`` is too near 1 to
    keep its excess over 1 to float32's digits: below 1 + min(classes * 2**-23, 1 / 2). At
    or above it, what the sum drops (half an ulp of 1, 2**-53, an addition; fewer additions
    than classes, a 64th of them and six more a row at a time) is below 2**-30 of the
    excess, a 64th of a float32 ulp, for rows of up to 2**26 classes. Below it, the row's
    max is its only exponential of 1: a second would bring the sum to 2."""
    return total < 1.0 + min(classes * CONFIDENT_EXCESS_PER_CLASS, 0.5)


@njit(cache=True, inline="always", error_model="numpy")
def _fold_exp_sum(lanes, errors, compensated, z, row_max, exps):
    """The pair (sum, error) of a row ``z``'s exponentials from LANES lanes of their sums,
    added by _fold_sum's tree: compensated, each addition's rounding error (TwoSum) joins
    the lanes' ``errors``; else (sum, 0.0), or for a _confident row the pair of
    _row_exact_sum (its exponentials as stored in ``exps``, or from z)."""
    if not compensated:
        total = _fold_sum(lanes)
        if _confident(total, z.size):
            return _row_exact_sum(z, row_max, exps)
        return total, 0.0
    # Rounds of constant widths, as _fold_sum's (a loop over them would run scalar).
    _fold_round(lanes, errors, LANES // 2)
    _fold_round(lanes, errors, LANES // 4)
    _fold_round(lanes, errors, LANES // 8)
    _fold_round(lanes, errors, LANES // 16)
    _fold_round(lanes, errors, LANES // 32)
    _fold_round(lanes, errors, 1)
    return _two_sum(lanes[0], errors[0])


@njit(cache=True, error_model="numpy")
def _row_exact_sum(z, row_max, exps):
    """The pair (sum, error) of a _confident float32 row's exponentials, as stored in
    ``exps`` (or from z, when None): 1 and the sum of the others (_add_below_one). Whole
    chunks, then the rest masked through a view indexed from 0, as _row_exp_sum's."""
    _wide_vectors()
    rest = _stack_lanes(0.0)
    for lane in range(LANES):
        rest[lane] = 0.0
    classes = z.size
    full = classes - classes % LANES
    if exps is None:
        for start in range(0, full, LANES):
            for lane in range(LANES):
                e = _exp_nonpositive(z[start + lane] - row_max)
                _add_below_one(rest, lane, np.float64(e))
        tail = z[full:]
        for lane in range(LANES):
            e = _exp_nonpositive((tail[lane] if lane < tail.size else row_max) - row_max)
            _add_below_one(rest, lane, np.float64(e) if lane < tail.size else 0.0)
    else:
        for start in range(0, full, LANES):
            for lane in range(LANES):
                _add_below_one(rest, lane, np.float64(exps[start + lane]))
        tail = exps[full:]
        for lane in range(LANES):
            _add_below_one(rest, lane, np.float64(tail[lane]) if lane < tail.size else 0.0)
    return _two_sum(1.0, _fold_sum(rest))


@njit(cache=True, inline="always", error_model="numpy")
def _add_below_one(rest, lane, e):
    """Adds an exponential other than the max's 1 to lane ``lane``: a _confident row's
    excess over 1, with no 1 in the way of its digits."""
    rest[lane] += 0.0 if e == 1.0 else e


@njit(cache=True, inline="always", error_model="numpy")
def _fold_round(lanes, errors, width):
    for lane in range(width):
        lanes[lane], rounding = _two_sum(lanes[lane], lanes[lane + width])
        errors[lane] += errors[lane + width] + rounding


@njit(cache=True, inline="always", error_model="numpy")
def _log_sum(total, error):
    """log(total + error), a row's log-sum-exp less its max, from its pair of sums of
    exponentials (_confident's comment; total >= 1). The first-order term error / total keeps
    the digits that total's rounding drops: near 1, where the log is small, most of them."""
    return _log(total) + error / total


@njit(cache=True, inline="always", error_model="numpy")
def _fold_max(lanes):
    """The max of LANES lanes (none NaN), by the same tree as _fold_sum."""
    for lane in range(LANES // 2):
        other = lanes[lane + LANES // 2]
        lanes[lane] = other if other > lanes[lane] else lanes[lane]
    for lane in range(LANES // 4):
        other = lanes[lane + LANES // 4]
        lanes[lane] = other if other > lanes[lane] else lanes[lane]
    for lane in range(LANES // 8):
        other = lanes[lane + LANES // 8]
        lanes[lane] = other if other > lanes[lane] else lanes[lane]
    for lane in range(LANES // 16):
        other = lanes[lane + LANES // 16]
        lanes[lane] = other if other > lanes[lane] else lanes[lane]
    for lane in range(LANES // 32):
        other = lanes[lane + LANES // 32]
        lanes[lane] = other if other > lanes[lane] else lanes[lane]
    return lanes[1] if lanes[1] > lanes[0] else lanes[0]


@njit(cache=True, inline="always", error_model="numpy")
def _max_chunk(z, start, count, lane_max):
    for lane in range(count):
        value = z[start + lane]
        # NaN is skipped here; it reaches the result through exp(NaN - max).
        lane_max[lane] = value if value > lane_max[lane] else lane_max[lane]


# Inlined, unlike the other row passes (see _label_row): as a call it made the softmax
# entropy 12% slower at k = 200, and it is small.
@njit(cache=True, inline="always", error_model="numpy")
def _row_max(z):
    classes = z.size
    lane_max = _stack_lanes(z)
    for lane in range(LANES):
        lane_max[lane] = -np.inf
    full = classes - classes % LANES
    for start in range(0, full, LANES):
        _max_chunk(z, start, LANES, lane_max)
    # The last, partial chunk stays scalar: a compare costs less than masking
    # (rows of 10 to 40 classes took 5-28% longer through a masked chunk; 129 to 1000,
    # Zen 3, 10-13% longer). From a view indexed from 0: from a runtime start LLVM
    # kept Numba's negative-index wraparound and gathered the elements one by one
    # (0.89-0.98x the time without, k = 129 to 1000).
    _max_chunk(z[full:], 0, classes - full, lane_max)
    return _fold_max(lane_max)


@njit(cache=True, inline="always", error_model="numpy")
def _gap_term(qw, gap):
    """``qw * gap``, a term of the loss's sum of weighted gaps to the row's max: 0 where
    either is 0. 0 * log 0 = 0: a class with no target mass adds nothing, even when its
    logit is -inf (the product would be 0 * inf = NaN); nor does the row's max, even under
    an infinite weight."""
    return qw * gap if qw != 0.0 and gap != 0.0 else 0.0


@njit(cache=True, inline="always", error_model="numpy")
def _gap_chunk(z, row_max, probs, weight, keep, smooth, start, count, lane_weight, lane_gap):
    for lane in range(count):
        c = start + lane
        q = smooth if probs is None else keep * np.float64(probs[c]) + smooth
        qw = q if weight is None else q * weight[c]
        lane_weight[lane] += qw
        lane_gap[lane] += _gap_term(qw, np.float64(row_max) - np.float64(z[c]))


@njit(cache=True, inline="always", error_model="numpy")
def _smooth_gap_chunk(z, row_max, smooth, start, count, lane_gap):
    for lane in range(count):
        lane_gap[lane] += smooth * (np.float64(row_max) - np.float64(z[start + lane]))


@njit(cache=True, error_model="numpy")
def _row_gap(z, row_max, probs, weight, keep, smooth):
    """(sum_c q_c w_c, sum_c q_c w_c (max - z_c)) with q_c = keep * probs_c +
    smooth (q_c = smooth when ``probs`` is None)."""
    _wide_vectors()
    classes = z.size
    if probs is None and weight is None:
        # Label smoothing alone: q_c w_c = smooth, not 0, for every class, so each gap's
        # term is _gap_term's product without its test for zeros, and the weights sum to
        # smooth * classes.
        lane_gap = _stack_lanes(0.0)
        for lane in range(LANES):
            lane_gap[lane] = 0.0
        full = classes - classes % LANES
        for start in range(0, full, LANES):
            _smooth_gap_chunk(z, row_max, smooth, start, LANES, lane_gap)
        _smooth_gap_chunk(z[full:], row_max, smooth, 0, classes - full, lane_gap)
        return smooth * classes, _fold_sum(lane_gap)
    lane_weight = _stack_lanes(0.0)
    lane_gap = _stack_lanes(0.0)
    for lane in range(LANES):
        lane_weight[lane] = 0.0
        lane_gap[lane] = 0.0
    full = classes - classes % LANES
    for start in range(0, full, LANES):
        _gap_chunk(z, row_max, probs, weight, keep, smooth, start, LANES, lane_weight, lane_gap)
    _gap_chunk(z, row_max, probs, weight, keep, smooth, full, classes - full, lane_weight, lane_gap)
    return _fold_sum(lane_weight), _fold_sum(lane_gap)


@njit(cache=True, inline="always", error_model="numpy")
def _exp_chunk(z, row_max, grad_row, start, count, exps, lane_sum, lane_error, compensated):
    # Every logit of the chunk is read before its exponential is stored, so
    # grad_row may be the same memory as z. Chunks loop over all LANES lanes,
    # those past ``count`` (in a row's last, partial chunk) masked: the loop then
    # vectorises at full width with masked loads and stores, where a loop of
    # ``count`` runs scalar, an exponential at a time (a tail of 63 classes cost
    # as much as 64 more classes, k = 255). Adding 0.0 leaves a lane's sum, which
    # is never -0.0, as it is.
    for lane in range(LANES):
        exps[lane] = _exp_nonpositive((z[start + lane] if lane < count else row_max) - row_max)
    if grad_row is None:
        for lane in range(LANES):
            _lane_add(lane_sum, lane_error, lane, np.float64(exps[lane]) if lane < count else 0.0,
                     compensated)
    else:
        for lane in range(LANES):
            if lane < count:
                grad_row[start + lane] = exps[lane]


@njit(cache=True, inline="always", error_model="numpy")
def _prefetch_chunk(next_z, next_grad, start):
    # The exponentials are compute-bound; fetching the next row meanwhile
    # lets its max pass run from cache instead of waiting on memory, and
    # fetching its gradient row for writing takes the read-for-ownership of
    # the scratch stores off that row's critical path.
    step = _line_items(next_z)
    stop = min(start + LANES, next_z.size)
    for index in range(start, stop, step):
        _prefetch_read(next_z, index)
        if next_grad is not None:
            _prefetch_write(next_grad, index)


@njit(cache=True, error_model="numpy")
def _row_exp_sum(z, row_max, grad_row, next_z, next_grad):
    """sum_c exp(z_c - max) as a float64 pair (sum, error) (_confident's comment), from
    the exponentials as stored into ``grad_row`` (when given) in z's precision; ``next_z``
    and ``next_grad`` are the rows processed next."""
    _wide_vectors()
    classes = z.size
    exps = _stack_lanes(z)
    compensated = _compensated(z)
    lane_sum, lane_error = _stack_lanes(0.0), _stack_lanes(0.0)
    for lane in range(LANES):
        lane_sum[lane] = 0.0
        lane_error[lane] = 0.0
    full = classes - classes % LANES
    for start in range(0, full, LANES):
        _exp_chunk(z, row_max, grad_row, start, LANES, exps, lane_sum, lane_error, compensated)
        _prefetch_chunk(next_z, next_grad, start)
    # The last, partial chunk from a view of its own, indexed from 0: LLVM then
    # knows its indices are not negative and loads and stores them contiguously,
    # not by gathers and scatters.
    if grad_row is None:
        if full < classes:
            _exp_chunk(z[full:], row_max, None, 0, classes - full, exps, lane_sum, lane_error,
                       compensated)
    elif full < classes:
        _exp_chunk(z[full:], row_max, grad_row[full:], 0, classes - full, exps, lane_sum,
                   lane_error, compensated)
    if grad_row is not None:
        # Summed from the stored row (in cache) in a pass of its own: fused
        # with the exponentials, the float64 conversions vectorise poorly.
        for start in range(0, full, LANES):
            for lane in range(LANES):
                _lane_add(lane_sum, lane_error, lane, np.float64(grad_row[start + lane]),
                         compensated)
        if full < classes:
            tail = grad_row[full:]
            for lane in range(LANES):
                _lane_add(lane_sum, lane_error, lane,
                         np.float64(tail[lane]) if lane < tail.size else 0.0, compensated)
    return _fold_exp_sum(lane_sum, lane_error, compensated, z, row_max, grad_row)


@njit(cache=True, inline="always", error_model="numpy")
def _row_exps(z, row_max, grad_out, row, logits, following):
    """_row_exp_sum of row ``row``, written into ``grad_out[row]`` when given;
    the row after it is ``following``. (Row views of a None grad_out would be
    optional types; each branch here is settled while compiling.)"""
    if grad_out is None:
        return _row_exp_sum(z, row_max, None, logits[following], None)
    return _row_exp_sum(z, row_max, grad_out[row], logits[following], grad_out[following])


@njit(cache=True, inline="always", error_model="numpy")
def _row_grad(grad_row, exp_scale, probs, weight, keep_scaled, smooth_scaled):
    """grad_c = exp_c * exp_scale - (keep_scaled * probs_c + smooth_scaled) * w_c,
    with grad_row holding exp_c on entry; one rounding to the row's dtype."""
    for c in range(grad_row.size):
        q = smooth_scaled if probs is None else keep_scaled * np.float64(probs[c]) + smooth_scaled
        qw = q if weight is None else q * weight[c]
        grad_row[c] = np.float64(grad_row[c]) * exp_scale - qw


@njit(cache=True, inline="always", error_model="numpy")
def _row_scale(grad_row, exp_scale):
    """grad_c = exp_c * exp_scale in the row's precision: the common case (no
    smoothing, labels) then costs one multiply per class, at most one ulp
    more error than the float64 path of _row_grad."""
    scale = grad_row.dtype.type(exp_scale)
    classes = grad_row.size
    full = classes - classes % LANES
    for start in range(0, full, LANES):
        for lane in range(LANES):
            grad_row[start + lane] = grad_row[start + lane] * scale
    if full < classes:
        tail = grad_row[full:]
        for lane in range(LANES):
            if lane < tail.size:
                tail[lane] = tail[lane] * scale


def _row_difference(grad_row, scale, probs, target):
    """grad_c = exp_c * scale - p_c * target, with grad_row holding exp_c on entry, float64
    ``scale`` and ``target``, and p_c = probs[c] (probability targets), or 1 without probs
    (``target`` then label smoothing's share): the gradient of either without class
    weights. A float64 row takes _row_grad's arithmetic (:func:`_float64_difference`). A
    float32 row is computed in float32 with ``scale`` and ``target`` each split into two
    float32 parts (:func:`_split_difference`), at about half that arithmetic: within a few
    ulp and 2**-45 of the terms' size of the float64 result (measured: 1.6 ulp where the
    terms cancel to no less than 2**-20 of their size, 3.2 ulp to 2**-24); where they
    cancel further, the exponential's rounding to float32, up to 2**-24 of their size,
    dominates both. A row whose scale, or a call whose target, is too large or small to
    split takes the float64 arithmetic. Jitted code only."""
    raise TypeError("runs in jitted code only")


@overload(_row_difference, inline="always")
def _row_difference_overload(grad_row, scale, probs, target):
    if grad_row.dtype == types.float32:
        return lambda grad_row, scale, probs, target: _row_difference_float32(
            grad_row, scale, probs, target)
    return lambda grad_row, scale, probs, target: _row_difference_float64(
        grad_row, scale, probs, target)


def _item(probs, index):
    """probs[index], or None without probs; jitted code only."""


@overload(_item, inline="always")
def _item_overload(probs, index):
    if isinstance(probs, types.NoneType):
        return lambda probs, index: None
    return lambda probs, index: probs[index]


def _one_or(probs, index):
    """probs[index], or 1 in float32 without probs; jitted code only."""


@overload(_one_or, inline="always")
def _one_or_overload(probs, index):
    if isinstance(probs, types.NoneType):
        return lambda probs, index: np.float32(1.0)
    return lambda probs, index: probs[index]


def _float64_difference(e, p, scale, target):
    """float64(e) * scale - q with q = target, or target * float64(p) + 0.0 for a
    probability p: the bits of _row_grad and _lanes_grad without class weights (their q
    with keep_scaled or smooth_scaled 0); jitted code only."""


@overload(_float64_difference, inline="always")
def _float64_difference_overload(e, p, scale, target):
    if isinstance(p, types.NoneType):
        return lambda e, p, scale, target: np.float64(e) * scale - target
    return lambda e, p, scale, target: np.float64(e) * scale - (target * np.float64(p) + 0.0)


@njit(cache=True, error_model="numpy")
def _row_difference_float64(grad_row, scale, probs, target):
    for c in range(grad_row.size):
        grad_row[c] = _float64_difference(grad_row[c], _item(probs, c), scale, target)


@njit(cache=True, inline="always", error_model="numpy")
def _split(value):
    """A float64 ``value`` as float32 (hi, lo) with hi + lo = value within 2**-48 of it."""
    hi = np.float32(value)
    return hi, np.float32(value - np.float64(hi))


@njit(cache=True, inline="always", error_model="numpy")
def _splittable(value):
    """Whether a float64 ``value`` splits (:func:`_split`) into parts normal or 0."""
    return value == 0.0 or 2.0**-60 < abs(value) < 2.0**60


@njit(cache=True, inline="always", error_model="numpy")
def _split_difference(e, p, scale_hi, scale_lo, target_hi, target_lo):
    """e * scale - p * target in float32 from the float32 parts of scale and target. The
    product p * target_hi is exact as its rounding plus its error (a fused multiply-add),
    e * scale_hi minus that rounding is one rounding of an exact fused multiply-add, and
    what the lo parts and that error add comes after: three float32 roundings, of sizes
    near the result's, where float32 parts of one piece would lose 2**-24 of the terms'
    size. p = 1 gives e * scale - target."""
    product = p * target_hi
    error = _fma(p, target_hi, -product)
    return _fma(e, scale_hi, -product) + _fma(e, scale_lo, -_fma(p, target_lo, error))


@njit(cache=True, error_model="numpy")
def _row_difference_float32(grad_row, scale, probs, target):
    if not (_splittable(scale) and _splittable(target)):
        _row_difference_float64(grad_row, scale, probs, target)
        return
    scale_hi, scale_lo = _split(scale)
    target_hi, target_lo = _split(target)
    classes = grad_row.size
    full = classes - classes % LANES
    for start in range(0, full, LANES):
        for lane in range(LANES):
            c = start + lane
            grad_row[c] = _split_difference(grad_row[c], _one_or(probs, c), scale_hi, scale_lo,
                                            target_hi, target_lo)
    if full < classes:
        # Masked to a whole chunk, from views indexed from 0, as _row_scale's.
        tail, tail_probs = grad_row[full:], _from(probs, full)
        for lane in range(LANES):
            if lane < tail.size:
                tail[lane] = _split_difference(tail[lane], _one_or(tail_probs, lane), scale_hi,
                                               scale_lo, target_hi, target_lo)


@njit(cache=True, inline="always", error_model="numpy")
def _label_gradient(label_exp, exp_sum, exp_error, exp_scale, weight_sum, label_target,
                    grad_scale):
    """The label's gradient entry, grad_scale (weight_sum p_y - label_target) with
    p_y = label_exp / s, s = exp_sum + exp_error (_confident's comment), exp_scale =
    grad_scale weight_sum / s, written as exp_scale ((e_y - exp_sum) - exp_error) +
    grad_scale (weight_sum - label_target). In a confident row without smoothing, p_y
    near 1, the first difference is exact and the second 0, so the entry keeps the digits
    that e_y exp_scale - grad_scale label_target cancels away. Also the entry of a
    probability row's max class (_top_class), label_target its q_c w_c."""
    return (exp_scale * ((np.float64(label_exp) - exp_sum) - exp_error)
            + grad_scale * (weight_sum - label_target))


# A probability row whose sum of exponentials is below 2 has one max, whose gradient
# entry p_c S - q_c w_c cancels to below an ulp of 1 where q_c is near 1 too (a one-hot
# or confident target): that entry is rewritten in _label_gradient's form, where the
# row's target mass S is finite (an infinite one makes the entry inf or NaN either way,
# and that form's inf - inf NaN where the direct one is inf).
UNIQUE_MAX_SUM = 2.0


@njit(cache=True, inline="always", error_model="numpy")
def _unique_max(exp_sum, weight_sum):
    """Whether a probability row's max class entry is rewritten (the comment above)."""
    return exp_sum < UNIQUE_MAX_SUM and np.isfinite(weight_sum)


@njit(cache=True, error_model="numpy")
def _top_class(exps, exp_sum, weight_sum):
    """The last class whose exponential in ``exps`` is 1 (the row's max; another only where
    rounding makes it 1) where _unique_max; else -1. A max over the row, so that it
    vectorises (a search that stops at the first ran scalar: 1.3x the time of a confident
    row at k = 1000)."""
    top = -1
    if _unique_max(exp_sum, weight_sum):
        for c in range(exps.size):
            top = max(top, c if exps[c] == 1.0 else -1)
    return top


@njit(cache=True, inline="always", error_model="numpy")
def _target_weight(p, weight, c, keep, smooth):
    """q_c w_c of class c with probability p: (keep p + smooth) w_c."""
    q = keep * np.float64(p) + smooth
    return q if weight is None else q * weight[c]


# A row's function is a call, not inline="always": Numba's inliner copies the callee's IR
# at each call site, a third of this kernel's compile time. As a call it runs as fast.
@njit(cache=True, error_model="numpy")
def _label_row(
    z, label, weight, grad_out, row, logits, following, ignore_index, keep, smooth, grad_scale
):
    _wide_vectors()
    if label == ignore_index:
        if grad_out is not None:
            grad_out[row, :] = 0
        return 0.0
    label_weight = 1.0 if weight is None else weight[label]
    row_max = _row_max(z)
    # Read before the exponentials may overwrite z (in-place gradient).
    label_gap = np.float64(row_max) - np.float64(z[label])
    weight_sum = keep * label_weight
    gap_sum = _gap_term(weight_sum, label_gap)
    if smooth != 0.0:
        smooth_weight, smooth_gap = _row_gap(z, row_max, None, weight, 0.0, smooth)
        weight_sum += smooth_weight
        gap_sum += smooth_gap
    exp_sum, exp_error = _row_exps(z, row_max, grad_out, row, logits, following)
    if grad_out is not None:
        grad_row = grad_out[row]
        exp_scale = grad_scale * weight_sum / exp_sum
        label_exp = np.float64(grad_row[label])
        if smooth == 0.0:
            _row_scale(grad_row, exp_scale)
        elif weight is None:
            _row_difference(grad_row, exp_scale, None, grad_scale * smooth)
        else:
            _row_grad(grad_row, exp_scale, None, weight, 0.0, grad_scale * smooth)
        grad_row[label] = _label_gradient(label_exp, exp_sum, exp_error, exp_scale, weight_sum,
                                          (keep + smooth) * label_weight, grad_scale)
    # L = -sum_c q_c w_c ((z_c - max) - log(sum)), split so that no -inf
    # log-probability is ever multiplied by a zero weight.
    return weight_sum * _log_sum(exp_sum, exp_error) + gap_sum


@njit(cache=True, error_model="numpy")
def _probs_row(z, probs, weight, grad_out, row, logits, following, keep, smooth, grad_scale):
    _wide_vectors()
    row_max = _row_max(z)
    weight_sum, gap_sum = _row_gap(z, row_max, probs, weight, keep, smooth)
    exp_sum, exp_error = _row_exps(z, row_max, grad_out, row, logits, following)
    if grad_out is not None:
        grad_row = grad_out[row]
        top = _top_class(grad_row, exp_sum, weight_sum)
        exp_scale = grad_scale * weight_sum / exp_sum
        if weight is None and smooth == 0.0:
            _row_difference(grad_row, exp_scale, probs, grad_scale * keep)
        else:
            _row_grad(grad_row, exp_scale, probs, weight, grad_scale * keep, grad_scale * smooth)
        if top >= 0:
            grad_row[top] = _label_gradient(
                1.0, exp_sum, exp_error, exp_scale, weight_sum,
                _target_weight(probs[top], weight, top, keep, smooth), grad_scale,
            )
    return weight_sum * _log_sum(exp_sum, exp_error) + gap_sum


# ------------------------------------------------------ rows in lanes (k <= lane_classes)
#
# A tile holds the LANES rows of a pass transposed: tile[c * LANES + r] is
# class c of row r. Every pass loops over classes outside and lanes inside,
# so each statement works on LANES rows at once; per-row values live in
# lane arrays. A row's arithmetic is that of the row-at-a-time path. Passes
# over the tile touch only the tile's dtype (and int32 labels), so that they
# vectorise at the full width of that dtype.


def _block_width(array, vector_bytes):
    """W, the side of a transposed block of ``array``'s dtype; a constant in
    compiled code, so that masks covering a whole row fold away."""
    return vector_bytes // array.itemsize


def _width_overload(vector_bytes):
    def width_overload(array):
        width = vector_bytes // (array.dtype.bitwidth // 8)
        return lambda array: width

    return width_overload


def _narrow_width(array):
    return _block_width(array, NARROW_BYTES)


def _wide_width(array):
    return _block_width(array, WIDE_BYTES)


def _line_items(array):
    """Items of ``array`` in a 64-byte cache line; a constant in compiled code."""
    return _block_width(array, 64)


def _ce_lane_classes(array):
    """Items of ``array`` in CE_LANE_BYTES; a constant in compiled code."""
    return _block_width(array, CE_LANE_BYTES)


overload(_narrow_width)(_width_overload(NARROW_BYTES))
overload(_wide_width)(_width_overload(WIDE_BYTES))
overload(_line_items)(_width_overload(64))
overload(_ce_lane_classes)(_width_overload(CE_LANE_BYTES))


@njit(cache=True, inline="always", error_model="numpy")
def lane_classes(logits, target):
    """The most classes a row of ``logits`` may have for cross-entropy against ``target``
    (class labels, 1-D, or probabilities) to run rows in lanes (see CE_LANE_BYTES)."""
    classes = _ce_lane_classes(logits)
    return classes if target.ndim == 1 else classes - 1


def _from(array, start):
    """``array[start:]``, or None for a None array; resolved while typing."""
    return None if array is None else array[start:]


@overload(_from)
def _from_overload(array, start):
    if isinstance(array, types.NoneType):
        return lambda array, start: None
    return lambda array, start: array[start:]


@njit(cache=True, inline="always", error_model="numpy")
def _wide_classes(classes, wide, narrow):
    """The first classes of a row, which go through in wide blocks; the rest, if at
    most a narrow block's, go through in narrow blocks, which pad it less."""
    rest = classes % wide
    return classes - rest if rest <= narrow else classes


@njit(cache=True, error_model="numpy")
def _load_tile(flat, start, count, classes, tile):
    """tile[c * LANES + r] = flat[start + r * classes + c] for the ``count``
    rows of a pass; the lanes of absent rows (count < LANES, the last pass of
    an array) hold 0."""
    _wide_vectors()
    if count == LANES and classes <= _narrow_width(flat):
        width = _narrow_width(flat)
        for row in range(0, LANES, width):
            _transpose_narrow(
                flat, start + row * classes, classes, tile, row, LANES, classes, width, None, None
            )
        return
    if count == LANES and classes <= _wide_width(flat):
        width = _wide_width(flat)
        for row in range(0, LANES, width):
            _transpose_wide(
                flat, start + row * classes, classes, tile, row, LANES, classes, width, None, None
            )
        return
    if count == LANES:
        wide, narrow = _wide_width(flat), _narrow_width(flat)
        split = _wide_classes(classes, wide, narrow)
        for row in range(0, LANES, wide):
            for first in range(0, split, wide):
                _transpose_wide(
                    flat, start + row * classes + first, classes, tile, first * LANES + row,
                    LANES, min(wide, classes - first), wide, None, None,
                )
        for row in range(0, LANES, narrow):
            for first in range(split, classes, narrow):
                _transpose_narrow(
                    flat, start + row * classes + first, classes, tile, first * LANES + row,
                    LANES, min(narrow, classes - first), narrow, None, None,
                )
        return
    tile[: classes * LANES] = 0
    for row in range(count):
        for c in range(classes):
            tile[c * LANES + row] = flat[start + row * classes + c]


@njit(cache=True, error_model="numpy")
def _store_tile(tile, flat, start, count, classes, scale):
    """The inverse of _load_tile for the ``count`` rows of a pass; unless
    ``scale`` is None, row r is multiplied by scale[r] on its way out.

    A full pass writes each row's last block whole (the transposer's
    ``store_end``), spilling into the rows after it, which are written later:
    blocks go in rising rows, and a row's blocks from its last to its first.
    Nothing is written past the pass's rows, which it has read already (an
    in-place gradient) and which another thread may be writing."""
    _wide_vectors()
    end = start + count * classes
    if count == LANES and classes <= _narrow_width(flat):
        width = _narrow_width(flat)
        for row in range(0, LANES, width):
            _transpose_narrow(
                tile, row, LANES, flat, start + row * classes, classes, width, classes,
                _from(scale, row), end,
            )
        return
    if count == LANES and classes <= _wide_width(flat):
        width = _wide_width(flat)
        for row in range(0, LANES, width):
            _transpose_wide(
                tile, row, LANES, flat, start + row * classes, classes, width, classes,
                _from(scale, row), end,
            )
        return
    if count == LANES:
        # A row's narrow tail, then its wide blocks from the last: each spills into
        # the next row's first wide block at most, written after it.
        wide, narrow = _wide_width(flat), _narrow_width(flat)
        split = _wide_classes(classes, wide, narrow)
        for row in range(0, LANES, narrow):
            for first in range(split, classes, narrow):
                _transpose_narrow(
                    tile, first * LANES + row, LANES, flat, start + row * classes + first,
                    classes, narrow, min(narrow, classes - first), _from(scale, row), end,
                )
        last = (split - 1) // wide * wide
        for row in range(0, LANES, wide):
            for first in range(last, -1, -wide):
                _transpose_wide(
                    tile, first * LANES + row, LANES, flat, start + row * classes + first,
                    classes, wide, min(wide, classes - first), _from(scale, row), end,
                )
        return
    for row in range(count):
        for c in range(classes):
            value = tile[c * LANES + row]
            if scale is not None:
                value *= scale[row]
            flat[start + row * classes + c] = value


@njit(cache=True, error_model="numpy")
def _lanes_labels(target, row, count, ignore_index, labels):
    """labels[r] = the class of row ``row + r``, or -1 for an ignored row and
    for an absent one (r >= count)."""
    for r in range(count):
        # Unsigned: no negative-index wraparound, so the loads stay contiguous.
        label = target[np.uint64(row + r)]
        labels[r] = -1 if label == ignore_index else np.int32(label)
    for r in range(count, LANES):
        labels[r] = -1


@njit(cache=True, error_model="numpy")
def _lanes_max(tile, classes, row_max):
    _wide_vectors()
    # Running maxima in a local array: LLVM keeps it in registers, which an
    # argument, possibly aliasing the tile, would not be.
    lane_max = _stack_lanes(tile)
    for r in range(LANES):
        lane_max[r] = -np.inf
    for c in range(classes):
        for r in range(LANES):
            value = tile[c * LANES + r]
            # NaN is skipped here; it reaches the result through exp(NaN - max).
            lane_max[r] = value if value > lane_max[r] else lane_max[r]
    for r in range(LANES):
        row_max[r] = lane_max[r]


@njit(cache=True, error_model="numpy")
def _lanes_pick(tile, labels, picked):
    """picked[r] = the label's logit (class 0's for ignored and absent rows)."""
    _wide_vectors()
    for r in range(LANES):
        picked[r] = tile[max(labels[r], 0) * LANES + r]


def _compensated(tile):
    """Whether the lanes' sums over a row's classes keep their rounding errors (TwoSum) and
    add them back at the end: for float64 rows, whose lanes add their classes one after
    another (float32 rows' float64 sums have digits to spare but near 1: _confident). A
    constant in compiled code."""
    raise TypeError("runs in jitted code only")


@overload(_compensated, inline="always")
def _compensated_overload(tile):
    exact = tile.dtype == types.float64
    return lambda tile: exact


@njit(cache=True, inline="always", error_model="numpy")
def _lane_add(sums, errors, r, value, compensated):
    """sums[r] += value, its rounding error added to errors[r] when ``compensated``."""
    if compensated:
        sums[r], error = _two_sum(sums[r], value)
        errors[r] += error
    else:
        sums[r] += value


@njit(cache=True, error_model="numpy")
def _lanes_target_terms(tile, classes, probs, weight, keep, smooth, row_max, weight_sum, gap_sum):
    """weight_sum = sum_c q_c w_c and gap_sum = sum_c q_c w_c (max - z_c), with
    q_c = keep * probs_c + smooth (q_c = smooth when ``probs`` is None); compensated
    for float64 rows (_compensated)."""
    _wide_vectors()
    compensated = _compensated(tile)
    weight_error, gap_error = _stack_lanes(0.0), _stack_lanes(0.0)
    for r in range(LANES):
        weight_sum[r] = 0.0
        gap_sum[r] = 0.0
        weight_error[r] = 0.0
        gap_error[r] = 0.0
    if probs is None and smooth == 0.0:
        return
    if probs is None and weight is None:
        # Label smoothing alone, as in _row_gap.
        for c in range(classes):
            for r in range(LANES):
                gap = np.float64(row_max[r]) - np.float64(tile[c * LANES + r])
                _lane_add(gap_sum, gap_error, r, smooth * gap, compensated)
        for r in range(LANES):
            weight_sum[r] = smooth * classes
            gap_sum[r] += gap_error[r]
        return
    for c in range(classes):
        class_weight = 1.0 if weight is None else weight[c]
        for r in range(LANES):
            q = smooth if probs is None else keep * np.float64(probs[c * LANES + r]) + smooth
            qw = q * class_weight
            _lane_add(weight_sum, weight_error, r, qw, compensated)
            gap = np.float64(row_max[r]) - np.float64(tile[c * LANES + r])
            _lane_add(gap_sum, gap_error, r, _gap_term(qw, gap), compensated)
    for r in range(LANES):
        weight_sum[r] += weight_error[r]
        gap_sum[r] += gap_error[r]


@njit(cache=True, error_model="numpy")
def _lanes_exp_sum(
    tile, classes, row_max, exp_sum, exp_error, flat, next_start, grad_flat, grad_start,
    probs_flat=None,
):
    """Replaces the tile by exp(z - max) in z's precision; (exp_sum, exp_error) = their sums,
    in class order, as pairs (_confident's comment); returns whether any exp_error may be
    other than 0 (float64, or a _confident float32 row). Meanwhile the LANES rows of
    ``flat`` and of ``probs_flat`` (probability targets of flat's shape, when given) from
    ``next_start`` are fetched into cache for reading, and those of ``grad_flat`` from
    ``grad_start`` for writing: the exponentials are compute-bound, and the tile's
    transpositions then find their rows in cache."""
    _wide_vectors()
    step = _line_items(flat)
    for c in range(classes):
        # Each class's share: LANES items of each array, one line per step.
        for line in range(c * LANES, (c + 1) * LANES, step):
            if next_start + line < flat.size:
                _prefetch_read(flat, next_start + line)
                if probs_flat is not None:  # else their transposition waits on memory
                    _prefetch_read(probs_flat, next_start + line)
            if grad_flat is not None and grad_start + line < grad_flat.size:
                _prefetch_write(grad_flat, grad_start + line)
        for r in range(LANES):
            tile[c * LANES + r] = _exp_nonpositive(tile[c * LANES + r] - row_max[r])
    # A loop of its own: mixed with float64 sums, the exponentials would be
    # vectorised at float64's narrower width.
    compensated = _compensated(tile)
    lane_sum, lane_error = _stack_lanes(0.0), _stack_lanes(0.0)
    for r in range(LANES):
        lane_sum[r] = 0.0
        lane_error[r] = 0.0
    for c in range(classes):
        for r in range(LANES):
            _lane_add(lane_sum, lane_error, r, np.float64(tile[c * LANES + r]), compensated)
    if compensated:
        for r in range(LANES):
            exp_sum[r], exp_error[r] = _two_sum(lane_sum[r], lane_error[r])
        return True
    confident = 0  # a count: an "or" over the lanes measured slower (k = 10)
    for r in range(LANES):
        exp_sum[r] = lane_sum[r]
        exp_error[r] = 0.0
        confident += _confident(lane_sum[r], classes)
    if confident:
        _lanes_exact_sums(tile, classes, exp_sum, exp_error)
    return confident > 0


@njit(cache=True, error_model="numpy")
def _lanes_exact_sums(tile, classes, lane_sum, lane_error):
    """The pairs of the _confident lanes of a float32 pass, summed again from its tile: 1
    and the sum of the other exponentials (_add_below_one)."""
    _wide_vectors()
    rest = _stack_lanes(0.0)
    for r in range(LANES):
        rest[r] = 0.0
    for c in range(classes):
        for r in range(LANES):
            _add_below_one(rest, r, np.float64(tile[c * LANES + r]))
    for r in range(LANES):
        if _confident(lane_sum[r], classes):
            lane_sum[r], lane_error[r] = _two_sum(1.0, rest[r])


@njit(cache=True, error_model="numpy")
def _lanes_log(exp_sum, exp_error, paired, logs):
    """logs = _log_sum(exp_sum, exp_error), or log(exp_sum) where not ``paired`` (all errors
    0: the divisions cost 6% of a float32 pass at k = 10), in a loop of its own, which
    vectorises."""
    _wide_vectors()
    if paired:
        for r in range(LANES):
            logs[r] = _log_sum(exp_sum[r], exp_error[r])
    else:
        for r in range(LANES):
            logs[r] = _log(exp_sum[r])


@njit(cache=True, error_model="numpy")
def _store_labels(grad_flat, start, count, classes, labels, label_grad):
    """Row r of the ``count`` gradient rows from ``start``: its label's entry
    set to label_grad[r], or, ignored, all of it 0."""
    for r in range(count):
        row_start = start + r * classes
        if labels[r] >= 0:
            grad_flat[row_start + labels[r]] = label_grad[r]
        else:
            grad_flat[row_start : row_start + classes] = 0


@njit(cache=True, error_model="numpy")
def _lanes_grad(tile, classes, scale, probs, weight, keep_scaled, smooth_scaled):
    """grad_c = exp_c * scale - (keep_scaled * probs_c + smooth_scaled) * w_c in
    float64, one rounding to the tile's dtype (as _row_grad). With labels (probs
    None), their entries and ignored rows are written after (_store_labels)."""
    _wide_vectors()
    for c in range(classes):
        class_weight = 1.0 if weight is None else weight[c]
        for r in range(LANES):
            q = smooth_scaled
            if probs is not None:
                q = keep_scaled * np.float64(probs[c * LANES + r]) + smooth_scaled
            tile[c * LANES + r] = np.float64(tile[c * LANES + r]) * scale[r] - q * class_weight


def _lanes_difference(tile, classes, scale, probs, target):
    """grad_c = exp_c * scale[r] - p_c * target for rows in lanes (``probs``: the
    probabilities' tile, or None), as _row_difference for a row: a float64 tile in float64,
    a float32 one with split parts but in the lanes (rows) whose scale is too large or
    small to split, or all of them where the target is. Jitted code only."""
    raise TypeError("runs in jitted code only")


@overload(_lanes_difference, inline="always")
def _lanes_difference_overload(tile, classes, scale, probs, target):
    if tile.dtype == types.float32:
        return lambda tile, classes, scale, probs, target: _lanes_difference_float32(
            tile, classes, scale, probs, target)
    return lambda tile, classes, scale, probs, target: _lanes_difference_float64(
        tile, classes, scale, probs, target)


@njit(cache=True, error_model="numpy")
def _lanes_difference_float64(tile, classes, scale, probs, target):
    _wide_vectors()
    for c in range(classes):
        for r in range(LANES):
            i = c * LANES + r
            tile[i] = _float64_difference(tile[i], _item(probs, i), scale[r], target)


@njit(cache=True, error_model="numpy")
def _lanes_difference_float32(tile, classes, scale, probs, target):
    _wide_vectors()
    if not _splittable(target):
        _lanes_difference_float64(tile, classes, scale, probs, target)
        return
    target_hi, target_lo = _split(target)
    scale_hi, scale_lo = _stack_lanes(tile), _stack_lanes(tile)
    every_lane = True
    for r in range(LANES):
        scale_hi[r], scale_lo[r] = _split(scale[r])
        every_lane &= _splittable(scale[r])
    if every_lane:
        for c in range(classes):
            for r in range(LANES):
                i = c * LANES + r
                tile[i] = _split_difference(tile[i], _one_or(probs, i), scale_hi[r],
                                            scale_lo[r], target_hi, target_lo)
        return
    # A lane apart (a NaN row, or a scale past the split's range) takes float64 alone, so
    # that no row's bits depend on the others in its tile.
    for c in range(classes):
        for r in range(LANES):
            i = c * LANES + r
            if _splittable(scale[r]):
                tile[i] = _split_difference(tile[i], _one_or(probs, i), scale_hi[r],
                                            scale_lo[r], target_hi, target_lo)
            else:
                tile[i] = _float64_difference(tile[i], _item(probs, i), scale[r], target)


def _flat(array):
    """``array`` (C-contiguous) as a 1-D view, or None for a None array;
    resolved while typing, so that the view is a plain array type, never an
    optional one."""
    return None if array is None else array.reshape(array.size)


@overload(_flat)
def _flat_overload(array):
    if isinstance(array, types.NoneType):
        return lambda array: None
    return lambda array: array.reshape(array.size)


@njit(cache=True, error_model="numpy")
def _lanes_top_classes(tile, classes, exp_sum, weight_sum, top):
    """top[r] = _top_class of row r of a tile of exponentials (the last class of an
    exponential of 1, where rounding gives another than the max's), by a select per class
    and row, so that it vectorises."""
    _wide_vectors()
    for r in range(LANES):
        top[r] = -1
    for c in range(classes):
        for r in range(LANES):
            top[r] = np.int32(c) if tile[c * LANES + r] == 1.0 else top[r]
    for r in range(LANES):
        top[r] = top[r] if _unique_max(exp_sum[r], weight_sum[r]) else -1


@njit(cache=True, error_model="numpy")
def _lanes_top_gradients(tile, probs, weight, keep, smooth, grad_scale, exp_sum, exp_error,
                         exp_scale, weight_sum, top, top_grad):
    """Each row's max class entry (top[r], _lanes_top_classes) of a gradient tile rewritten
    in _label_gradient's form; rows of top -1 keep theirs. Computed for every lane first,
    so that it vectorises (in the loop of the stores it ran scalar: twice the time of a
    tile at k = 10); a select per class and row instead of the stores took 1.5x."""
    _wide_vectors()
    for r in range(LANES):
        c = max(top[r], 0)
        top_grad[r] = _label_gradient(
            1.0, exp_sum[r], exp_error[r], exp_scale[r], weight_sum[r],
            _target_weight(probs[c * LANES + r], weight, c, keep, smooth), grad_scale,
        )
    for r in range(LANES):
        if top[r] >= 0:
            tile[top[r] * LANES + r] = top_grad[r]


@njit(cache=True, inline="always", error_model="numpy")
def _lanes_total(lane_totals):
    """The sum of LANES float64 lanes (a block's row losses, lane r holding rows r, r +
    LANES, ...), added in lane order."""
    total = 0.0
    for r in range(LANES):
        total += lane_totals[r]
    return total


@njit(cache=True, inline="always", error_model="numpy")
def _lanes_label_weights(weight, labels, label_weights):
    """label_weights[r] = the weight of row r's label (an ignored row's: class 0's). A loop
    of its own: its loads from the weights, by label, kept the loop of the rows' losses,
    exponential included, from vectorising (k = 10: a third more time with weights)."""
    for r in range(LANES):
        label_weights[r] = weight[labels[r] if labels[r] >= 0 else 0]


@njit(cache=True, error_model="numpy")
def _lanes_block(
    logits, target, weight, grad_out, loss_out, ignore_index, keep, smooth, grad_scale, start,
    stop,
):
    """Sum of the losses of rows [start, stop), LANES rows at a time (start is a
    multiple of LANES); writes their gradient rows and losses when asked.
    Each lane sums its rows' losses, and the lanes are added in order."""
    _wide_vectors()
    classes = logits.shape[1]
    labelled = target.ndim == 1
    flat, grad_flat = logits.reshape(logits.size), _flat(grad_out)
    target_flat = target.reshape(target.size)
    item = flat.dtype.type
    tile, probs = _stack_ce_tile(flat), _stack_ce_tile(flat)
    row_max, picked = _stack_lanes(flat), _stack_lanes(flat)
    scale, label_grad = _stack_lanes(flat), _stack_lanes(flat)
    weight_sum, gap_sum, exp_sum = _stack_lanes(0.0), _stack_lanes(0.0), _stack_lanes(0.0)
    exp_error = _stack_lanes(0.0)
    exp_scale, losses, lane_totals = _stack_lanes(0.0), _stack_lanes(0.0), _stack_lanes(0.0)
    labels, top, top_grad = _stack_lanes(np.int32(0)), _stack_lanes(np.int32(0)), _stack_lanes(flat)
    log_sum, label_weights = _stack_lanes(0.0), _stack_lanes(0.0)
    for r in range(LANES):
        lane_totals[r] = 0.0
    for row in range(start, stop, LANES):
        count = min(LANES, stop - row)
        _load_tile(flat, row * classes, count, classes, tile)
        _lanes_max(tile, classes, row_max)
        # Settled while compiling: target is either labels or probabilities.
        if labelled:
            _lanes_labels(target, row, count, ignore_index, labels)
            _lanes_pick(tile, labels, picked)
            _lanes_target_terms(
                tile, classes, None, weight, keep, smooth, row_max, weight_sum, gap_sum
            )
        else:
            _load_tile(target_flat, row * classes, count, classes, probs)
            _lanes_target_terms(
                tile, classes, probs, weight, keep, smooth, row_max, weight_sum, gap_sum
            )
        paired = _lanes_exp_sum(
            tile, classes, row_max, exp_sum, exp_error, flat, (row + LANES) * classes,
            grad_flat, row * classes, None if labelled else target_flat,
        )
        _lanes_log(exp_sum, exp_error, paired, log_sum)
        if labelled and weight is not None:
            _lanes_label_weights(weight, labels, label_weights)
        for r in range(LANES):
            label_weight = 0.0
            if labelled:
                # The label's share comes first, then smoothing's (as in _label_row).
                kept = labels[r] >= 0
                label_weight = label_weights[r] if weight is not None else 1.0
                label_weight = label_weight if kept else 0.0
                label_share = keep * label_weight
                label_gap = np.float64(row_max[r]) - np.float64(picked[r])
                gap_sum[r] = _gap_term(label_share, label_gap) + gap_sum[r]
                weight_sum[r] = label_share + weight_sum[r]
            # L = -sum_c q_c w_c ((z_c - max) - log(sum)), split so that no -inf
            # log-probability is ever multiplied by a zero weight.
            losses[r] = weight_sum[r] * log_sum[r] + gap_sum[r]
            exp_scale[r] = grad_scale * weight_sum[r] / exp_sum[r]
            scale[r] = item(exp_scale[r])
            if labelled:
                losses[r] = losses[r] if labels[r] >= 0 else 0.0
                # The same bits as the label's exponential in the tile.
                label_exp = _exp_nonpositive(picked[r] - row_max[r])
                label_grad[r] = _label_gradient(
                    label_exp, exp_sum[r], exp_error[r], exp_scale[r], weight_sum[r],
                    (keep + smooth) * label_weight, grad_scale,
                )
        for r in range(count):
            lane_totals[r] += losses[r]
            if loss_out.size:
                loss_out[row + r] = losses[r]
        if grad_out is None:
            continue
        if labelled and smooth == 0.0:
            # The common case: the scaling rides on the transposition out.
            _store_tile(tile, grad_flat, row * classes, count, classes, scale)
        else:
            if labelled and weight is None:
                _lanes_difference(tile, classes, exp_scale, None, grad_scale * smooth)
            elif labelled:
                _lanes_grad(tile, classes, exp_scale, None, weight, 0.0, grad_scale * smooth)
            else:
                _lanes_top_classes(tile, classes, exp_sum, weight_sum, top)
                if weight is None and smooth == 0.0:
                    _lanes_difference(tile, classes, exp_scale, probs, grad_scale * keep)
                else:
                    _lanes_grad(
                        tile, classes, exp_scale, probs, weight, grad_scale * keep,
                        grad_scale * smooth,
                    )
                _lanes_top_gradients(tile, probs, weight, keep, smooth, grad_scale, exp_sum,
                                     exp_error, exp_scale, weight_sum, top, top_grad)
            _store_tile(tile, grad_flat, row * classes, count, classes, None)
        if labelled:
            # Each row's label entry (or an ignored row's zeros) is written after: selected
            # element by element in _lanes_grad, they kept its loop from vectorising well.
            _store_labels(grad_flat, row * classes, count, classes, labels, label_grad)
    return _lanes_total(lane_totals)


# ------------------------------------------------------ rows of two classes (k = 2)


@njit(cache=True, inline="always", error_model="numpy")
def _pair_row(z0, z1, label, ignore_index, smooth):
    """(loss, slope) of a row of two classes against its label, without weights: with
    d = z_other - z_label in float64 (exact for float32 and float16 logits) and label
    smoothing's target ``smooth`` on the other class (label_smoothing / 2; 1 - smooth on the
    label), the loss is softplus(d) - smooth d = max(d, 0) - smooth d + log(1 + e^-|d|) and
    the gradient sigmoid(d) - smooth on the other class, its negation on the label's; an
    ignored row's loss is 0 (its gradient, 0 also where the scale is not finite, is
    _pairs_block's to write). Branch-free, so that rows vectorise: softmax over two classes
    needs neither a max pass, nor a transposition, nor two exponentials."""
    first = label == 0
    d = z1 - z0 if first else z0 - z1
    # A logit of +inf makes the row NaN, as its shift by the row's max (inf - inf) does on
    # the other paths and in PyTorch.
    # Bitwise, not short-circuit: no branches, so the loop vectorises.
    d = d if (z0 != np.inf) & (z1 != np.inf) else np.nan
    e = _exp_nonpositive_float64(-abs(d))
    u = 1.0 + e
    inverse = 1.0 / u
    # max(d, 0) - smooth d, one product for either sign (so that d = +-inf gives +inf), and
    # without smoothing exactly max(d, 0) (no 0 * -inf).
    linear = (1.0 - smooth) * d if d > 0.0 else (-smooth * d if smooth != 0.0 else 0.0)
    # log(1 + e) of the rounded u, plus its rounding error: within a few ulp (log1p).
    loss = linear + (_log(u) + (e - (u - 1.0)) * inverse)
    sigmoid = inverse if d >= 0.0 else e * inverse
    return (loss if label != ignore_index else 0.0), sigmoid - smooth


@njit(cache=True, error_model="numpy")
def _pairs_block(logits, target, grad_out, loss_out, ignore_index, smooth, grad_scale, start,
                 stop):
    """Sum of the losses of rows [start, stop) of two classes against labels, without
    weights (_pair_row), LANES rows at a time, each lane summing its rows in order and the
    lanes added in order; writes their gradient rows and losses when asked."""
    _wide_vectors()
    item = logits.dtype.type
    flat, grad_flat = logits.reshape(logits.size), _flat(grad_out)
    lane_totals, losses, slopes = _stack_lanes(0.0), _stack_lanes(0.0), _stack_lanes(0.0)
    for lane in range(LANES):
        lane_totals[lane] = 0.0
    for first in range(start, stop, LANES):
        count = min(LANES, stop - first)
        # Flat views indexed from 0: LLVM then loads and stores them as vectors (2-D
        # indexing kept the loop scalar, 30 ns a row).
        z, labels = flat[2 * first : 2 * (first + count)], target[first : first + count]
        for lane in range(count):
            losses[lane], slopes[lane] = _pair_row(
                np.float64(z[2 * lane]), np.float64(z[2 * lane + 1]), labels[lane], ignore_index,
                smooth,
            )
        for lane in range(count):
            lane_totals[lane] += losses[lane]
        if loss_out.size:
            loss_out[first : first + count] = losses[:count]
        if grad_out is not None:  # settled while compiling (on an argument, not grad_flat)
            grad = grad_flat[2 * first : 2 * (first + count)]
            for lane in range(count):
                other = item(slopes[lane] * grad_scale)
                label = labels[lane]
                # An ignored row's zeros are +0, as the other paths write them.
                other = other if label != ignore_index else item(0.0)
                label_grad = -other if label != ignore_index else other
                grad[2 * lane] = label_grad if label == 0 else other
                grad[2 * lane + 1] = other if label == 0 else label_grad
    return _lanes_total(lane_totals)


# ------------------------------------------------------------------ blocks


@njit(cache=True, error_model="numpy")
def _rows_block(
    logits, target, weight, grad_out, loss_out, ignore_index, keep, smooth, grad_scale, start,
    stop,
):
    """Sum of the losses of rows [start, stop), one row at a time; writes their
    gradient rows and losses when asked."""
    _wide_vectors()
    rows = logits.shape[0]
    block_sum = 0.0
    for row in range(start, stop):
        following = min(row + 1, rows - 1)
        # Settled while compiling: target is either labels or probabilities.
        if target.ndim == 1:
            row_loss = _label_row(
                logits[row], target[row], weight, grad_out, row, logits, following,
                ignore_index, keep, smooth, grad_scale,
            )
        else:
            row_loss = _probs_row(
                logits[row], target[row], weight, grad_out, row, logits, following, keep,
                smooth, grad_scale,
            )
        if loss_out.size:
            loss_out[row] = row_loss
        block_sum += row_loss
    return block_sum


@njit(cache=True, error_model="numpy")
def _rows_per_block(classes, in_lanes_up_to=LANE_CLASSES):
    """Rows of one parallel work item: whole passes of LANES rows when rows go
    through in lanes (k <= ``in_lanes_up_to``)."""
    if classes <= in_lanes_up_to:
        return max(LANES, BLOCK_ELEMENTS // classes // LANES * LANES)
    return max(1, BLOCK_ELEMENTS // classes)


@njit(cache=True, error_model="numpy")
def _block_sum(
    logits, target, weight, grad_out, loss_out, ignore_index, keep, smooth, grad_scale, block,
    row_block,
):
    _wide_vectors_out_of_line()
    logits, target, weight = _borrow(logits), _borrow(target), _borrow(weight)
    grad_out, loss_out = _borrow(grad_out), _borrow(loss_out)
    rows, classes = logits.shape
    start, stop = block * row_block, min((block + 1) * row_block, rows)
    if classes == 2 and target.ndim == 1 and weight is None:
        return _pairs_block(
            logits, target, grad_out, loss_out, ignore_index, smooth, grad_scale, start, stop
        )
    if classes <= lane_classes(logits, target):
        return _lanes_block(
            logits, target, weight, grad_out, loss_out, ignore_index, keep, smooth, grad_scale,
            start, stop,
        )
    return _rows_block(
        logits, target, weight, grad_out, loss_out, ignore_index, keep, smooth, grad_scale,
        start, stop,
    )


def _kernel(logits, target, weight, grad_out, loss_out, ignore_index, label_smoothing, divisor):
    grad_scale = 1.0 / divisor
    rows, classes = logits.shape
    keep = 1.0 - label_smoothing
    smooth = label_smoothing / classes
    row_block = _rows_per_block(classes, lane_classes(logits, target))
    blocks = (rows + row_block - 1) // row_block
    partials = np.empty(blocks)
    for block in prange(blocks):
        # np.int64: prange's index is unsigned in the threaded copy and signed in the
        # serial one, and each type would compile _block_sum again.
        partials[block] = _block_sum(
            logits, target, weight, grad_out, loss_out, ignore_index, keep, smooth,
            grad_scale, np.int64(block), row_block,
        )
    total = 0.0
    for block in range(blocks):
        total += partials[block]
    return total / divisor


_serial_kernel, _parallel_kernel = copies.serial_and_parallel(_kernel, globals())


@njit(cache=True, inline="always", error_model="numpy")
def _two_sum(total, value):
    """``(total + value, its rounding error)``: Knuth's TwoSum, the error exact (0 where the
    sum is not finite, which then stands as a plain sum would)."""
    rounded = total + value
    part = rounded - total
    error = (total - (rounded - part)) + (value - part)
    return rounded, error if abs(rounded) < np.inf else 0.0


@njit(cache=True, inline="always", error_model="numpy")
def _weigh_chunk(chunk, count, weight, classes, ignore_index, lane_weight, lane_error):
    """Adds the weights of ``chunk``'s first ``count`` kept labels into their lanes (label
    i into lane i), compensated; returns the number of invalid labels among them. An
    ignored label adds 0.0 and looks up no weight (a select: the loop vectorises)."""
    invalid = 0
    for lane in range(count):
        label = chunk[lane]
        keep = label != ignore_index
        invalid += keep & ((label < 0) | (label >= classes))
        value = weight[min(max(label, 0), classes - 1)] if keep else 0.0
        lane_weight[lane], error = _two_sum(lane_weight[lane], value)
        lane_error[lane] += error
    return invalid


@njit(cache=True, error_model="numpy")
def _labels_block(labels, weight, classes, ignore_index, block):
    """(invalid labels, kept rows or their weight sum) in one block of labels. The weights
    are summed in LANES compensated partial sums (label i adds into i % LANES, its rounding
    error into an error lane), then in lane order: within an ulp or two of the exact sum
    (a plain float64 sum of 65536 labels' weights was up to 109 ulps off)."""
    _wide_vectors()
    # A view of the block indexed from 0: indices from a runtime start may be negative as
    # far as LLVM knows, and it would gather them one by one (10% of a call at k = 10).
    block_labels = labels[block * BLOCK_ELEMENTS : (block + 1) * BLOCK_ELEMENTS]
    if weight is None:
        invalid = 0
        kept = 0
        for i in range(block_labels.size):
            label = block_labels[i]
            keep = label != ignore_index
            # Bitwise, not short-circuit: no branches, so the loop vectorises.
            invalid += keep & ((label < 0) | (label >= classes))
            kept += keep
        return invalid, kept
    lane_weight, lane_error = _stack_lanes(0.0), _stack_lanes(0.0)
    for lane in range(LANES):
        lane_weight[lane] = 0.0
        lane_error[lane] = 0.0
    invalid = 0
    full = block_labels.size - block_labels.size % LANES
    for start in range(0, full, LANES):
        invalid += _weigh_chunk(block_labels[start : start + LANES], LANES, weight, classes,
                                ignore_index, lane_weight, lane_error)
    invalid += _weigh_chunk(block_labels[full:], block_labels.size - full, weight, classes,
                            ignore_index, lane_weight, lane_error)
    total, error = 0.0, 0.0
    for lane in range(LANES):
        total, rounding = _two_sum(total, lane_weight[lane])
        error += rounding + lane_error[lane]
    return invalid, total + error


def _label_summary(labels, weight, classes, ignore_index):
    blocks = (labels.size + BLOCK_ELEMENTS - 1) // BLOCK_ELEMENTS
    invalid = np.empty(blocks, np.int64)
    kept = np.empty(blocks)
    for block in prange(blocks):
        invalid[block], kept[block] = _labels_block(labels, weight, classes, ignore_index,
                                                    np.int64(block))
    total = 0.0
    any_invalid = False
    for block in range(blocks):
        total += kept[block]
        any_invalid |= invalid[block] > 0
    if any_invalid:
        for i in range(labels.size):
            if labels[i] != ignore_index and (labels[i] < 0 or labels[i] >= classes):
                return i, total
    return -1, total


_serial_label_summary, _parallel_label_summary = copies.serial_and_parallel(
    _label_summary, globals()
)


def label_summary(labels, weight, classes, ignore_index):
    """``(first, kept)`` for int64 class indices: the position of the first
    label outside [0, classes) that is not ignore_index (-1 when all are
    valid), and, when all are, what a "mean" divides by: the number of rows
    not ignored, or the sum of their labels' class weights (summed in fixed blocks, in order)."""
    summary = _serial_label_summary if labels.size <= LABEL_SERIAL else _parallel_label_summary
    first, kept = summary(labels, weight, classes, int(ignore_index))
    return first, kept if weight is not None else int(kept)


def softmax_cross_entropy(
    logits, target, weight, grad_out, loss_out, ignore_index, label_smoothing, divisor
):
    """Sum over rows of the (smoothed, weighted) softmax cross-entropy over
    ``divisor``, as a Python float; optionally writes the gradient over
    ``divisor`` to ``grad_out`` and the per-row losses to ``loss_out`` (see
    ``fastloss.backends`` for shapes, dtypes and aliasing)."""
    kernel = _serial_kernel if logits.size <= SERIAL_ELEMENTS else _parallel_kernel
    return kernel(
        logits,
        target,
        weight,
        grad_out,
        copies.present(loss_out),
        int(ignore_index),
        float(label_smoothing),
        float(divisor),
    )


# Not cached on its own: compiled into its entry, whose name carries the digest of every
# file it embeds.
@njit(error_model="numpy")
def _small_call_run(logits, labels, out, mean, options):
    ignore_index, label_smoothing = options
    first, kept = _serial_label_summary(labels, None, logits.shape[1], ignore_index)
    if first >= 0:
        return None  # the front raises the label's error
    return _serial_kernel(logits, labels, None, out, np.empty(0), ignore_index,
                          label_smoothing, small.kept_divisor(kept, mean))


# options: (ignore_index, label_smoothing).
softmax_cross_entropy.small_call = small.rows_small_call(
    _small_call_run, SERIAL_ELEMENTS, "softmax_cross_entropy", "softmax_cross_entropy.py")
