"""The fused elementwise kernel of Numba: loss and gradient in one pass, summed in fixed blocks.

A loss module defines its functor, an ``@njit(inline="always")`` function
``pair(x, t, aux, param) -> (loss, slope)`` of float64 values (or of the
input's precision: ``input_precision``), and makes its backend function with
:func:`fused`; see ``fastloss.backends`` for the contract of that function.
``slope`` times ``scale`` is the derivative of the loss with respect to ``x``
(a constant factor kept out of the per-element work, as MSE's 2); ``aux`` is
the element's auxiliary value (1 without an aux array), ``param`` the loss's
scalar option.

The kernel functions below are templates: :func:`fused` compiles a copy of
them per functor, whose globals name that functor. Each copy is cached on
disk under a name that carries a digest of the functor's file and of the
backend's shared files (``_vector_math`` and what it uses), because Numba's
cache notices edits to this file only.

Each backend function also has a ``small_call``: the front's checks of its
common case compiled in front of the serial kernel (``_small_call_of``). At
(64, 10) a whole ``mse_with_grad`` call took 2.9 us, two thirds of it in those
checks in Python; a compiled entry's dispatcher settles dtype, layout and
writeability from the arguments' types, and the call takes 1.9 us.
"""

import inspect

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from fastloss.backends.numba import _kernel_copies as copies
from fastloss.backends.numba import _small_calls as small
from fastloss.backends.numba._vector_math import like
from fastloss.backends.numba.softmax_cross_entropy import (
    _borrow,
    _stack_array_of,
    _wide_vectors_out_of_line,
)

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
# Up to this many elements a call runs the serial copy of the kernel: it takes
# tens of microseconds, which starting the other threads would not shorten, and
# on a busy machine waiting for a second core to be scheduled costs
# milliseconds. The blocks stay as they are, so no bit of the result changes.
SERIAL_ELEMENTS = 1 << 17


_stack_lanes = _stack_array_of(LANES)


def _part(array, start, stop):
    """``array[start:stop]``, or None for a None array; resolved while typing
    so that the part is a plain array type, never an optional one."""
    return None if array is None else array[start:stop]


@overload(_part)
def _part_overload(array, start, stop):
    if isinstance(array, types.NoneType):
        return lambda array, start, stop: None
    return lambda array, start, stop: array[start:stop]


def _load(array, start, count, lanes):
    """``lanes[:count] = array[start:start + count]`` in the lanes' precision; nothing for a
    None array or one of no elements (an absent weight: the lanes keep their ones). Inlined:
    called once per chunk, it kept the weighted losses 20-25% slower (the call and the
    reference counting of its array)."""


@overload(_load, inline="always")
def _load_overload(array, start, count, lanes):
    if isinstance(array, types.NoneType):
        return lambda array, start, count, lanes: None

    def load(array, start, count, lanes):
        if array.size:
            for lane in range(count):
                lanes[lane] = array[start + lane]

    return load


@njit(inline="always")
def _parts(x, target, weight, aux, grad_out, loss_out, start, stop, block_start):
    """The arrays' elements ``start:stop`` (None for None); ``weight`` and ``aux`` are a
    block's own (:func:`_window`), which starts at ``block_start``."""
    return (x[start:stop], target[start:stop],
            _part(weight, start - block_start, stop - block_start),
            _part(aux, start - block_start, stop - block_start), _part(grad_out, start, stop),
            _part(loss_out, start, stop))


def _tiled(values, size):
    """``(period, tiled)``: for ``values`` that stand for ``size`` elements by repeating
    (element e is ``values[e % values.size]``: a weight given once for each leading row),
    ``values`` repeated far enough that the elements of any block are one window of it
    (:func:`_window`); ``values`` itself when it has all ``size`` of them or none (absent).
    Period 0: nothing to repeat."""


@overload(_tiled)
def _tiled_overload(values, size):
    if isinstance(values, types.NoneType):
        return lambda values, size: (0, None)

    def tiled(values, size):
        period = values.size
        if period == size or period == 0:
            return period, values
        whole = np.empty(period + min(BLOCK, size), values.dtype)
        for start in range(0, whole.size, period):
            for i in range(min(period, whole.size - start)):
                whole[start + i] = values[i]
        return period, whole

    return tiled


def _window(values, period, start, stop):
    """The values of elements ``start:stop`` of ``values`` from :func:`_tiled` (a view)."""


@overload(_window)
def _window_overload(values, period, start, stop):
    if isinstance(values, types.NoneType):
        return lambda values, period, start, stop: None

    def window(values, period, start, stop):
        if period == 0:
            return values
        offset = start % period
        return values[offset : offset + stop - start]

    return window


def _lane(array, lanes, lane):
    """``lanes[lane]``, or 1 in the lanes' precision when there is no array behind them."""


@overload(_lane)
def _lane_overload(array, lanes, lane):
    if isinstance(array, types.NoneType):
        return lambda array, lanes, lane: like(lanes[0], 1.0)
    return lambda array, lanes, lane: lanes[lane]


def _store(array, index, value):
    """``array[index] = value``; nothing for a None array."""


@overload(_store, inline="always")
def _store_overload(array, index, value):
    if isinstance(array, types.NoneType):
        return lambda array, index, value: None

    def store(array, index, value):
        array[index] = value

    return store


def _float64_zero(array):
    """0.0: the functor computes in float64 whatever the input."""


@overload(_float64_zero)
def _float64_zero_overload(array):
    return lambda array: np.float64(0.0)


def _input_zero(array):
    """0 in ``array``'s precision: float32 for a float32 array, float64 otherwise."""


@overload(_input_zero)
def _input_zero_overload(array):
    if array.dtype == types.float32:
        return lambda array: np.float32(0.0)
    return lambda array: np.float64(0.0)


@njit(inline="always")
def _all_binary(target, start, count):
    """Whether ``target[start:start + count]`` are all 0 or 1."""
    zero, one = like(target[start], 0.0), like(target[start], 1.0)
    binary = True
    for lane in range(count):
        binary &= (target[start + lane] == zero) | (target[start + lane] == one)
    return binary


# --- helpers of the functors ------------------------------------------------------------


@njit(inline="always")
def signum(value):
    """-1.0, 0.0 or 1.0 by the sign of ``value`` (0.0 for either zero); NaN stays NaN."""
    if value > 0.0:
        return 1.0
    if value < 0.0:
        return -1.0
    return value - value


# --- templates: compiled once per functor by fused() ---------------------------------------


def _chunk(x, target, weight, aux, grad_out, loss_out, param, grad_scale, start, count,
           lane_sums, xs, ts, ws, auxs, losses, slopes):
    # All loads of the chunk happen before any store, so an output that is
    # the same memory as an input is read before it is overwritten.
    for lane in range(count):
        xs[lane] = x[start + lane]
        ts[lane] = target[start + lane]
    _load(weight, start, count, ws)
    _load(aux, start, count, auxs)
    # _BINARY_TARGETS: whether _pair is the loss's functor for targets of 0 and 1 (a
    # global of each compiled copy); a chunk of other targets then stops before any store.
    if _BINARY_TARGETS and not _all_binary(ts, 0, count):  # noqa: F821
        return False
    # _pair, the functor, and _INPUT_PRECISION are globals of each compiled
    # copy (see _compile). A functor in the input's precision runs in a loop of
    # its own: mixed with the float64 sums below, its float32 arithmetic would
    # be vectorised at float64's narrower width. A float64 one runs in the loop
    # of the sums, which saves a round trip through the stack.
    if _INPUT_PRECISION:  # noqa: F821
        for lane in range(count):
            losses[lane], slopes[lane] = _pair(  # noqa: F821
                xs[lane], ts[lane], _lane(aux, auxs, lane), param
            )
    for lane in range(count):
        if _INPUT_PRECISION:  # noqa: F821
            loss, slope = np.float64(losses[lane]), np.float64(slopes[lane])
        else:
            loss, slope = _pair(xs[lane], ts[lane], _lane(aux, auxs, lane), param)  # noqa: F821
        # (Without a weight array, a multiply by 1.0, which LLVM drops: it is exact.)
        loss *= _lane(weight, ws, lane)
        slope *= _lane(weight, ws, lane)
        lane_sums[lane] += loss
        _store(grad_out, start + lane, grad_scale * slope)
        _store(loss_out, start + lane, loss)
    return True  # the chunk is done


def _block_sum(x, target, weight, aux, grad_out, loss_out, param, grad_scale, sums):
    """Adds the losses of the chunks to the lanes' ``sums``; returns where it stopped: at
    the end, or, in the copy for binary targets, before the first chunk whose targets are
    not all 0 or 1, or else before the partial last chunk (which the general copy runs)."""
    # Out of line (and no longer inlined into _block_of): two functor loops in one
    # function, or in one chunk behind a branch, ran the general one a fifth slower.
    _wide_vectors_out_of_line()
    # Without their reference counts: the loop below counted them up and down per chunk.
    x, target, weight, aux = _borrow(x), _borrow(target), _borrow(weight), _borrow(aux)
    grad_out, loss_out, sums = _borrow(grad_out), _borrow(loss_out), _borrow(sums)
    size = x.size
    # _precision_zero: 0 in the functor's precision, a global of each compiled copy.
    zero = _precision_zero(x)  # noqa: F821
    lane_sums = _stack_lanes(0.0)
    ws = _stack_lanes(0.0)
    xs, ts, auxs = _stack_lanes(zero), _stack_lanes(zero), _stack_lanes(zero)
    losses, slopes = _stack_lanes(zero), _stack_lanes(zero)
    for lane in range(LANES):
        lane_sums[lane] = sums[lane]
        # What an absent weight or aux array (of no elements) leaves in their lanes.
        ws[lane] = 1.0
        auxs[lane] = 1.0
    full = size - size % LANES
    # A chunk checks its targets once loaded: a check of the whole block first read the
    # targets from memory twice, and cost the binary targets' copy most of its gain.
    if _BINARY_TARGETS:  # noqa: F821
        stop = 0
        while stop < full and _chunk(x, target, weight, aux, grad_out, loss_out, param,
                                     grad_scale, stop, LANES, lane_sums, xs, ts, ws, auxs,
                                     losses, slopes):
            stop += LANES
    else:
        for start in range(0, full, LANES):
            _chunk(x, target, weight, aux, grad_out, loss_out, param, grad_scale, start,
                   LANES, lane_sums, xs, ts, ws, auxs, losses, slopes)
        _chunk(x, target, weight, aux, grad_out, loss_out, param, grad_scale, full,
               size - full, lane_sums, xs, ts, ws, auxs, losses, slopes)
        stop = size
    for lane in range(LANES):
        sums[lane] = lane_sums[lane]
    return stop


def _block_of(x, target, weight, aux, grad_out, loss_out, param, grad_scale, block,
              weight_period, aux_period):
    _wide_vectors_out_of_line()
    start = block * BLOCK
    stop = min(start + BLOCK, x.size)
    block_start = start
    weight = _window(weight, weight_period, start, stop)
    aux = _window(aux, aux_period, start, stop)
    sums = _stack_lanes(0.0)
    for lane in range(LANES):
        sums[lane] = 0.0
    # _binary_block_sum: the copy of _block_sum for targets of 0 and 1, where the loss
    # has a functor for them (_HAS_BINARY_PAIR; globals of each compiled copy). The lanes'
    # sums go on where it stopped, a whole number of chunks in, so that the order of the
    # additions is that of one pass. (The rest goes as arrays that start there: a loop
    # from a start passed in ran MSE at a third of the speed.) It is called only where
    # the first chunk's targets qualify: a call that did nothing slowed the general
    # copy after it by a fifth (measured, not understood).
    if (_HAS_BINARY_PAIR and stop - start >= LANES  # noqa: F821
            and _all_binary(target, start, LANES)):
        start += _binary_block_sum(  # noqa: F821
            *_parts(x, target, weight, aux, grad_out, loss_out, start, stop, block_start),
            param, grad_scale, sums)
    _block_sum(*_parts(x, target, weight, aux, grad_out, loss_out, start, stop, block_start),
               param, grad_scale, sums)
    total = 0.0
    for lane in range(LANES):
        total += sums[lane]
    return total


def _kernel(x, target, weight, aux, grad_out, loss_out, param, scale, divisor):
    size = x.size
    grad_scale = scale / divisor
    blocks = (size + BLOCK - 1) // BLOCK
    weight_period, weight = _tiled(weight, size)
    aux_period, aux = _tiled(aux, size)
    partials = np.empty(blocks)
    for block in prange(blocks):
        # np.int64: prange's index is unsigned in the threaded copy and signed in the
        # serial one, and each type would compile _block_of again.
        partials[block] = _block_of(x, target, weight, aux, grad_out, loss_out, param,
                                    grad_scale, np.int64(block), weight_period, aux_period)
    total = 0.0
    for block in range(blocks):
        total += partials[block]
    return total / divisor


_SHARED_SOURCES = ("_vector_math.py", "softmax_cross_entropy.py")


# --- small calls: the front's common-case checks compiled with the serial kernel ----------


def _small_call_template(x, target, out, divisor, param, shared):
    return _small_call(x, target, out, divisor, param, shared)  # noqa: F821


def _small_call_of(serial, scale: float, weighted: bool, tag: str):
    """The backend function's ``small_call(x, target, out, divisor, param, shared) -> float
    | None``: the front's common case (``fastloss._validate.plain_floats``, with ``out`` the
    gradient buffer or None, and no weight) of at most SERIAL_ELEMENTS elements, checked and
    run through the serial kernel in one compiled call; None, having written nothing, for
    any other arrays. ``out`` may be the same memory as ``x`` or ``target`` only with
    ``shared`` (a loss whose domain the front checks after the kernel passes False: the
    check reads the inputs). ``x``, ``target`` and ``out`` must be NumPy arrays of ``x``'s
    dtype, float32 or float64 (what Numba cannot type stays out)."""
    def small_call(x, target, out, divisor, param, shared):
        raise TypeError("small_call() runs in jitted code only")

    @overload(small_call)
    def _small_call_overload(x, target, out, divisor, param, shared):
        if not (small.c_array(x, small.FLOATS) and small.c_array(target, (x.dtype,), x.ndim)
                and small.writable_like(out, x)):
            return lambda x, target, out, divisor, param, shared: None

        def run(x, target, out, divisor, param, shared):
            if (target.shape != x.shape or x.size > SERIAL_ELEMENTS
                    or not small.fits(out, x, shared) or not small.clear(out, target, shared)):
                return None
            # What the backend function passes for an absent weight and aux.
            absent = np.empty(0, x.dtype) if weighted else None
            return serial(x.ravel(), target.ravel(), absent, absent, small.raveled(out), None,
                          np.float64(param), scale, np.float64(divisor))

        run.__qualname__ = f"_small_call_run__{tag}"  # per loss: see _small_calls' text
        return run

    # Named by the kernels' tag (the functor's and the shared files' digest) and, through
    # small.cached, _small_calls.py's: an edit of that compiles the entries, not the kernels.
    return small.cached(_small_call_template, dict(globals(), _small_call=small_call), tag)


def _compile(pair, binary_pair, tag: str, input_precision: bool):
    """``(serial, parallel)``: the kernel of the templates, whose ``_block_sum`` runs
    ``pair`` and ``_binary_block_sum`` (if ``binary_pair`` is not None) ``binary_pair``."""
    namespace = dict(globals(), _INPUT_PRECISION=input_precision,
                     _HAS_BINARY_PAIR=binary_pair is not None,
                     _precision_zero=_input_zero if input_precision else _float64_zero)

    def block_sum(functor, binary):
        scope = dict(namespace, _pair=functor, _BINARY_TARGETS=binary)
        suffix = "__binary" if binary else ""
        for template, options in (_chunk, dict(inline="always")), (_block_sum, {}):
            scope[template.__name__] = njit(cache=True, error_model="numpy", **options)(
                copies.copy(template, scope, f"{template.__name__}__{tag}{suffix}"))
        return scope["_block_sum"]

    namespace["_block_sum"] = block_sum(pair, False)
    # Without a binary_pair _block_of never calls _binary_block_sum (_HAS_BINARY_PAIR),
    # but its name must still compile.
    namespace["_binary_block_sum"] = (namespace["_block_sum"] if binary_pair is None
                                      else block_sum(binary_pair, True))
    namespace["_block_of"] = njit(cache=True, error_model="numpy")(
        copies.copy(_block_of, namespace, f"_block_of__{tag}"))
    return copies.serial_and_parallel(_kernel, namespace, tag)


def fused(pair, scale: float, input_precision: bool = False, weighted: bool = False,
          binary_pair=None):
    """The backend function of the elementwise loss whose functor is ``pair``.

    The functor computes in float64, or with ``input_precision`` in float32
    for a float32 input (as PyTorch does; float64 otherwise): for losses whose
    exp and log in float64 would cost several times the memory traffic. Either
    way the sums are float64 and the gradient is scaled in float64.

    A ``weighted`` loss gets its optional ``weight`` and ``aux`` as arrays
    always, an absent one as an array of no elements (standing for ones): its
    kernel then compiles once for calls with and without them, at the cost of
    a multiply by one per element. Other losses get None for them, settled
    while compiling.

    ``binary_pair``, a functor of ``pair``'s signature that gives ``pair``'s bits for
    targets of 0 and 1 with less arithmetic, runs in place of ``pair`` on each block's
    leading full chunks (of ``LANES``) whose targets are all 0 or 1 (hard labels: all but a
    block's partial last chunk).

    ``fn(x, target, grad_out, loss_out, divisor, weight=None, aux=None,
    param=0.0)`` returns ``sum(weight * loss) / divisor`` as a Python float
    and writes ``weight * slope * scale / divisor`` to ``grad_out`` (computed
    as ``(scale / divisor) * (weight * slope)``, rounded once) and ``weight *
    loss`` to ``loss_out`` when they are given.
    """
    digest = copies.source_tag(inspect.getfile(pair.py_func), *_SHARED_SOURCES)
    tag = f"{pair.__name__.strip('_')}_{digest}"
    serial, parallel = _compile(pair, binary_pair, tag, input_precision)

    def backend_function(x, target, grad_out, loss_out, divisor, weight=None, aux=None,
                         param=0.0):
        kernel = serial if x.size <= SERIAL_ELEMENTS else parallel
        if weighted:
            weight, aux = copies.present(weight, x.dtype), copies.present(aux, x.dtype)
        return kernel(x, target, weight, aux, grad_out, loss_out, float(param), scale,
                      float(divisor))

    backend_function.small_call = _small_call_of(serial, scale, weighted, tag)
    return backend_function
