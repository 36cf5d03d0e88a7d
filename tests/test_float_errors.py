"""Results do not depend on NumPy's floating-point error settings: an exponential that
underflows to 0, a value rounded to 0 or inf in a narrower dtype (a float64 target of a
float32 input, a float16 result computed in float32) are IEEE's results, returned as
PyTorch returns them, with no RuntimeWarning under NumPy's defaults and no
FloatingPointError under the caller's ``np.errstate(all="raise")``."""

import warnings

import numpy as np
import pytest

import fastloss as fl
from fastloss import _registry

CPU_BACKENDS = [name for name in ("numpy", "numba") if _registry.backend_status(name)[0]]

f16, f32, f64 = np.float16, np.float32, np.float64
LABEL = np.array([0])

# (function, arguments, options): each overflows, underflows or rounds to 0 somewhere.
CASES = {
    "float64 target past float32": (fl.mse_with_grad, (f32([1, 2]), f64([1e300, 1])), {}),
    "float64 target below float32": (fl.mse_with_grad, (f32([1, 2]), f64([1e-300, 1])), {}),
    "float16 squares past float16": (
        fl.mse_with_grad, (f16([60000, 2]), f16([-60000, 1])), {}),
    "float16 items below float16": (
        fl.mse, (f16([1e-4, 300]), f16([0, -300])), {"reduction": "none"}),
    "float16 out": (
        fl.mse_grad, (f16([1e-4, 60000]), f16([0, -60000])), {"out": np.empty(2, f16)}),
    # 2 * 6e-8 / 8 is below float16's smallest subnormal: written to out as 0.
    "float16 out below float16": (
        fl.mse_grad, (f16([6e-8] + [0] * 7), f16([0] * 8)), {"out": np.empty(8, f16)}),
    "float64 weights past float32": (
        fl.binary_cross_entropy_with_grad, (f32([0.5, 0.5]), f32([1, 0])),
        {"weight": f64([1e-300, 1e300])}),
    "float64 pos_weight past float32": (
        fl.binary_cross_entropy_with_logits_with_grad, (f32([0.5, 0.5]), f32([1, 0])),
        {"pos_weight": f64([1e-300, 1e300])}),
    "logits of +-1e30": (
        fl.binary_cross_entropy_with_logits_with_grad, (f64([1e30, -1e30, 800]), f64([0, 1, 0])),
        {}),
    "float16 probabilities": (
        fl.binary_cross_entropy_with_grad, (f16([1e-7, 0.5]), f16([1, 0])), {}),
    "exp(-800) in kl_div": (fl.kl_div_with_grad, (f64([-800, 0]), f64([1e-300, 1])), {}),
    "float16 softmax": (fl.softmax, (f16([[0, 20, -20]]),), {}),
    "float64 softmax": (fl.softmax, (f64([[0, 2000, -2000]]),), {}),
    "float64 log_softmax": (fl.log_softmax, (f64([[0, 2000, -2000]]),), {}),
    "float16 softmax_backward": (fl.softmax_backward, (f16([[1e-7, 1]]), f16([[1e-7, 1]])), {}),
    "float16 cross-entropy": (fl.softmax_cross_entropy_with_grad, (f16([[0, 20, -20]]), LABEL), {}),
    "float16 cross-entropy per row": (
        fl.softmax_cross_entropy, (f16([[0, 20, -20]]), np.array([2])), {"reduction": "none"}),
    "float64 cross-entropy": (
        fl.softmax_cross_entropy_with_grad, (f64([[0, 2000, -2000]]), LABEL), {}),
    "float64 probabilities below float32": (
        fl.softmax_cross_entropy_with_grad, (f32([[0, 1]]), f64([[1e-300, 1]])), {}),
    "float64 probabilities past float32": (
        fl.softmax_cross_entropy_with_grad, (f32([[0, 1]]), f64([[1e300, 1]])), {}),
    "float64 entropy": (fl.softmax_entropy_with_grad, (f64([[0, 2000, -2000]]),), {}),
    "float16 nll": (fl.nll_with_grad, (f16([[-1e-7, -2]]), LABEL), {}),
    "squared margins past float64": (
        fl.multi_margin_with_grad, (f64([[1e308, -1e308]]), LABEL), {"p": 2}),
}


def _bits(case, backend):
    """The bytes of each result of ``case`` (an ``out`` of its own per call)."""
    function, arrays, options = CASES[case]
    options = {name: np.empty_like(value) if name == "out" else value
               for name, value in options.items()}
    result = function(*arrays, **options, backend=backend)
    return [np.asarray(r).tobytes() for r in (result if isinstance(result, tuple) else (result,))]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_results_do_not_depend_on_numpys_error_settings(backend, case):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet = _bits(case, backend)
        with np.errstate(all="raise"):
            strict = _bits(case, backend)
    assert strict == quiet
