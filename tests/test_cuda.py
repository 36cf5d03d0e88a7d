"""Device behaviour of the cuda backend, through the public API.

Numerical agreement with the other backends lives in test_mse.py and
test_softmax_cross_entropy.py (the ``backend`` fixture); this file covers
what a device shows: NaN rows for bad labels, bitwise determinism, streams,
graph capture, half precision, and on a GPU only PyTorch tensors over DLPack
and 64-bit indexing. Each test takes the ``cupy`` fixture: real CuPy on a GPU,
or the host emulator's stand-in (``tests/cuda_emulator``).
"""

import math

import numpy as np
import pytest

import fastloss as fl
from fastloss.backends.cuda import _arrays


def gpu_only(cupy, why: str) -> None:
    """Skips the emulated run of a test that needs real hardware, saying why."""
    if cupy.__version__ == "emulated":
        pytest.skip(f"no CUDA device (not emulated: {why})")


def _bfloat16():
    """NumPy's bfloat16 dtype (CuPy uses ml_dtypes' one), or a skip."""
    ml_dtypes = pytest.importorskip("ml_dtypes", reason="CuPy's bfloat16 needs ml_dtypes")
    return np.dtype(ml_dtypes.bfloat16)


def _torch_cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device (for PyTorch)")
    return torch


def _bits(x):
    return np.ascontiguousarray(x.get()).tobytes()


def _ce_reference(z, labels, ignore_index=-100):
    """Per-row loss and gradient of the summed loss, float64 NumPy."""
    z = np.asarray(z, np.float64)
    shifted = z - z.max(axis=1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    rows = np.arange(z.shape[0])
    kept = labels != ignore_index
    safe = np.where(kept, labels, 0)
    loss = np.where(kept, -log_softmax[rows, safe], 0.0)
    grad = np.exp(log_softmax)
    grad[rows, safe] -= 1.0
    grad[~kept] = 0.0
    return loss, grad


# --- bad labels --------------------------------------------------------------------------


def test_invalid_labels_give_nan_rows_and_the_context_survives(cupy):
    rng = np.random.default_rng(0)
    logits = cupy.asarray(rng.standard_normal((6, 10)), dtype=cupy.float32)
    labels = cupy.asarray([1, 10, -1, -100, 2**40, 9], dtype=cupy.int64)
    loss, grad = fl.softmax_cross_entropy_with_grad(
        logits, labels, reduction="none", backend="cuda"
    )
    loss, grad = cupy.asnumpy(loss), cupy.asnumpy(grad)
    bad = np.array([False, True, True, False, True, False])
    assert np.isnan(loss[bad]).all() and np.isnan(grad[bad]).all()
    assert loss[3] == 0.0 and (grad[3] == 0.0).all()
    ref_loss, ref_grad = _ce_reference(cupy.asnumpy(logits), np.array([1, 0, 0, -100, 0, 9]))
    good = ~bad
    np.testing.assert_allclose(loss[good], ref_loss[good], rtol=1e-5)
    np.testing.assert_allclose(grad[good], ref_grad[good], rtol=1e-5, atol=1e-7)
    # A mean over a NaN row is NaN, and nothing was left broken on the device.
    assert math.isnan(float(fl.softmax_cross_entropy(logits, labels, backend="cuda")))
    cupy.cuda.Device().synchronize()
    again = fl.softmax_cross_entropy(logits[:1], labels[:1], backend="cuda")
    assert math.isclose(float(again), ref_loss[0], rel_tol=1e-5)
    assert float(cupy.asarray(np.arange(10)).sum()) == 45.0


# --- determinism -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_mse_same_bits_every_run(cupy, dtype):
    rng = np.random.default_rng(1)
    size = 1_000_003 if cupy.__version__ == "emulated" else 10_000_019
    pred = cupy.asarray(rng.standard_normal(size), dtype=dtype)
    target = cupy.asarray(rng.standard_normal(size), dtype=dtype)
    first_loss, first_grad = fl.mse_with_grad(pred, target, backend="cuda")
    first = (_bits(first_loss), _bits(first_grad))
    for _ in range(4):
        loss, grad = fl.mse_with_grad(pred, target, backend="cuda")
        assert (_bits(loss), _bits(grad)) == first
    # Misaligned copies take the scalar load path with the same arithmetic order.
    shifted_pred = cupy.empty(size + 1, dtype=dtype)[1:]
    shifted_target = cupy.empty(size + 1, dtype=dtype)[1:]
    shifted_pred[...] = pred
    shifted_target[...] = target
    assert _bits(fl.mse(shifted_pred, shifted_target, backend="cuda")) == first[0]


@pytest.mark.parametrize("classes", [10, 1000, 50_257])
def test_cross_entropy_same_bits_every_run(cupy, classes):
    rng = np.random.default_rng(2)
    rows = 2048 if classes < 50_000 else 64
    logits = cupy.asarray(rng.standard_normal((rows, classes)) * 4, dtype=cupy.float32)
    labels = cupy.asarray(rng.integers(0, classes, rows), dtype=cupy.int64)
    weight = cupy.asarray(rng.uniform(0.5, 2.0, classes))
    kwargs = dict(label_smoothing=0.1, weight=weight, backend="cuda")
    first_loss, first_grad = fl.softmax_cross_entropy_with_grad(logits, labels, **kwargs)
    first = (_bits(first_loss), _bits(first_grad))
    for _ in range(4):
        loss, grad = fl.softmax_cross_entropy_with_grad(logits, labels, **kwargs)
        assert (_bits(loss), _bits(grad)) == first


# --- streams -----------------------------------------------------------------------------


def test_runs_on_the_current_non_default_stream(cupy):
    rng = np.random.default_rng(3)
    host_pred, host_target = rng.standard_normal(1_000_003), rng.standard_normal(1_000_003)
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        pred, target = cupy.asarray(host_pred), cupy.asarray(host_target)
        loss, grad = fl.mse_with_grad(pred, target, backend="cuda")
    stream.synchronize()
    diff = host_pred - host_target
    assert math.isclose(float(loss), float(np.mean(diff**2)), rel_tol=1e-12)
    np.testing.assert_allclose(cupy.asnumpy(grad), 2.0 * diff / diff.size, rtol=1e-12)


@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "weighted"])
def test_graph_capture_sees_every_launch_and_no_host_sync(cupy, weighted):
    # Capture fails on a host synchronisation or on a launch into another
    # stream, and a launch missing from the graph would leave `grad` zero.
    # (The emulator captures launches and refuses host reads while it captures.)
    rng = np.random.default_rng(4)
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        logits = cupy.asarray(rng.standard_normal((300, 700)), dtype=cupy.float32)
        labels = cupy.asarray(rng.integers(0, 700, 300), dtype=cupy.int64)
        weight = cupy.asarray(rng.uniform(0.5, 2.0, 700)) if weighted else None
        grad = cupy.zeros_like(logits)
        # Outside the capture first: compiles and loads every kernel involved.
        expected_loss, expected_grad = fl.softmax_cross_entropy_with_grad(
            logits, labels, weight=weight, backend="cuda"
        )
        stream.begin_capture()
        loss, _ = fl.softmax_cross_entropy_with_grad(
            logits, labels, weight=weight, backend="cuda", out=grad
        )
        graph = stream.end_capture()
        graph.launch(stream=stream)
    stream.synchronize()
    assert _bits(loss) == _bits(expected_loss)
    assert _bits(grad) == _bits(expected_grad)


def _labels(cupy, rng):
    """20 int64 class indices in [0, 37)."""
    return cupy.asarray(rng.integers(0, 37, 20), dtype=cupy.int64)


def _array(cupy, rng, low=None, shape=(20, 37)):
    """A float32 device array: standard normal values, or uniform in [low, 1)."""
    values = rng.standard_normal(shape) if low is None else rng.uniform(low, 1.0, shape)
    return cupy.asarray(values, dtype=cupy.float32)


def _captured_call(cupy, case, rng):
    """``(call, x)``: a call of ``case`` and its float32 input, which the call does not copy."""
    x = _array(cupy, rng, shape=(300, 70))
    if case == "cross_entropy":
        labels = cupy.asarray(rng.integers(0, 70, 300), dtype=cupy.int64)
        weight = cupy.asarray(rng.uniform(0.5, 2.0, 70))
        # A weighted mean: its divisor is computed on the device, into memory of the call's.
        return lambda: fl.softmax_cross_entropy_with_grad(x, labels, weight=weight,
                                                         backend="cuda"), x
    # A float64 target of a float32 input: the call converts a copy of it first.
    target = cupy.asarray(rng.standard_normal((300, 70)))
    return lambda: fl.mse_with_grad(x, target, backend="cuda"), x


@pytest.mark.parametrize("case", ["cross_entropy", "mse_of_a_float64_target"])
def test_a_replay_after_other_allocations_uses_memory_of_its_own(cupy, case):
    # The captured call's temporaries (block partials, the divisor, a converted copy of the
    # target) are freed when it returns, unless fastloss keeps them: a replay would then
    # write over what was allocated since (on the emulator the replay refuses to run).
    rng = np.random.default_rng(5)
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        call, x = _captured_call(cupy, case, rng)
        kept = len(_arrays._captured_memory)
        call()  # compiles and loads the kernels outside the capture
        assert len(_arrays._captured_memory) == kept  # and keeps no memory there
        stream.begin_capture()
        loss, grad = call()
        graph = stream.end_capture()
        kept = len(_arrays._captured_memory)
        allocated_since = [cupy.zeros(size, cupy.float64) for size in (1, 64, 300, 21000)]
        x[...] = _array(cupy, rng, shape=x.shape)
        graph.launch(stream=stream)
        expected_loss, expected_grad = call()
        assert len(_arrays._captured_memory) == kept  # the capture's allocator is gone
    stream.synchronize()
    assert _bits(loss) == _bits(expected_loss)
    assert _bits(grad) == _bits(expected_grad)
    assert not any(bool(array.any()) for array in allocated_since)


def test_stream_ordered_blocks_are_left_to_the_graph(cupy):
    # malloc_async's blocks are the graph's own allocations, which it frees itself: kept,
    # their free would never be captured, and the graph could not be launched twice.
    stream = cupy.cuda.Stream(non_blocking=True)
    with cupy.cuda.using_allocator(cupy.cuda.malloc_async), stream:
        call, _ = _captured_call(cupy, "cross_entropy", np.random.default_rng(9))
        call()
        kept = len(_arrays._captured_memory)
        stream.begin_capture()
        call()
        stream.end_capture()
    assert len(_arrays._captured_memory) == kept


def test_a_capture_query_cuda_refuses_counts_as_no_capture(emulated, monkeypatch):
    # On the legacy stream while another stream captures, CUDA refuses the query; so does
    # HIP. The call then goes on as outside a capture (its launch meets CUDA's refusal).
    class Refusing:
        def is_capturing(self):
            raise RuntimeError("cudaErrorStreamCaptureImplicit")

    monkeypatch.setattr(emulated.cuda, "get_current_stream", lambda device_id=-1: Refusing())
    x = _array(emulated, np.random.default_rng(10))
    loss, _ = fl.mse_with_grad(x, _array(emulated, np.random.default_rng(11)), backend="cuda")
    assert np.isfinite(float(loss))


# Every family's call under capture: name -> (function, arguments), ``arguments(cupy, rng)``
# giving what the call takes after its float32 (20, 37) input: (positional, keywords).
_CAPTURED_CALLS = {
    "l1_none": (fl.l1_with_grad, lambda cp, rng: ((_array(cp, rng),), {"reduction": "none"})),
    "huber_sum": (fl.huber_with_grad,
                  lambda cp, rng: ((_array(cp, rng),), {"reduction": "sum", "delta": 0.5})),
    "bce_with_logits_weights": (
        fl.binary_cross_entropy_with_logits_with_grad,
        lambda cp, rng: ((_array(cp, rng, 0.0),), {"weight": _array(cp, rng, 0.5),
                                                   "pos_weight": _array(cp, rng, 0.5, 37)})),
    "kl_div_log_target": (fl.kl_div_with_grad, lambda cp, rng: (
        (_array(cp, rng),), {"log_target": True, "reduction": "batchmean"})),
    "cross_entropy_smoothing": (fl.softmax_cross_entropy_with_grad, lambda cp, rng: (
        (_labels(cp, rng),), {"label_smoothing": 0.1, "ignore_index": 3})),
    "cross_entropy_probabilities": (fl.softmax_cross_entropy_with_grad,
                                    lambda cp, rng: ((_array(cp, rng, 0.0),), {})),
    "nll_weighted": (fl.nll_with_grad, lambda cp, rng: (
        (_labels(cp, rng),), {"weight": _array(cp, rng, 0.5, 37)})),
    "multi_margin_squared": (fl.multi_margin_with_grad,
                             lambda cp, rng: ((_labels(cp, rng),), {"p": 2})),
    "softmax_entropy": (fl.softmax_entropy_with_grad, lambda cp, rng: ((), {})),
    "log_softmax": (fl.log_softmax, lambda cp, rng: ((), {})),
    "softmax_backward": (fl.softmax_backward, lambda cp, rng: ((_array(cp, rng),), {})),
}


@pytest.mark.parametrize("name", sorted(_CAPTURED_CALLS))
def test_every_family_replays_a_capture_on_the_inputs_as_they_are_then(cupy, name):
    # The caller keeps the graph's inputs and outputs alive, as a graph needs; the call's
    # own memory is fastloss's to keep.
    function, arguments = _CAPTURED_CALLS[name]
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        x = _array(cupy, np.random.default_rng(6))
        args, kwargs = arguments(cupy, np.random.default_rng(7))

        def call():
            result = function(x, *args, **kwargs, backend="cuda")
            return result if isinstance(result, tuple) else (result,)

        call()
        stream.begin_capture()
        captured = call()
        graph = stream.end_capture()
        x[...] = _array(cupy, np.random.default_rng(8))
        graph.launch(stream=stream)
        expected = call()
    stream.synchronize()
    assert [_bits(array) for array in captured] == [_bits(array) for array in expected]


# --- PyTorch tensors ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype_name", ["float32", "float16", "bfloat16"])
def test_torch_cuda_tensors_via_dlpack(cupy, dtype_name):
    gpu_only(cupy, "PyTorch CUDA tensors")
    torch = _torch_cuda()
    if dtype_name == "bfloat16":
        _bfloat16()
    dtype = getattr(torch, dtype_name)
    rtol = {"float32": 1e-5, "float16": 2e-3, "bfloat16": 1.6e-2}[dtype_name]
    torch.manual_seed(0)
    logits = torch.randn(64, 1000, device="cuda", dtype=dtype, requires_grad=True)
    labels = torch.randint(0, 1000, (64,), device="cuda")
    out = torch.empty_like(logits)
    loss, _ = fl.softmax_cross_entropy_with_grad(logits, labels, backend="cuda", out=out)
    torch.cuda.synchronize()
    reference = torch.nn.functional.cross_entropy(logits.double(), labels)
    reference.backward()
    assert math.isclose(float(loss), reference.item(), rel_tol=rtol)
    # `out` is the tensor's own memory: the kernel wrote the gradient into it.
    torch.testing.assert_close(out.double(), logits.grad.double(), rtol=rtol, atol=rtol / 64)

    pred = torch.randn(4097, device="cuda", dtype=dtype)
    target = torch.randn(4097, device="cuda", dtype=dtype)
    mse = fl.mse(pred, target, backend="cuda")
    reference = torch.nn.functional.mse_loss(pred.double(), target.double())
    assert math.isclose(float(mse), reference.item(), rel_tol=rtol)


# --- 64-bit indexing ---------------------------------------------------------------------


def _free_bytes(cupy):
    free, _ = cupy.cuda.Device().mem_info
    return free


def rows_past_int32(cupy, what: str) -> tuple[int, int]:
    """``(rows, classes)`` with ``rows * classes > 2^31``, on a GPU with room for that many
    float16 ``what`` (and 1 GiB to spare); a skip on the emulator or a smaller GPU."""
    gpu_only(cupy, "2^31 elements take hours at emulated speed")
    rows, classes = 2**16 + 3, 2**15 + 5
    if _free_bytes(cupy) < rows * classes * 2 + (1 << 30):
        pytest.skip(f"not enough device memory for 2^31 float16 {what}")
    return rows, classes


@pytest.mark.slow
def test_mse_past_two_to_the_31_elements(cupy):
    gpu_only(cupy, "2^31 elements take hours at emulated speed")
    size = 2**31 + 4099
    if _free_bytes(cupy) < 3 * size * 2 + (1 << 30):
        pytest.skip("not enough device memory for three arrays of 2^31 float16")
    pred = cupy.zeros(size, dtype=cupy.float16)
    target = cupy.zeros(size, dtype=cupy.float16)
    pred[:3] = 1.0
    pred[-5:] = 3.0  # past index 2^31: squares of 9, gradients of 6
    loss, grad = fl.mse_with_grad(pred, target, reduction="sum", backend="cuda")
    np.testing.assert_array_equal(cupy.asnumpy(grad[-6:]), [0, 6, 6, 6, 6, 6])
    np.testing.assert_array_equal(cupy.asnumpy(grad[:4]), [2, 2, 2, 0])
    # Zeros between the ends keep the float16 loss exact: both ends reach the sum.
    assert float(loss) == 3 + 5 * 9


@pytest.mark.slow
def test_cross_entropy_past_two_to_the_31_elements(cupy):
    rows, classes = rows_past_int32(cupy, "logits")
    logits = cupy.zeros((rows, classes), dtype=cupy.float16)
    labels = cupy.zeros(rows, dtype=cupy.int64)
    labels[-1] = classes - 1
    logits[-1, -1] = 4.0
    # In place, to fit: the gradient overwrites the logits.
    loss, grad = fl.softmax_cross_entropy_with_grad(
        logits, labels, reduction="none", backend="cuda", out=logits
    )
    loss = cupy.asnumpy(loss).astype(np.float64)
    np.testing.assert_allclose(loss[:-1], math.log(classes), rtol=2e-3)
    rest = classes - 1 + math.exp(4.0)
    assert math.isclose(loss[-1], math.log(rest) - 4.0, rel_tol=2e-3)
    tail = cupy.asnumpy(grad[-1, -3:]).astype(np.float64)
    expected = [1 / rest, 1 / rest, math.exp(4.0) / rest - 1.0]
    np.testing.assert_allclose(tail, expected, rtol=2e-3, atol=1e-7)
    head = cupy.asnumpy(grad[0, :2]).astype(np.float64)
    np.testing.assert_allclose(head, [1 / classes - 1.0, 1 / classes], rtol=2e-3, atol=1e-7)


# --- half precision ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16"])
@pytest.mark.parametrize("classes", [7, 513, 5000])
def test_half_precision_against_float64(cupy, dtype_name, classes):
    dtype = np.dtype(np.float16) if dtype_name == "float16" else _bfloat16()
    rtol = {"float16": 2e-3, "bfloat16": 1.6e-2}[dtype_name]
    rng = np.random.default_rng(5)
    rows = 333
    logits = cupy.asarray(rng.standard_normal((rows, classes)) * 3).astype(dtype)
    labels = cupy.asarray(rng.integers(0, classes, rows), dtype=cupy.int64)
    loss, grad = fl.softmax_cross_entropy_with_grad(logits, labels, backend="cuda")
    assert loss.dtype == dtype and grad.dtype == dtype
    exact = cupy.asnumpy(logits.astype(cupy.float64))
    ref_loss, ref_grad = _ce_reference(exact, cupy.asnumpy(labels))
    assert math.isclose(float(loss.astype(cupy.float64)), ref_loss.mean(), rel_tol=rtol)
    np.testing.assert_allclose(
        cupy.asnumpy(grad.astype(cupy.float64)), ref_grad / rows, rtol=rtol, atol=rtol / rows
    )

    pred = cupy.asarray(rng.standard_normal(10_003)).astype(dtype)
    target = cupy.asarray(rng.standard_normal(10_003)).astype(dtype)
    loss, grad = fl.mse_with_grad(pred, target, backend="cuda")
    diff = cupy.asnumpy(pred.astype(cupy.float64) - target.astype(cupy.float64))
    assert math.isclose(float(loss.astype(cupy.float64)), np.mean(diff**2), rel_tol=rtol)
    np.testing.assert_allclose(
        cupy.asnumpy(grad.astype(cupy.float64)), 2 * diff / diff.size, rtol=rtol, atol=1e-7
    )


@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16"])
def test_a_target_of_the_other_half_dtype_is_not_rounded_to_the_input_dtype(cupy, dtype_name):
    """A half input with a target of the other half dtype (as wide, yet another one) computes
    in float32 too: bfloat16 holds 257 as 256, and float16 3 * 2**-30 as 0, so rounded to
    the input's dtype first the target would equal the input."""
    halves = [np.dtype(np.float16), _bfloat16()]
    dtype, other = halves if dtype_name == "float16" else halves[::-1]
    value, target_value = {"float16": (0.0, 3 * 2.0**-30), "bfloat16": (256.0, 257.0)}[
        dtype_name]
    pred = cupy.asarray(np.full(4, value)).astype(dtype)
    target = cupy.asarray(np.full(4, target_value)).astype(other)
    assert float(target.astype(dtype).astype(cupy.float64)[0]) == value  # the premise
    loss, grad = fl.l1_with_grad(pred, target, backend="cuda")
    assert loss.dtype == dtype and grad.dtype == dtype
    want = np.asarray(target_value - value).astype(dtype).astype(np.float64)
    assert float(loss.astype(cupy.float64)) == want
    assert (cupy.asnumpy(grad.astype(cupy.float64)) == -0.25).all()


@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16"])
def test_a_wider_target_of_a_half_input_is_not_rounded_to_it(cupy, dtype_name):
    """A float32 target of a half input computes in float32, as on the CPU: rounded to the
    half dtype first, 2049 became 2048 (float16) and the loss 0."""
    dtype = np.dtype(np.float16) if dtype_name == "float16" else _bfloat16()
    # Past 2048 (float16) and 256 (bfloat16) the half dtypes hold even integers only; near
    # 0.5 their spacing is 2**-11 and 2**-9.
    big, step = {"float16": (2048.0, 2.0**-13), "bfloat16": (256.0, 2.0**-11)}[dtype_name]
    pred = cupy.asarray(np.full(4, big)).astype(dtype)
    target = cupy.asarray(np.full(4, big + 1, np.float32))
    loss, grad = fl.l1_with_grad(pred, target, backend="cuda")
    assert loss.dtype == dtype and grad.dtype == dtype
    assert float(loss.astype(cupy.float64)) == 1.0
    assert (cupy.asnumpy(grad.astype(cupy.float64)) == -0.25).all()
    # An integer weight past the half dtype's integers: weighed in full, as on the CPU.
    logits = cupy.asarray(np.full(4, -8.0)).astype(dtype)
    labels = cupy.asarray(np.ones(4)).astype(dtype)
    weight = cupy.asarray(np.full(4, big + 1, np.int64))
    loss = fl.binary_cross_entropy_with_logits(logits, labels, weight=weight, backend="cuda")
    want = (big + 1) * math.log1p(math.exp(8.0))
    assert loss.dtype == dtype and float(loss.astype(cupy.float64)) == float(
        np.asarray(want).astype(dtype))

    # Even logits: the gradient is 1/2 minus the probability target, here -step.
    logits = cupy.zeros((3, 2), dtype=dtype)
    probabilities = cupy.asarray(np.tile([0.5 + step, 0.5 - step], (3, 1)).astype(np.float32))
    loss, grad = fl.softmax_cross_entropy_with_grad(logits, probabilities, reduction="sum",
                                                    backend="cuda")
    assert loss.dtype == dtype and grad.dtype == dtype
    np.testing.assert_array_equal(cupy.asnumpy(grad.astype(cupy.float64)),
                                  np.tile([-step, step], (3, 1)))


# --- host arrays (no device needed) ------------------------------------------------------


def test_host_arrays_are_refused_with_advice():
    pytest.importorskip("cupy")
    from fastloss.backends.cuda._arrays import as_device_array

    with pytest.raises(TypeError, match=r"pred .*cupy\.asarray\(pred\)"):
        as_device_array(np.zeros(3), "pred")
    with pytest.raises(TypeError, match="target is a Python list on the host"):
        as_device_array([1.0, 2.0], "target")
    with pytest.raises(TypeError, match=r"weight is a Python float on the host .*cupy\.asarray"):
        as_device_array(0.5, "weight")
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"logits\.cuda\(\)"):
        as_device_array(torch.zeros(3), "logits")
