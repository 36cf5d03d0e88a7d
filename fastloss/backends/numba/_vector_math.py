"""float64 exp, x log x and log1p in arithmetic that LLVM vectorises, for the elementwise
functors.

libm's exp, log and log1p are calls, which keep a loop scalar: binary cross-entropy
spent over 20x MSE's time in them. These are branch-free (selects only), so a loop
over lanes vectorises. The bit-level primitives and ``log`` are cross-entropy's
(``softmax_cross_entropy``), shared from there.
"""

import numpy as np
from numba import njit

from fastloss.backends.numba.softmax_cross_entropy import _bits_float, _float_bits, _fma
from fastloss.backends.numba.softmax_cross_entropy import _log as log

# Below -746 every result rounds to 0; the clamp keeps 2**n within two normal factors.
_EXP_MIN = -746.0
_LOG2E = 1.4426950408889634
# Adding 1.5 * 2**52 rounds to the nearest integer and leaves it in the low mantissa bits.
_ROUND = 6755399441055744.0
_ROUND_BITS = np.int64(0x4338000000000000)
# fdlibm's split of ln 2: n * ln 2 is subtracted in two steps, the first exact.
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
# 1 / j! for j = 13 .. 2: the Taylor series of e**r, whose remainder on |r| <= ln(2) / 2
# is below 4e-18 relative.
_INVERSE_FACTORIALS = tuple(1.0 / float(np.prod(np.arange(1, j + 1, dtype=np.float64)))
                            for j in range(13, 1, -1))
_TINY = 2.2250738585072014e-308  # the smallest normal float64


@njit(cache=True, inline="always", error_model="numpy")
def exp_nonpositive(x):
    """e**x for float64 x <= 0 (and -inf, NaN), within two ulp; 0 below -745.2."""
    x = _EXP_MIN if x < _EXP_MIN else x  # NaN fails the comparison and passes
    shifted = _fma(x, _LOG2E, _ROUND)
    n_float = shifted - _ROUND
    r = _fma(n_float, -_LN2_LO, _fma(n_float, -_LN2_HI, x))
    poly = _INVERSE_FACTORIALS[0]
    for coefficient in _INVERSE_FACTORIALS[1:]:
        poly = _fma(poly, r, coefficient)
    mantissa = _fma(poly, r * r, r) + 1.0
    n = _float_bits(shifted) - _ROUND_BITS
    # 2**n as two normal factors, so that a subnormal result rounds once.
    half = n >> 1
    low = _bits_float((half + 1023) << 52)
    high = _bits_float((n - half + 1023) << 52)
    return mantissa * low * high


@njit(cache=True, inline="always", error_model="numpy")
def exp(x):
    """e**x for any float64 x: exp_nonpositive of -|x|, inverted for x > 0 (within
    four ulp; inf above 709.8)."""
    small = exp_nonpositive(-abs(x))
    return small if x <= 0.0 else 1.0 / small  # NaN takes the second form, and stays NaN


@njit(cache=True, inline="always", error_model="numpy")
def xlogx(x):
    """x log x for float64 x >= 0, 0 at 0 (PyTorch's xlogy(x, x)); NaN for x < 0. A
    subnormal x is taken as the smallest normal in the log (an absolute error below
    1e-305)."""
    value = x * log(_TINY if x < _TINY else x)
    value = 0.0 if x == 0.0 else value
    return np.nan if x < 0.0 else value


@njit(cache=True, inline="always", error_model="numpy")
def log1p_unit(e):
    """log(1 + e) for float64 e in [0, 1] (and NaN), within a few ulp: log(u) scaled by
    e / (u - 1), which cancels the rounding of u = 1 + e."""
    u = 1.0 + e
    return e if u == 1.0 else log(u) * (e / (u - 1.0))


@njit(cache=True, inline="always", error_model="numpy")
def log_clamped(x):
    """log(x) for float64 x >= 0 (and NaN), clamped below at -100 (PyTorch's BCE clamp)."""
    value = log(_TINY if x < _TINY else x)
    return -100.0 if value < -100.0 else value
