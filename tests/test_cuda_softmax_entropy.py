"""The cuda backend of the softmax entropy (``fastloss.backends.cuda.softmax_entropy``).

The launcher is called directly, as the front calls it: on a GPU where there is
one, and on the host emulator (the ``cupy`` fixture). Against a float64 NumPy
reference (``cases.entropy_reference``, itself checked here against a second
form of the entropy and against central differences) over every dtype, the row
modes (shared warps, a block a row, streamed rows), N = 0/1/7/300, extreme
values, in-place gradients, loss_out, both kinds of divisor and run-to-run bits;
on the emulator also the launch geometry, the global-memory traffic and planted
bugs.
"""

import functools
import math

import numpy as np
import pytest
from cuda_emulator import cases, emulator
from test_cuda import rows_past_int32
from test_cuda_emulator import planted_bug_tests

from fastloss.backends.cuda import softmax_entropy as cuda_entropy


def _call(cupy, z, divisor=1.0, in_place=False):
    """``(loss, row entropies, gradient)`` as NumPy arrays."""
    z = cupy.asarray(z)
    grad = z if in_place else cupy.empty(z.shape, z.dtype)
    rows = cupy.empty(z.shape[0], np.float64)
    loss = cuda_entropy.softmax_entropy(z, grad, rows, divisor)
    return loss.get(), rows.get(), grad.get()


# --- the reference ------------------------------------------------------------------------


def test_the_reference_is_the_entropy_and_its_gradient():
    rng = np.random.default_rng(5)
    z = 2 * rng.standard_normal((4, 9))
    z[1, 3] = -np.inf
    entropy, grad = cases.entropy_reference(z, 2.0)
    # The definition, -sum p log p (p = 0 adds nothing).
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        plogp = np.where(p == 0, 0.0, p * np.log(p))
    np.testing.assert_allclose(entropy, -plogp.sum(1), rtol=1e-14)
    # Central differences of H / 2 in each finite logit.
    step = 1e-6
    for r, c in np.argwhere(np.isfinite(z)):
        up, down = z.copy(), z.copy()
        up[r, c] += step
        down[r, c] -= step
        slope = (cases.entropy_reference(up, 2.0)[0][r]
                 - cases.entropy_reference(down, 2.0)[0][r]) / (2 * step) / 2.0
        assert grad[r, c] == pytest.approx(slope, abs=1e-8)
    assert grad[1, 3] == 0.0


# --- against the reference, on a GPU and on the emulator ------------------------------------


@pytest.mark.parametrize("case", cases.entropy_cases(), ids=lambda c: c.id)
def test_matches_the_float64_reference(cupy, case):
    cases.run_entropy(case, cupy)


@pytest.mark.parametrize("classes", [10, 700, 5000])
def test_extreme_rows(cupy, classes):
    z = np.zeros((5, classes), np.float32)
    z[1] = -np.inf                    # NaN, as softmax
    z[2, 5] = 1e30                    # one class takes all: H = 0, no gradient
    z[3, ::2] = -np.inf               # half the classes out: uniform over the rest
    z[4, 0], z[4, 1:] = -1e30, 1e30   # -1e30 beside 1e30: p = 0 there
    loss, rows, grad = _call(cupy, z, divisor=5.0)
    assert np.isnan(loss) and np.isnan(rows[1]) and np.isnan(grad[1]).all()
    assert not np.isnan(rows[[0, 2, 3, 4]]).any() and not np.isnan(grad[[0, 2, 3, 4]]).any()
    assert rows[0] == pytest.approx(math.log(classes), rel=1e-6)
    assert rows[2] == 0.0
    assert rows[3] == pytest.approx(math.log(classes // 2), rel=1e-6)
    assert rows[4] == pytest.approx(math.log(classes - 1), rel=1e-6)
    # Equal logits: log p + H cancels exactly, so the gradient is exactly 0.
    assert (grad[[0, 2, 3, 4]] == 0).all()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_one_class_rows_have_no_entropy_and_no_gradient(cupy, dtype):
    z = np.asarray([[3.0], [-1e4], [0.0]]).astype(cases.numpy_dtype(dtype))
    loss, rows, grad = _call(cupy, z, divisor=3.0)
    assert float(loss) == 0.0 and rows.tolist() == [0.0, 0.0, 0.0]
    assert (grad.astype(np.float64) == 0).all()


@pytest.mark.parametrize("classes", [10, 1000, 5000], ids=["warp-rows", "block-rows", "streamed"])
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_in_place_over_the_logits(cupy, dtype, classes):
    case = cases.EntropyCase(300 if classes <= 1000 else 7, classes, dtype, in_place=True)
    cases.run_entropy(case, cupy)
    # And the gradient's bits are those of a separate output's.
    z = cases.entropy_inputs(case)
    assert _call(cupy, z, 3.0, in_place=True)[2].tobytes() == _call(cupy, z, 3.0)[2].tobytes()


@pytest.mark.parametrize("shape", [(300, 10), (300, 1000), (7, 5000)])
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_same_bits_run_to_run(cupy, shape, dtype):
    z = cases.entropy_inputs(cases.EntropyCase(*shape, dtype))
    first = _call(cupy, z, 7.0)
    again = _call(cupy, z, 7.0)
    assert [x.tobytes() for x in first] == [x.tobytes() for x in again]


def test_a_device_divisor_is_read_on_the_device(cupy):
    z = np.zeros((4, 3))
    divisor = cupy.asarray(np.array(8.0))
    grad = cupy.empty((4, 3), np.float64)
    loss = cuda_entropy.softmax_entropy(cupy.asarray(z), grad, None, divisor)
    assert loss.get() == pytest.approx(math.log(3) / 2, rel=1e-15)
    assert (grad.get() == 0).all()


@pytest.mark.slow
def test_past_two_to_the_31_elements(cupy):
    rows, classes = rows_past_int32(cupy, "logits")
    z = cupy.zeros((rows, classes), dtype=cupy.float16)
    z[-1, 1:] = -cupy.inf  # the last row: one class left, entropy 0
    loss_out = cupy.empty(rows, cupy.float64)
    cuda_entropy.softmax_entropy(z, z, loss_out, 1.0)  # in place, to fit
    entropies = loss_out.get()
    assert entropies[-1] == 0.0
    np.testing.assert_allclose(entropies[:-1], math.log(classes), rtol=1e-6)
    assert float(abs(z[-1]).max().get()) == 0.0
    assert float(abs(z[0]).max().get()) == 0.0  # uniform: log p + H cancels


# --- on the emulator: launches and traffic ------------------------------------------------


@pytest.mark.emulated
def test_empty_batch_launches_only_the_finish(emulated):
    z = emulated.empty((0, 10), np.float32)
    with emulator.recording() as record:
        loss = cuda_entropy.softmax_entropy(z, z, emulated.empty(0, np.float64), 1.0)
    assert [launch.entry for launch in record.launches] == ["fl_softmax_entropy_finish_float32"]
    assert loss.get() == 0


@pytest.mark.emulated
@pytest.mark.parametrize("classes", [3, 100, 700, 5000])
def test_rows_span_several_grid_strides(emulated, monkeypatch, classes):
    rows = cases.rows_over_grid_strides(monkeypatch, classes)
    case = cases.EntropyCase(rows, classes, in_place=True)
    with emulator.recording() as record:
        cases.run_entropy(case, emulated)
    (main,) = [launch for launch in record.launches
               if launch.entry == "fl_softmax_entropy_float32"]
    assert main.grid == (3, 1, 1)


@pytest.mark.emulated
@pytest.mark.parametrize("grad", [True, False], ids=["with-grad", "forward"])
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("classes", [1, 2, 10, 100, 512, 513, 1000, 4096, 4097, 20000])
def test_reads_once_up_to_4096_classes_and_writes_the_gradient_once(emulated, classes, dtype,
                                                                     grad):
    rows = 24 if classes <= 4096 else 3
    z = emulated.asarray(cases.entropy_inputs(cases.EntropyCase(rows, classes, dtype)))
    grad_out = emulated.empty(z.shape, z.dtype) if grad else None
    loss_out = emulated.empty(rows, np.float64)
    with emulator.recording(count_traffic=True) as record:
        cuda_entropy.softmax_entropy(z, grad_out, loss_out, float(rows))
    (main,) = [launch for launch in record.launches if "logits" in launch.args]
    # A streamed row (past 256 threads * 16 registers) is read again for its gradient.
    passes = 2 if grad and classes > 4096 else 1
    gradient = {"grad_out": z.nbytes} if grad else {}  # a null pointer is no buffer
    assert main.loaded == {"logits": passes * z.nbytes, "loss_out": 0, "partials": 0} | {
        name: 0 for name in gradient}
    assert main.stored == {"logits": 0, "loss_out": rows * 8,
                           "partials": main.grid[0] * 8} | gradient
    if classes * z.itemsize % 16 == 0:
        # Rows of whole 16-byte packets load and store in packets: in sectors too, each
        # byte moves once a pass, give or take the sectors a row group's span straddles.
        # (A row that is not, e.g. k = 10 float32, goes element by element and asks for
        # its sectors several times; see bench/RESULTS.md.)
        bound = cases.sectors_per_byte(int(main.args["row_lanes"]))
        assert main.read["logits"] <= bound * passes * z.nbytes
        if grad:
            assert main.written["grad_out"] <= bound * z.nbytes


# --- planted bugs: what the emulator finds ------------------------------------------------


def _entropy(*args, **kwargs):
    return functools.partial(cases.run_entropy, cases.EntropyCase(*args, **kwargs))


BUGS = {
    # (text, planted text, what the launch reports (None: a wrong result), the check)
    "row-bound-off-by-one": (
        "const bool active = row < rows;", "const bool active = row <= rows;",
        "outside every buffer", _entropy(7, 10)),
    "int-classes-parameter": (
        "long long rows, long long classes,", "long long rows, int classes,",
        "np.int64, not np.int32", _entropy(7, 10)),
}
# Not here: the row offset computed in int, which wraps only past 2^31 elements, more
# than the emulator can hold; test_past_two_to_the_31_elements catches it on a GPU.


test_planted_bugs_fail, test_unplanted_checks_pass = planted_bug_tests("softmax_entropy.cu", BUGS)
