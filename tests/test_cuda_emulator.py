"""The CUDA kernels on the host emulator: the launch-mode matrix, launch checks, memory traffic.

``python -m pytest -m emulated`` runs these with the cuda cases of the other test
files. What the emulator cannot show (hardware ``exp`` precision, FMA
contraction, timing, the weak memory model) is listed in the README.
"""

import functools
import subprocess
import threading

import numpy as np
import pytest
from cuda_emulator import build, cases, emulator

import fastloss as fl
from fastloss.backends.cuda import elementwise as cuda_elementwise
from fastloss.backends.cuda import softmax_cross_entropy as cuda_ce

pytestmark = [
    pytest.mark.emulated,
    pytest.mark.skipif(build.shutil.which("g++") is None, reason="the CUDA emulator needs g++"),
]


@pytest.fixture
def cupy():
    with emulator.activate() as module:
        yield module


@pytest.mark.parametrize("case", cases.cross_entropy_cases(), ids=lambda c: c.id)
def test_cross_entropy_matrix(cupy, case):
    cases.run_cross_entropy(case, cupy)


@pytest.mark.parametrize("case", cases.mse_cases(), ids=lambda c: c.id)
def test_mse_matrix(cupy, case):
    cases.run_mse(case, cupy)


@pytest.mark.parametrize("case", cases.elementwise_cases(), ids=lambda c: c.id)
def test_elementwise_matrix(cupy, case):
    cases.run_elementwise(case, cupy)


@pytest.mark.parametrize("classes, lanes", [
    (1, 1), (16, 1), (17, 2), (32, 2), (33, 4), (64, 4), (65, 8), (128, 8), (129, 16),
    (256, 16), (257, 32), (512, 32), (513, 0), (4096, 0), (4097, 0)])
def test_a_row_group_is_the_fewest_lanes_whose_tiles_hold_the_row(classes, lanes):
    # Not a matter of results (any geometry gives them), but of speed on a GPU: one lane per
    # 16-byte packet of a row took 2.4x the time at k = 10 on an H200 (bench/RESULTS.md).
    rows = 10**6
    blocks, threads, row_lanes = cuda_ce.launch_shape(rows, classes)
    assert row_lanes == lanes
    if lanes:
        assert threads == cuda_ce.GROUP_BLOCK
        assert blocks == min(cuda_ce.MAX_BLOCKS, -(-rows // (threads // lanes)))
    else:
        assert threads == min(cuda_ce.MAX_THREADS, 32 * -(-classes // (32 * cuda_ce.TILE)))
        assert blocks == cuda_ce.MAX_BLOCKS


def test_float_math_runs_in_float_as_on_the_gpu(tmp_path):
    """CUDA overloads exp, log, fma, ... for float; the host prelude must too, or a kernel's
    unqualified fma(float, float, float) would run in double on the emulator, more exactly
    than on the GPU, and a test of its bits pass on the host alone."""
    try:
        compiler = build.compiler()
    except build.BuildError as error:
        pytest.skip(f"the CUDA emulator needs g++: {error}")
    source = tmp_path / "overloads.cpp"
    source.write_text("\n".join([
        f'#include "{build.PRELUDE}"', "#include <type_traits>",
        *(f"static_assert(std::is_same<decltype({call}), {kind}>::value, \"{call}\");"
          for call, kind in [("fma(1.0f, 2.0f, 3.0f)", "float"), ("exp(1.0f)", "float"),
                             ("log1p(1.0f)", "float"), ("fabs(1.0f)", "float"),
                             ("fmax(1.0f, 2.0f)", "float"), ("exp(1.0)", "double")]),
        ""]))
    subprocess.run([compiler, "-std=c++17", "-fsyntax-only", str(source)], check=True,
                   capture_output=True)


@pytest.mark.emulated
def test_the_current_stream_and_allocator_are_per_thread(emulated):
    """As CuPy's: a stream or allocator made current in one thread is not another's."""
    seen = {}

    def other_thread():
        seen["stream"] = emulated.cuda.get_current_stream()
        seen["allocator"] = emulated.cuda.get_allocator()

    default_stream, default_allocator = (emulated.cuda.get_current_stream(),
                                         emulated.cuda.get_allocator())
    stream = emulated.cuda.Stream()
    with stream, emulated.cuda.using_allocator(lambda nbytes: default_allocator(nbytes)):
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
        assert emulated.cuda.get_current_stream() is stream
    assert seen == {"stream": default_stream, "allocator": default_allocator}


@pytest.mark.emulated
@pytest.mark.parametrize("rows, launches", [(1, 3), (4096, 3), (4097, 4)])
def test_a_mean_over_labels_takes_one_divisor_launch_up_to_4096_rows(emulated, rows, launches):
    logits = emulated.asarray(np.zeros((rows, 3), np.float32))
    labels = emulated.asarray(np.arange(rows) % 3)
    with emulator.recording() as record:
        fl.softmax_cross_entropy_with_grad(logits, labels, backend="cuda")
    assert len(record.launches) == launches


@pytest.mark.emulated
@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "nll", "multi_margin"])
@pytest.mark.parametrize("stray", ["target", "weight", "out"])
def test_arrays_on_two_gpus_are_refused_before_any_launch(emulated, loss, stray):
    # A kernel of one GPU reading another's memory (the mean's divisor reads labels and
    # weights) is an illegal address, which leaves the CUDA context unusable: the devices are
    # compared before anything runs. The emulator has one device; this array claims another.
    class OnGpu1(type(emulated.asarray(np.zeros(1)))):
        device = type("Device1", (), {"id": 1})()

    arrays = {"logits": emulated.asarray(np.zeros((5, 3))),
              "target": emulated.asarray(np.arange(5) % 3),
              "weight": emulated.asarray(np.ones(3)), "out": emulated.asarray(np.zeros((5, 3)))}
    arrays[stray] = arrays[stray].view(OnGpu1)
    with emulator.recording() as record, pytest.raises(ValueError, match="one CUDA device"):
        getattr(fl, f"{loss}_with_grad")(arrays["logits"], arrays["target"],
                                         weight=arrays["weight"], out=arrays["out"],
                                         backend="cuda")
    assert record.launches == []


@pytest.mark.parametrize("classes", [1100, 2100, 2600, 3100])
@pytest.mark.parametrize("targets", ["labels", "probabilities"])
def test_blocks_of_a_row_not_a_power_of_two(cupy, classes, targets):
    # A row of 1025 to 4096 classes gets 32 * ceil(k / 512) threads: 96, 160, 192 and 224 are
    # blocks whose ranks (threadIdx % size) and reductions (3, 5, 6, 7 warps) no power of two
    # shows; one tile a thread, the last threads' packets past the row's end.
    with emulator.recording() as record:
        cases.run_cross_entropy(cases.CrossEntropyCase(
            3, classes, targets=targets, weighted=True, label_smoothing=0.1), cupy)
    (main,) = [launch for launch in record.launches if "logits" in launch.args]
    threads = main.block[0]
    assert main.args["row_lanes"] == 0 and threads & (threads - 1) != 0, threads


@pytest.mark.parametrize("classes", [3, 7, 100, 700, 5000])
def test_rows_span_several_grid_strides(cupy, monkeypatch, classes):
    rows = cases.rows_over_grid_strides(monkeypatch, classes)
    with emulator.recording() as record:
        cases.run_cross_entropy(cases.CrossEntropyCase(rows, classes, weighted=True), cupy)
    (main,) = [launch for launch in record.launches if "logits" in launch.args]
    assert main.grid == (3, 1, 1)


def test_mse_spans_several_grid_strides(cupy, monkeypatch):
    monkeypatch.setattr(cuda_elementwise, "MAX_BLOCKS", 2)
    step = cuda_elementwise.THREADS * cuda_elementwise.UNROLL
    with emulator.recording() as record:
        cases.run_mse(cases.MseCase(3 * 2 * step * 4 + 3), cupy)
    assert record.launches[0].grid == (2, 1, 1)


def test_invalid_labels_are_nan_rows_or_raise_when_checked(cupy):
    logits = cupy.asarray(np.random.default_rng(0).standard_normal((5, 600)).astype(np.float32))
    labels = cupy.asarray(np.array([1, 600, -1, -100, 2**40]))
    loss, grad = fl.softmax_cross_entropy_with_grad(logits, labels, reduction="none",
                                                    backend="cuda")
    loss, grad = loss.get(), grad.get()
    bad = np.array([False, True, True, False, True])
    assert np.isnan(loss[bad]).all() and np.isnan(grad[bad]).all()
    assert loss[3] == 0 and (grad[3] == 0).all() and np.isfinite(grad[0]).all()
    with pytest.raises(ValueError, match="class index 600"):
        fl.softmax_cross_entropy(logits, labels, backend="cuda", check_labels=True)


def _left_to_right(values) -> float:
    """The float64 sum of ``values`` added one after another from the first (Python's sum
    compensates its rounding errors from 3.12 on)."""
    return functools.reduce(lambda a, b: a + b, values, 0.0)


@pytest.mark.parametrize("classes, rows", [(10, 200), (100, 30)])
def test_a_block_adds_its_rows_losses_in_row_order(cupy, classes, rows):
    # Rows that share a block (one round of it here) are added as they come, row after row
    # (store_block_partial: its groups in index order), so a one-block total is the row
    # losses' sum from the first row on, bit for bit (the finishing kernel adds zeros to it).
    rng = np.random.default_rng(4)
    # Losses of many magnitudes, so that another order of the same terms rounds otherwise.
    scales = np.geomspace(0.1, 1e4, rows)[:, None]
    logits = cupy.asarray(rng.standard_normal((rows, classes)) * scales)
    labels = cupy.asarray(rng.integers(0, classes, rows))
    with emulator.recording() as record:
        total = fl.softmax_cross_entropy(logits, labels, reduction="sum", backend="cuda")
    (main,) = [launch for launch in record.launches if "logits" in launch.args]
    assert main.grid == (1, 1, 1)
    losses = fl.softmax_cross_entropy(logits, labels, reduction="none", backend="cuda").get()
    assert total.get() == _left_to_right(losses.tolist())


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_same_bits_run_to_run(cupy, dtype):
    rng = np.random.default_rng(1)
    logits = cupy.asarray(rng.standard_normal((300, 1000)).astype(dtype))
    labels = cupy.asarray(rng.integers(0, 1000, 300))
    first = [x.get().tobytes() for x in fl.softmax_cross_entropy_with_grad(
        logits, labels, label_smoothing=0.1, backend="cuda")]
    again = [x.get().tobytes() for x in fl.softmax_cross_entropy_with_grad(
        logits, labels, label_smoothing=0.1, backend="cuda")]
    assert first == again


# Each kernel takes its vector path only when all its arrays are 16-byte aligned. One
# array an element off its allocation, the others aligned, must send it down the scalar
# path: the emulator raises on a misaligned vector access. (function, its inputs) per call:
# "x" float32 scores, "p" probabilities, "logp" their logs, "y" labels; "out" is the
# gradient or output.
_ROWS, _CLASSES = 3, 32
ALONE_MISALIGNED = {
    "softmax_cross_entropy-labels": (fl.softmax_cross_entropy_with_grad, "x y"),
    "softmax_cross_entropy-probabilities": (fl.softmax_cross_entropy_with_grad, "x p"),
    "nll": (fl.nll_with_grad, "logp y"),
    "multi_margin": (fl.multi_margin_with_grad, "x y"),
    "softmax_entropy": (fl.softmax_entropy_with_grad, "x"),
    "softmax": (fl.softmax, "x"),
    "log_softmax": (fl.log_softmax, "x"),
    "softmax_backward": (fl.softmax_backward, "p x"),
    "log_softmax_backward": (fl.log_softmax_backward, "logp x"),
    "l1": (fl.l1_with_grad, "x p"),
    "kl_div": (fl.kl_div_with_grad, "logp p"),
}


def _alone_cases():
    for name, (_, inputs) in sorted(ALONE_MISALIGNED.items()):
        for position in [*inputs.split(), "out"]:
            yield pytest.param(name, position, id=f"{name}-{position}")


@pytest.mark.parametrize(("name", "position"), list(_alone_cases()))
def test_one_misaligned_array_among_aligned_ones(cupy, name, position):
    function, inputs = ALONE_MISALIGNED[name]
    rng = np.random.default_rng(5)
    x = rng.standard_normal((_ROWS, _CLASSES)).astype(np.float32)
    logp = fl.log_softmax(rng.standard_normal((_ROWS, _CLASSES)).astype(np.float32),
                          backend="numpy")
    host = {"x": x, "p": np.exp(logp), "logp": logp,
            "y": rng.integers(0, _CLASSES, _ROWS)}
    args = [host[key] for key in inputs.split()]
    want = function(*args, backend="numpy")
    device = [cases.device_copy(cupy, host[key], key == position) for key in inputs.split()]
    out = cases.device_copy(cupy, np.zeros_like(x), True) if position == "out" else None
    got = function(*device, backend="cuda", out=out)
    got, want = (r if isinstance(r, tuple) else (r,) for r in (got, want))
    for got_part, want_part in zip(got, want, strict=True):
        np.testing.assert_allclose(cases.fl_host(got_part), want_part, rtol=2e-5, atol=1e-6)
    if out is not None:
        assert got[-1] is out


@pytest.mark.parametrize("loss, position", [
    ("binary_cross_entropy", "weight"), ("binary_cross_entropy_with_logits", "weight"),
    ("binary_cross_entropy_with_logits", "aux")])
def test_a_misaligned_weight_among_aligned_inputs(cupy, loss, position):
    # The fronts hand the launcher weights of their own allocation, aligned; the launcher
    # and kernel take any C-contiguous array, so the vector path must check the weights'
    # alignment too (aux: pos_weight). One of them an element off: the scalar path, the
    # same values as with all aligned.
    x, target, options = cases.elementwise_inputs(cases.ElementwiseCase(loss, 37, weighted=True))
    arrays = {{"pos_weight": "aux"}.get(name, name): value for name, value in options.items()}
    function = cuda_elementwise.fused(loss)
    results = []
    for misaligned in (False, True):
        grad = cupy.empty(x.shape, x.dtype)
        device = {name: cases.device_copy(cupy, value, misaligned and name == position)
                  for name, value in arrays.items()}
        total = function(cupy.asarray(x), cupy.asarray(target), grad, None, 37.0, **device)
        results.append((total.get(), grad.get()))
    (want_total, want_grad), (got_total, got_grad) = results
    np.testing.assert_array_equal(got_total, want_total)
    np.testing.assert_array_equal(got_grad, want_grad)


def test_a_misaligned_loss_out_among_aligned_arrays(cupy):
    # The per-element losses too: the launcher takes any C-contiguous loss_out, so the
    # vector path must check its alignment (the emulator raises on a misaligned 16-byte
    # store). An element off its allocation: the scalar path, the same values.
    x, target, _ = cases.elementwise_inputs(cases.ElementwiseCase("l1", 37))
    function = cuda_elementwise.fused("l1")
    results = []
    for misaligned in (False, True):
        grad = cupy.empty(x.shape, x.dtype)
        losses = cases.device_copy(cupy, np.zeros_like(x), misaligned)
        total = function(cupy.asarray(x), cupy.asarray(target), grad, losses, 37.0)
        results.append((total.get(), grad.get(), losses.get()))
    for want, got in zip(*results, strict=True):
        np.testing.assert_array_equal(got, want)


def test_kl_div_subtracts_the_rounded_product_as_on_the_cpu(cupy):
    """kl_div's t log t - t x is the rounded product subtracted, no FMA (as NumPy): with
    t x within a few ulps of t log t the difference is all rounding, which an FMA's
    unrounded product changes. t log t comes from the device itself (x = 0), so the
    device's log need not match the host's."""
    rng = np.random.default_rng(5)
    t = rng.uniform(0.1, 0.9, 64)
    p_log_p = fl.kl_div_with_grad(cupy.zeros(64), cupy.asarray(t), reduction="none",
                                  backend="cuda")[0].get()
    x = p_log_p / t * (1 + rng.integers(1, 64, 64) * 2.0**-52)
    loss = fl.kl_div_with_grad(cupy.asarray(x), cupy.asarray(t), reduction="none",
                               backend="cuda")[0].get()
    want = p_log_p - t * x
    assert np.count_nonzero(want) == want.size  # all rounding, none cancels to 0
    np.testing.assert_array_equal(loss, want)


def _adversarial(dtype: str) -> np.ndarray:
    """float64 values at and beside the rounding boundaries of ``dtype``."""
    import ml_dtypes

    info = ml_dtypes.finfo(cases.numpy_dtype(dtype))
    step = 2.0 ** -int(info.nmant)  # one ulp at 1
    ties = [1 + step / 2, 1 + 3 * step / 2, 2 - step / 2, float(info.max) * (1 + step / 4)]
    tiny = float(info.smallest_subnormal)
    values = [0.0, np.inf, -np.inf, np.nan, float(info.max), 2.0 * float(info.max),
              tiny, tiny / 2, tiny * 0.75, tiny * 1.5, float(info.smallest_normal) * (1 - step),
              1e-300, 1e300]
    for tie in ties:
        values += [tie, np.nextafter(tie, 0), np.nextafter(tie, np.inf), tie * (1 - 2.0**-40),
                   tie * (1 + 2.0**-40)]
    values = np.array(values)
    return np.concatenate([values, -values])


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_float64_results_are_rounded_once(cupy, dtype):
    check_rounding(cupy, dtype)


def check_rounding(cupy, dtype):
    """The finishing kernel rounds sum(partials) / divisor to the loss dtype:
    with one partial and divisor 1, it rounds any float64 we give it."""
    from fastloss.backends.cuda import _module

    values = _adversarial(dtype)
    partial = cupy.empty(1, np.float64)
    got = []
    for value in values:
        partial[0] = value
        got.append(_module.finish("mse", partial, 1, 1.0, cases.numpy_dtype(dtype)).get())
    got = np.array(got, dtype=np.float64)
    want = cases.round_once(values, dtype)
    mismatch = ~((got == want) | (np.isnan(got) & np.isnan(want)))
    assert not mismatch.any(), list(zip(values[mismatch], got[mismatch], want[mismatch],
                                        strict=True))
    signed = ~np.isnan(want) & (want != 0)  # the partials' sum turns -0.0 into 0.0
    assert (np.signbit(got) == np.signbit(want))[signed].all()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_loss_is_the_total_divided_once(cupy, dtype):
    """The finishing kernel divides the total by the divisor and rounds that once to the
    loss dtype: not the total times the divisor's reciprocal (two roundings)."""
    from fastloss.backends.cuda import _module

    values = np.random.default_rng(3).standard_normal(64) * 1e3
    partial = cupy.empty(1, np.float64)
    for divisor in (3.0, 7.0, 10.0, 49.0, 1e-3 * 37):
        got = []
        for value in values:
            partial[0] = value
            got.append(_module.finish("mse", partial, 1, divisor, np.dtype(dtype)).get())
        want = cases.round_once(values / divisor, dtype)
        np.testing.assert_array_equal(np.array(got, np.float64), want, err_msg=str(divisor))


def test_the_finishing_sum_is_the_documented_tree(cupy):
    """finish_loss: each of FL_SUM_THREADS = 256 threads adds its strided share of the
    partials in index order, then the warps' butterflies and the block's: the loss's bits
    are fixed by that order alone (partials of many magnitudes, so another order of the
    same terms rounds otherwise)."""
    from fastloss.backends.cuda import _module

    rng = np.random.default_rng(8)
    count, threads = 1000, 256
    values = rng.standard_normal(count) * 2.0 ** rng.integers(-40, 0, count)

    def butterfly(lanes):
        for offset in (16, 8, 4, 2, 1):
            lanes = [lanes[lane] + lanes[lane ^ offset] for lane in range(32)]
        return lanes[0]

    shares = [_left_to_right(values[t::threads].tolist()) for t in range(threads)]
    warps = [butterfly(shares[w:w + 32]) for w in range(0, threads, 32)]
    want = butterfly(warps + [0.0] * (32 - len(warps)))
    got = _module.finish("mse", cupy.asarray(values), count, 1.0, np.dtype("float64")).get()
    assert float(got) == want


# --- launch checks ---------------------------------------------------------------------


def _mse_kernel(cupy):
    from fastloss.backends.cuda import _module

    return _module.get_function("mse", "fl_mse_float32")


def _mse_args(cupy, **changes):
    x = cupy.zeros(8, np.float32)
    args = dict(pred=x, target=x, weight=np.uint64(0), aux=np.uint64(0), grad_out=np.uint64(0),
                loss_out=np.uint64(0), partials=cupy.zeros(1, np.float64), n=np.int64(8),
                param=np.float64(0), divisor=np.float64(8))
    args.update(changes)
    return tuple(args.values())


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(n=8), "Python int; pass np.int64"),
        (dict(n=np.int32(8)), "np.int32, not np.int64"),
        (dict(divisor=np.float32(8)), "np.float32, not np.float64"),
        (dict(divisor=8.0), "Python float"),
        (dict(partials="partials"), "not a device array"),
    ],
    ids=["int-for-long-long", "int32-for-long-long", "float32-for-double", "float-for-double",
         "string-for-pointer"],
)
def test_arguments_are_checked_against_the_signature(cupy, change, message):
    with pytest.raises(emulator.LaunchError, match=message):
        _mse_kernel(cupy)((1,), (32,), _mse_args(cupy, **change))


def test_argument_count_and_pointer_dtype_are_checked(cupy):
    kernel = _mse_kernel(cupy)
    with pytest.raises(emulator.LaunchError, match="takes 10 arguments, the launcher passed 9"):
        kernel((1,), (32,), _mse_args(cupy)[:-1])
    with pytest.raises(emulator.LaunchError, match="array of float64, not float32"):
        kernel((1,), (32,), _mse_args(cupy, pred=cupy.zeros(8, np.float64)))
    kernel((1,), (32,), _mse_args(cupy))  # and the right arguments launch


# --- global memory traffic --------------------------------------------------------------


def _sectors(begin: int, nbytes: int) -> int:
    """Bytes in the 32-byte sectors that cover ``[begin, begin + nbytes)``."""
    return 32 * ((begin + nbytes + 31) // 32 - begin // 32) if nbytes else 0


def _address(array) -> int:
    return array.__array_interface__["data"][0]


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_mse_reads_each_input_once_and_writes_the_gradient_once(cupy, dtype):
    size = 100_003
    pred = cupy.asarray(np.linspace(-1, 1, size).astype(dtype))
    target = cupy.zeros(size, dtype)
    with emulator.recording(count_traffic=True) as record:
        fl.mse_with_grad(pred, target, backend="cuda")
    main = record.launches[0]
    assert main.loaded == {"pred": pred.nbytes, "target": pred.nbytes, "grad_out": 0,
                           "partials": 0}
    assert main.stored == {"pred": 0, "target": 0, "grad_out": pred.nbytes,
                           "partials": 8 * main.grid[0]}
    # In sectors: the buffers' own, plus the last, partial packet, which is
    # read element by element (each load one more request for that sector).
    once = _sectors(_address(pred), pred.nbytes)
    tail = 32 * (16 // pred.itemsize - 1)
    assert once <= main.read["pred"] <= once + tail
    assert once <= main.written["grad_out"] <= once + tail


@pytest.mark.parametrize("loss", sorted(cases.ELEMENTWISE))
def test_elementwise_kernels_read_inputs_once_and_write_the_gradient_once(cupy, loss):
    size = 100_003
    case = cases.ElementwiseCase(loss, size, weighted=bool(cases.ELEMENTWISE[loss][2]))
    x, target, options = cases.elementwise_inputs(case)
    arrays = {name: cupy.asarray(value) for name, value in options.items()
              if isinstance(value, np.ndarray)}
    scalars = {name: value for name, value in options.items() if name not in arrays}
    pred, target = cupy.asarray(x), cupy.asarray(target)
    # Every buffer the kernel reads, by its parameter name (pos_weight is its aux).
    inputs = {"pred": pred, "target": target} | {
        {"pos_weight": "aux"}.get(name, name): array for name, array in arrays.items()}
    with emulator.recording(count_traffic=True) as record:
        getattr(fl, f"{loss}_with_grad")(pred, target, backend="cuda", **arrays, **scalars)
    main = record.launches[0]
    nbytes = inputs["pred"].nbytes
    assert main.loaded == {**{name: nbytes for name in inputs}, "grad_out": 0, "partials": 0}
    assert main.stored == {**{name: 0 for name in inputs}, "grad_out": nbytes,
                           "partials": 8 * main.grid[0]}
    once = _sectors(_address(inputs["pred"]), nbytes)
    tail = 32 * (16 // x.itemsize - 1)
    for name in inputs:
        assert once <= main.read[name] <= once + tail
    assert once <= main.written["grad_out"] <= once + tail


@pytest.mark.parametrize("classes", [2, 10, 100, 512, 513, 4096, 4097, 20000])
@pytest.mark.parametrize("targets", ["labels", "probabilities"])
def test_cross_entropy_reads_logits_once_up_to_4096_classes(cupy, classes, targets):
    rows = 24 if classes < 4097 else 3
    logits, target, _ = cases._ce_inputs(cases.CrossEntropyCase(rows, classes, targets=targets))
    logits, target = cupy.asarray(logits), cupy.asarray(target)
    with emulator.recording(count_traffic=True) as record:
        fl.softmax_cross_entropy_with_grad(logits, target, reduction="sum", backend="cuda")
    (main,) = [launch for launch in record.launches if "logits" in launch.args]
    passes = 1 if classes <= 4096 else 2
    extra = 0
    if targets == "labels":
        # Rows of ignored labels read nothing; every thread of a kept row's
        # group also reads the label's logit (a broadcast: one sector a warp).
        kept = int((target.get() != -100).sum())
        group = int(main.args["row_lanes"]) or main.block[0]
        extra = kept * group * logits.itemsize
        assert main.loaded["logits"] == passes * logits.nbytes * kept // rows + extra
    else:
        assert main.loaded["logits"] == passes * logits.nbytes
        assert main.loaded["probs"] == passes * target.nbytes
    assert main.stored["grad_out"] == logits.nbytes
    assert main.loaded["grad_out"] == main.stored["logits"] == 0


# --- the emulator finds what a GPU would not tell ------------------------------------------


def _planted(tmp_path, monkeypatch, path, old, new):
    """A copy of kernels/ with ``old`` replaced by ``new`` in ``path``, used from now on."""
    from fastloss.backends.cuda import _module

    copy = tmp_path / "kernels"
    build.shutil.copytree(_module.kernels_dir(), copy)
    source = copy / path
    text = source.read_text()
    assert text.count(old) == 1, f"{old!r} not found once in {path}"
    source.write_text(text.replace(old, new))
    monkeypatch.setenv("FASTLOSS_KERNELS_DIR", str(copy))
    _module.kernels_hash.cache_clear()
    _module._raw_module.cache_clear()
    _module._kernel.cache_clear()
    monkeypatch.setattr(_module, "kernels_hash", _module.kernels_hash)


def planted_bug_tests(path, bugs):
    """The two tests of a kernel file's planted bugs, for a test module to bind:
    ``bugs`` maps a name to ``(text, planted text, what the launch reports (None: a
    wrong result), the check)``; each planted bug makes its check fail, and every
    check passes on the kernel as it is."""

    @pytest.mark.emulated
    @pytest.mark.parametrize("bug", sorted(bugs))
    def test_planted_bugs_fail(emulated, tmp_path, monkeypatch, bug):
        old, new, message, check = bugs[bug]
        _planted(tmp_path, monkeypatch, path, old, new)
        with pytest.raises(emulator.LaunchError if message else AssertionError, match=message):
            check(cupy=emulated)

    @pytest.mark.emulated
    def test_unplanted_checks_pass(emulated):
        for _, _, _, check in bugs.values():
            check(cupy=emulated)

    return test_planted_bugs_fail, test_unplanted_checks_pass


def _cross_entropy(*args, **kwargs):
    return functools.partial(cases.run_cross_entropy, cases.CrossEntropyCase(*args, **kwargs))


def _mse(*args):
    return functools.partial(cases.run_mse, cases.MseCase(*args))


# 701 classes: one block per row (block reductions); misaligned by one element.
BLOCK_ROWS = _cross_entropy(3, 701, misaligned=True, targets="probabilities")
BUGS = {
    # (file, text, planted text, what the launch reports (None: a wrong
    # result), the check that shows it, called with the cupy module)
    "dropped-barrier": (
        "common/reduce.cuh", "    if (lane == 0) scratch[warp] = value;\n    __syncthreads();",
        "    if (lane == 0) scratch[warp] = value;",
        "shared-memory race|that no thread of this block wrote", BLOCK_ROWS),
    "dropped-barrier-before-partials": (
        "common/rows.cuh", "group_loss[g.index()] = loss_sum;\n    __syncthreads();\n",
        "group_loss[g.index()] = loss_sum;\n",
        "shared-memory race|that no thread of this block wrote", _cross_entropy(300, 10)),
    "divergent-barrier": (
        "common/reduce.cuh", "    value = warp_allreduce(value, op);\n    __syncthreads();",
        "    value = warp_allreduce(value, op);\n    if (warp != 0) __syncthreads();",
        "divergent barrier|deadlock", BLOCK_ROWS),
    "tile-count-rounded-down": (
        "common/rows.cuh", "(packets + tile_packets - 1) / tile_packets", "packets / tile_packets",
        None, _cross_entropy(3, 5000)),
    "bound-off-by-one": (
        "common/reduce.cuh", "if (first + e < n) {\n                out[e] = base[first + e];",
        "if (first + e <= n) {\n                out[e] = base[first + e];",
        "outside every buffer", BLOCK_ROWS),
    "assumed-alignment": (
        "common/reduce.cuh", "& 15u) == 0;", "& 3u) == 0;", "misaligned 16-byte load", BLOCK_ROWS),
    "half-rounding-mode": (
        "common/reduce.cuh", "cvt.rn.f16.f32", "cvt.rz.f16.f32", None,
        _cross_entropy(37, 513, "float16")),
    "half-from-double-rounding-mode": (
        "common/reduce.cuh", "cvt.rn.f16.f64", "cvt.rm.f16.f64", None,
        _mse(4099, "float16", "none")),
    "bfloat16-double-rounding": (
        "common/reduce.cuh", "cvt.rz.f32.f64", "cvt.rn.f32.f64", None,
        functools.partial(check_rounding, dtype="bfloat16")),
    "bfloat16-truncation": (
        "common/reduce.cuh", "u += 0x7fffu + ((u >> 16) & 1u);", "u += 0x7fffu;", None,
        _mse(4099, "bfloat16", "sum")),
    "float32-division-unrounded": (
        "common/elementwise.cuh", "if (first + e < n) acc = __dadd_rn(acc, value);",
        "if (first + e < n) acc = __dadd_rn(acc, (float)value);", None,
        _mse(300_007, "float64", "sum")),
}


@pytest.mark.parametrize("bug", sorted(BUGS))
def test_planted_bugs_fail(cupy, tmp_path, monkeypatch, bug):
    path, old, new, message, check = BUGS[bug]
    _planted(tmp_path, monkeypatch, path, old, new)
    with pytest.raises(emulator.LaunchError if message else AssertionError, match=message):
        check(cupy=cupy)
