"""exp, log and their kin in arithmetic that LLVM vectorises, for the elementwise functors,
in the precision of their argument (float32 or float64).

libm's exp, log and log1p are calls, which keep a loop scalar: binary cross-entropy
spent over 20x MSE's time in them. These are branch-free (selects only), so a loop
over lanes vectorises. A functor that runs in its input's precision writes its
constants as ``like(x, 1.0)``: a bare ``1.0`` is a float64 and would turn float32
arithmetic into float64. The bit-level primitives, the float64 ``log``, both precisions'
``exp`` and the choice by precision are cross-entropy's (``softmax_cross_entropy``),
shared from there.
"""

import numpy as np
from numba import njit, types
from numba.extending import overload

from fastloss.backends.numba.softmax_cross_entropy import (
    _bits_float,
    _by_precision,
    _exp,
    _exp_nonpositive,
    _float_bits,
    _fma,
)
from fastloss.backends.numba.softmax_cross_entropy import _log as _log_float64


def like(x, constant):
    """``constant`` as a float of ``x``'s precision (float32 or float64); jitted code only."""
    raise TypeError("like() runs in jitted code only")


@overload(like)
def _like_overload(x, constant):
    if x == types.float32:
        return lambda x, constant: np.float32(constant)
    return lambda x, constant: np.float64(constant)


# ------------------------------------------------------------------ float64

_TINY = 2.2250738585072014e-308  # the smallest normal float64
_SUBNORMAL_SCALE64 = 2.0**54  # brings every subnormal float64 into the normal range
_SUBNORMAL_LOG64 = 54 * 0.6931471805599453  # log(2**54), rounded once


@njit(cache=True, inline="always", error_model="numpy")
def _log_nonnegative_float64(x):
    """log(x) for x >= 0, a subnormal x scaled into the normal range first; log 0 (or -0) is
    log 2**-1077 = -746.5, finite, so that 0 * log 0 is 0. As the float32 log's, of |x|
    (a select taking zero as the smallest subnormal took KL divergence 1.1x the time)."""
    magnitude = abs(x)
    subnormal = magnitude < _TINY
    value = _log_float64(magnitude * _SUBNORMAL_SCALE64 if subnormal else magnitude)
    return value - _SUBNORMAL_LOG64 if subnormal else value


# ------------------------------------------------------------------ float32

_F32 = np.float32
_SQRT_HALF_BITS = np.int32(0x3F3504F3)  # the float32 nearest sqrt(1/2)
_MANTISSA_MASK = np.int32(0x007FFFFF)
_SUBNORMAL_SCALE = _F32(2.0**23)  # brings every subnormal float32 into the normal range
_SMALLEST_NORMAL32 = _F32(np.finfo(np.float32).tiny)
# Cephes logf: a minimax polynomial of log(1 + f) on [sqrt(1/2) - 1, sqrt(2) - 1], and the
# split of ln 2 (the first part exact) by which n ln 2 is added.
_LOGF = tuple(_F32(c) for c in (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1,
                                -1.2420140846e-1, 1.4249322787e-1, -1.6668057665e-1,
                                2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1))
_LN2_HI32 = _F32(0.693359375)
_LN2_LO32 = _F32(-2.12194440e-4)
_HALF32 = _F32(0.5)
_ONE32 = _F32(1.0)


@njit(cache=True, inline="always", error_model="numpy")
def _log_nonnegative_float32(x):
    """log(x) of a float32 x >= 0; subnormals are exact, and log 0 (or -0) is log 2**-150
    = -103.97, finite. inf -> inf, NaN -> NaN."""
    # Of |x|, so that -0 is 0, whose bits read as 2**-150 below. (Taking zero as the
    # smallest subnormal by a select instead made KL divergence's loop 1.4x slower.)
    magnitude = abs(x)
    subnormal = magnitude < _SMALLEST_NORMAL32
    scaled = magnitude * _SUBNORMAL_SCALE if subnormal else magnitude
    # x = 2**n m with m in [sqrt(1/2), sqrt(2)): n and m straight from the bits.
    # (np.int32 throughout: Numba's integer arithmetic is int64, half as wide in vectors.)
    offset = np.int32(_float_bits(scaled) - _SQRT_HALF_BITS)
    n = np.int32((offset >> 23) - (23 if subnormal else 0))
    f = _bits_float(np.int32((offset & _MANTISSA_MASK) + _SQRT_HALF_BITS)) - _ONE32
    # The polynomial by Estrin's scheme: four dependent steps where Horner's takes nine.
    c = _LOGF
    square = f * f
    fourth = square * square
    high = _fma(square, _fma(c[0], f, c[1]), _fma(c[2], f, c[3]))
    low = _fma(square, _fma(c[4], f, c[5]), _fma(c[6], f, c[7]))
    poly = _fma(f, _fma(fourth, high, low), c[8])
    n_float = _F32(n)
    y = _fma(poly * f, square, _fma(n_float, _LN2_LO32, -_HALF32 * square))
    value = _fma(n_float, _LN2_HI32, f + y)
    # Comparisons are false for NaN, which therefore passes through, as inf does.
    return value if x < np.inf else x


# ------------------------------------------------------------ either precision

# Cross-entropy's, under the names the functors use.
exp_nonpositive = _exp_nonpositive
exp_nonpositive.__doc__ = "e**x for x <= 0 (and -inf, NaN), within two ulp."
exp = _exp
exp.__doc__ = """e**x for any x (within four ulp, float64 about five just below its overflow;
inf past the largest float)."""
log_nonnegative = _by_precision(_log_nonnegative_float32, _log_nonnegative_float64)
log_nonnegative.__doc__ = """log(x) for x >= 0 within two ulp; log 0 is finite, below -100
(float32: log 2**-150; float64: log 2**-1077)."""


@njit(cache=True, inline="always", error_model="numpy")
def xlogx(x):
    """x log x for x >= 0, 0 at 0 (PyTorch's xlogy(x, x)); NaN for x < 0."""
    zero = like(x, 0.0)
    value = x * log_nonnegative(x)
    value = zero if x == zero else value
    return like(x, np.nan) if x < zero else value


# log(1 + e) / e on [0, 1] as a float32 polynomial of degree 10, a least-squares fit on
# Chebyshev nodes (float64 error 8e-10), by Horner's scheme: within 1.5 ulp of log(1 + e)
# over every 61st float32 of [0, 1] (by test; Estrin's scheme, shorter, cancels to 2.8).
# Ten multiply-adds, where the log of 1 + e took about thirty vector operations, 40% of BCE
# with logits' time.
_LOG1P_UNIT32 = tuple(_F32(c) for c in (
    1.0, -0.4999998211860657, 0.33332568407058716, -0.24987392127513885, 0.19891537725925446,
    -0.1610863208770752, 0.12425103038549423, -0.08253533393144608, 0.04155762121081352,
    -0.013444830663502216, 0.0020376904867589474))


@njit(cache=True, inline="always", error_model="numpy")
def _log1p_unit_float32(e):
    c = _LOG1P_UNIT32
    q = _fma(_fma(_fma(c[10], e, c[9]), e, c[8]), e, c[7])
    q = _fma(_fma(_fma(q, e, c[6]), e, c[5]), e, c[4])
    q = _fma(_fma(_fma(_fma(q, e, c[3]), e, c[2]), e, c[1]), e, c[0])
    return e * q


@njit(cache=True, inline="always", error_model="numpy")
def _log1p_unit_float64(e, inverse):
    u = e + 1.0
    return log_nonnegative(u) + (e - (u - 1.0)) * inverse


def log1p_unit(e, inverse):
    """log(1 + e) for e in [0, 1] (and NaN), within a few ulp, given ``inverse`` = 1 / (1 + e)
    rounded. float32: a polynomial (``inverse`` unused); float64: log(u) of the rounded
    u = 1 + e plus the rounding error times inverse. Jitted code only."""
    raise TypeError("log1p_unit() runs in jitted code only")


@overload(log1p_unit, inline="always")
def _log1p_unit_overload(e, inverse):
    if e == types.float32:
        return lambda e, inverse: _log1p_unit_float32(e)
    return lambda e, inverse: _log1p_unit_float64(e, inverse)


@njit(cache=True, inline="always", error_model="numpy")
def log_or_log1m(p, first):
    """log(p) if ``first`` else log(1 - p), for p in [0, 1] (and NaN), with one log: the same
    bits as ``log_nonnegative(p)`` and ``log1m(p)`` (for a loss whose factor zeroes one of
    the two)."""
    one = like(p, 1.0)
    u = one - p
    value = log_nonnegative(p if first else u)
    # error is 0 where u is exact, as for every p >= 1/2 (u may then be 0), so 1 / u, where
    # it counts, is 1 + p + p**2 + ... with p < 1/2: three terms, no division.
    error = (one - u) - p
    return value if first else value + error * (one + p * (one + p))


@njit(cache=True, inline="always", error_model="numpy")
def log1m(p):
    """log(1 - p) for p <= 1 (and NaN), within a few ulp also where 1 - p rounds (a tiny p:
    PyTorch's log1p(-p)): the log of the rounded u = 1 - p plus the rounding error, which is
    exact, over u. p = 1 gives log 0 (finite, as log_nonnegative's)."""
    return log_or_log1m(p, False)


@njit(cache=True, inline="always", error_model="numpy")
def clamped(log):
    """A log clamped below at -100 (PyTorch's BCE clamp); NaN stays NaN."""
    minimum = like(log, -100.0)
    return minimum if log < minimum else log
