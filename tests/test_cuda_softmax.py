"""The cuda backend of softmax, log_softmax and their VJPs (``fastloss.backends.cuda.softmax``).

The functions are called directly, as the front calls them: on a GPU where there
is one, and on the host emulator (the ``cupy`` fixture). Against the float64
NumPy formula over every dtype, the row modes (shared warps, a block a row,
streamed rows), extreme values, in-place results and run-to-run bits; on the
emulator also the launch geometry and the global-memory traffic.
"""

import math

import numpy as np
import pytest
from cuda_emulator import cases, emulator
from test_cuda import rows_past_int32

from fastloss.backends.cuda import softmax as cuda_softmax

FUNCTIONS = cases.SOFTMAX_FUNCTIONS


def _device_inputs(cupy, function, rows, classes, dtype="float32"):
    host = cases.softmax_inputs(cases.SoftmaxCase(function, rows, classes, dtype))
    return [cupy.asarray(x) for x in host]


@pytest.mark.parametrize("case", cases.softmax_cases(), ids=lambda c: c.id)
def test_matches_the_float64_formula(cupy, case):
    cases.run_softmax(case, cupy)


@pytest.mark.parametrize("function", ["softmax", "log_softmax"])
def test_a_row_of_only_minus_inf_is_nan_and_huge_logits_are_exact(cupy, function):
    z = np.zeros((3, 700), np.float32)
    z[1] = -np.inf
    z[2, 5] = 1e30
    out = cupy.empty(z.shape, z.dtype)
    getattr(cuda_softmax, function)(cupy.asarray(z), out)
    out = out.get()
    assert np.isnan(out[1]).all() and not np.isnan(out[[0, 2]]).any()
    if function == "softmax":
        assert out[2, 5] == 1 and (np.delete(out[2], 5) == 0).all()
    else:
        assert out[2, 5] == 0 and (np.delete(out[2], 5) == -1e30).all()


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize("shape", [(300, 1000), (5, 5000)], ids=["block-rows", "streamed"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_same_bits_run_to_run(cupy, function, shape, dtype):
    inputs = _device_inputs(cupy, function, *shape, dtype)
    results = []
    for _ in range(2):
        out = cupy.empty(inputs[0].shape, inputs[0].dtype)
        getattr(cuda_softmax, function)(*inputs, out)
        results.append(out.get().tobytes())
    assert results[0] == results[1]


def test_a_thread_sums_its_share_of_a_row_in_float64(cupy):
    """Each thread's share of a float32 row's sum accumulates in float64: here every
    thread's share is 4 (its first packet, at the max) and then about 4000 terms of
    exp(-16) ~ 1.1e-7, each below half an ulp of 4 in float32, which a float32 sum
    would drop one by one (a relative error of 1e-4 in the softmax)."""
    classes = 2**20
    z = np.full((1, classes), -16.0, np.float32)
    z[0, :1024] = 0.0  # the first packet of each of the block's 256 threads
    out = cupy.empty(z.shape, z.dtype)
    cuda_softmax.softmax(cupy.asarray(z), out)
    total = 1024 + (classes - 1024) * math.exp(-16.0)
    assert out.get()[0, 0] == pytest.approx(1 / total, rel=1e-6)


@pytest.mark.slow
def test_log_softmax_past_two_to_the_31_elements(cupy):
    rows, classes = rows_past_int32(cupy, "logits")
    z = cupy.zeros((rows, classes), dtype=cupy.float16)
    z[-1, -1] = 4.0
    cuda_softmax.log_softmax(z, z)  # in place, to fit
    rest = classes - 1 + math.exp(4.0)
    tail = cupy.asnumpy(z[-1, -2:]).astype(np.float64)
    np.testing.assert_allclose(tail, [-math.log(rest), 4.0 - math.log(rest)], rtol=2e-3)
    head = cupy.asnumpy(z[0, :2]).astype(np.float64)
    np.testing.assert_allclose(head, -math.log(classes), rtol=2e-3)


# --- on the emulator: launches and traffic ------------------------------------------------


@pytest.mark.emulated
@pytest.mark.parametrize("function", FUNCTIONS)
def test_empty_batch_launches_nothing(emulated, function):
    inputs = _device_inputs(emulated, function, 0, 10)
    with emulator.recording() as record:
        getattr(cuda_softmax, function)(*inputs, emulated.empty((0, 10), np.float32))
    assert record.launches == []


@pytest.mark.emulated
@pytest.mark.parametrize("classes", [3, 100, 700, 5000])
def test_rows_span_several_grid_strides(emulated, monkeypatch, classes):
    rows = cases.rows_over_grid_strides(monkeypatch, classes)
    for function in FUNCTIONS:
        with emulator.recording() as record:
            cases.run_softmax(cases.SoftmaxCase(function, rows, classes, in_place=True), emulated)
        (launch,) = record.launches
        assert launch.grid == (3, 1, 1)


@pytest.mark.emulated
@pytest.mark.parametrize("classes", [2, 10, 100, 512, 513, 4096, 4097, 20000])
@pytest.mark.parametrize("function", FUNCTIONS)
def test_reads_each_input_once_up_to_4096_classes_and_writes_once(emulated, function, classes):
    rows = 24 if classes <= 4096 else 3
    inputs = _device_inputs(emulated, function, rows, classes)
    out = emulated.empty(inputs[0].shape, inputs[0].dtype)
    with emulator.recording(count_traffic=True) as record:
        getattr(cuda_softmax, function)(*inputs, out)
    (launch,) = record.launches
    passes = 1 if classes <= 4096 else 2
    names = ("z",) if len(inputs) == 1 else (("p",) if function == "softmax_backward"
                                             else ("logp",)) + ("grad",)
    assert launch.loaded == {**{name: passes * out.nbytes for name in names}, "out": 0}
    assert launch.stored == {**{name: 0 for name in names}, "out": out.nbytes}
