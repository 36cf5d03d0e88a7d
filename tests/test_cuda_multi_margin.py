"""The cuda backend of the multi-class margin loss (``fastloss.backends.cuda.multi_margin``).

The launcher is called directly, as the front calls it: on a GPU where there is
one, and on the host emulator (the ``cupy`` fixture). Against a float64 NumPy
reference (``cases.margin_reference``, itself checked here against the definition
term by term and against central differences) over every dtype, p = 1 and 2,
margins 1 and 0.3, weights, the row modes (shared warps, a block a row, streamed
rows), N = 0/1/7/300, invalid labels (NaN rows), ties (h_j == 0 exactly), extreme
values, in-place gradients, loss_out, both kinds of divisor and run-to-run bits; on
the emulator also the launch geometry, the global-memory traffic and planted bugs.
"""

import functools

import numpy as np
import pytest
from cuda_emulator import cases, emulator
from test_cuda import rows_past_int32
from test_cuda_emulator import planted_bug_tests

from fastloss.backends.cuda import multi_margin as cuda_margin


def _call(cupy, x, labels, weight=None, p=1, margin=1.0, divisor=1.0, in_place=False):
    """``(loss, row losses, gradient)`` as NumPy arrays."""
    x = cupy.asarray(x)
    grad = x if in_place else cupy.empty(x.shape, x.dtype)
    rows = cupy.empty(x.shape[0], np.float64)
    weight = None if weight is None else cupy.asarray(np.asarray(weight, np.float64))
    loss = cuda_margin.multi_margin(x, cupy.asarray(np.asarray(labels, np.int64)), weight, grad,
                                    rows, p, margin, divisor)
    return loss.get(), rows.get(), grad.get()


# --- the reference ------------------------------------------------------------------------


@pytest.mark.parametrize("p", [1, 2])
def test_the_reference_is_the_margin_loss_and_its_gradient(p):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((5, 7))
    labels = np.array([0, 6, 3, 3, 1])
    weight = rng.uniform(0.5, 2, 7)
    loss, grad = cases.margin_reference(x, labels, weight, p, 0.3, 2.0)
    for r in range(5):
        y = labels[r]
        terms = [max(0.0, 0.3 - x[r, y] + x[r, j]) ** p for j in range(7) if j != y]
        assert loss[r] == pytest.approx(weight[y] * sum(terms) / 7, rel=1e-14)
    step = 1e-6
    for r in range(5):
        for c in range(7):
            up, down = x.copy(), x.copy()
            up[r, c] += step
            down[r, c] -= step
            slope = (cases.margin_reference(up, labels, weight, p, 0.3, 2.0)[0][r]
                     - cases.margin_reference(down, labels, weight, p, 0.3, 2.0)[0][r])
            assert grad[r, c] == pytest.approx(slope / (2 * step) / 2.0, abs=1e-7)


def test_the_reference_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 9))
    x[:, 0] = x[:, 1] - 1.0  # ties with label 1
    labels = np.array([1, 1, 4, 8, 0, 1])
    weight = rng.uniform(0.5, 2, 9)
    for p in (1, 2):
        for w in (None, weight):
            t = torch.tensor(x, requires_grad=True)
            out = torch.nn.functional.multi_margin_loss(
                t, torch.tensor(labels), p=p, margin=1.0,
                weight=None if w is None else torch.tensor(w), reduction="mean")
            out.backward()
            loss, grad = cases.margin_reference(x, labels, w, p, 1.0, 6.0)
            assert loss.sum() / 6 == pytest.approx(out.item(), rel=1e-14)
            np.testing.assert_allclose(grad, t.grad.numpy(), rtol=1e-13, atol=1e-16)


# --- against the reference, on a GPU and on the emulator ------------------------------------


@pytest.mark.parametrize("case", cases.margin_cases(), ids=lambda c: c.id)
def test_matches_the_float64_reference(cupy, case):
    cases.run_margin(case, cupy)


@pytest.mark.parametrize("classes", [10, 700, 5000])
@pytest.mark.parametrize("p", [1, 2])
def test_ties_and_invalid_labels(cupy, classes, p):
    x = np.zeros((5, classes), np.float32)
    x[0, 3] = 1.0  # label 3: every other h_j == 0 exactly, no loss, no gradient
    x[1, 2] = 0.5  # label 2: every other h_j == 0.5
    labels = [3, 2, classes, -1, 0]  # rows 2 and 3: NaN; row 4: h_j == 1
    loss, rows, grad = _call(cupy, x, labels, p=p, divisor=5.0)
    assert np.isnan(loss) and np.isnan(rows[2:4]).all() and np.isnan(grad[2:4]).all()
    assert rows[0] == 0.0 and (grad[0] == 0).all() and not np.signbit(grad[0]).any()
    assert rows[1] == pytest.approx(0.5**p * (classes - 1) / classes, rel=1e-6)
    assert rows[4] == pytest.approx((classes - 1) / classes, rel=1e-6)
    slope = p * 0.5 ** (p - 1) / classes / 5.0
    assert grad[1, 2] == pytest.approx(-slope * (classes - 1), rel=1e-6)
    assert np.delete(grad[1], 2) == pytest.approx(slope, rel=1e-6)


@pytest.mark.parametrize("classes", [10, 1000, 5000], ids=["warp-rows", "block-rows", "streamed"])
def test_squared_terms_whose_sum_overflows_keep_a_finite_label_gradient(cupy, classes):
    """p = 2: the label's gradient sums the terms' slopes 2 h / k, finite here, where the
    sum of the h alone (k - 1 terms of 8e307) overflows; the loss, a sum of h**2, is inf
    (as PyTorch's)."""
    x = np.full((2, classes), 4e307)
    x[0, 0] = x[1, 1] = -4e307
    labels = np.array([0, 1])
    want_rows, want_grad = cases.margin_reference(x, labels, None, 2, 1.0, 1.0)
    loss, rows, grad = _call(cupy, x, labels, p=2)
    assert np.isfinite(want_grad).all()
    np.testing.assert_allclose(grad, want_grad, rtol=1e-12)
    assert np.isinf(rows).all() and np.isinf(want_rows).all() and np.isinf(loss)


@pytest.mark.parametrize("w", [np.inf, np.nan, 1e300])
def test_a_subnormal_term_under_an_extreme_weight_keeps_its_label_gradient(cupy, w):
    """p = 2: each term's slope is h w_y p / (k d) before the sum, so a subnormal h under an
    infinite, NaN or huge weight gives the label -inf, NaN or minus the others' sum (as
    numpy and PyTorch), not the +0 of a sum of h p / (k d), which rounds to 0."""
    x = np.zeros((1, 10))
    weight = np.ones(10)
    weight[0] = w
    want_rows, want_grad = cases.margin_reference(x, np.array([0]), weight, 2, 5e-324, 1.0)
    _, _, grad = _call(cupy, x, [0], weight, p=2, margin=5e-324)
    assert want_grad[0, 0] != 0.0
    np.testing.assert_allclose(grad, want_grad, rtol=1e-12)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_one_class_rows_have_no_loss_and_no_gradient(cupy, dtype):
    x = np.asarray([[3.0], [-1e4], [0.0]]).astype(cases.numpy_dtype(dtype))
    loss, rows, grad = _call(cupy, x, [0, 0, 1], p=2, divisor=3.0)
    assert rows[:2].tolist() == [0.0, 0.0] and np.isnan(rows[2]) and np.isnan(loss)
    assert (grad[:2].astype(np.float64) == 0).all() and np.isnan(grad[2].astype(np.float64)).all()


@pytest.mark.parametrize("classes", [10, 1000, 5000], ids=["warp-rows", "block-rows", "streamed"])
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_in_place_over_the_input(cupy, dtype, classes):
    case = cases.MarginCase(300 if classes <= 1000 else 7, classes, dtype, 2, 0.3,
                            weighted=True, in_place=True)
    cases.run_margin(case, cupy)
    # And the gradient's bits are those of a separate output's.
    x, labels, weight = cases.margin_inputs(case)
    assert (_call(cupy, x, labels, weight, 2, 0.3, 3.0, in_place=True)[2].tobytes()
            == _call(cupy, x, labels, weight, 2, 0.3, 3.0)[2].tobytes())


@pytest.mark.parametrize("dtype, step", [("float16", 2.0**-10), ("bfloat16", 2.0**-7)])
def test_the_label_gradient_is_rounded_once_from_float64(cupy, dtype, step):
    """The label's gradient, minus the sum of the others' slopes, is formed in float64 and
    rounded once: a value just above a tie of the half type whose excess float32 drops
    would round to the tie, then to even, if rounded through float32 first."""
    above_tie = 1 + step / 2 + 2.0**-40  # float32 rounds it to the tie 1 + step / 2
    x = np.zeros((1, 2)).astype(cases.numpy_dtype(dtype))
    # One term, h = 1: the label's gradient is -w p / (k d) = -w / 2.
    _, _, grad = _call(cupy, x, [0], [2 * above_tie, 1.0], p=1, margin=1.0, divisor=1.0)
    assert grad[0, 0].astype(np.float64) == -(1 + step)  # rounded once: up, past the tie


@pytest.mark.slow
def test_past_two_to_the_31_elements(cupy):
    rows, classes = rows_past_int32(cupy, "scores")
    x = cupy.zeros((rows, classes), dtype=cupy.float16)
    x[-1, 1:] = 1.0  # margin 0: only the last row has terms, one per class but its label
    labels = cupy.zeros(rows, dtype=cupy.int64)
    loss = cuda_margin.multi_margin(x, labels, None, x, None, 1, 0.0, 1.0)  # in place, to fit
    share = (classes - 1) / classes
    assert float(loss.get()) == pytest.approx(share, rel=1e-3)
    assert float(x[-1, 0].get()) == pytest.approx(-share, rel=1e-3)
    assert float(x[-1, -1].get()) == pytest.approx(1 / classes, rel=1e-2)
    assert float(abs(x[0]).max().get()) == 0.0


@pytest.mark.parametrize("shape", [(300, 10), (300, 1000), (7, 5000)])
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_same_bits_run_to_run(cupy, shape, dtype):
    x, labels, weight = cases.margin_inputs(cases.MarginCase(*shape, dtype, 2, weighted=True))
    first = _call(cupy, x, labels, weight, 2, 0.3, 7.0)
    again = _call(cupy, x, labels, weight, 2, 0.3, 7.0)
    assert [a.tobytes() for a in first] == [a.tobytes() for a in again]


def test_a_device_divisor_is_read_on_the_device(cupy):
    x = np.zeros((4, 3))
    divisor = cupy.asarray(np.array(8.0))
    grad = cupy.empty((4, 3), np.float64)
    labels = cupy.asarray(np.zeros(4, np.int64))
    loss = cuda_margin.multi_margin(cupy.asarray(x), labels, None, grad, None, 1, 1.0, divisor)
    assert loss.get() == pytest.approx(4 * (2 / 3) / 8, rel=1e-15)
    assert (grad.get()[:, 1:] == 1 / 3 / 8).all() and (grad.get()[:, 0] == -2 / 3 / 8).all()


# --- on the emulator: launches and traffic ------------------------------------------------


@pytest.mark.emulated
def test_empty_batch_launches_only_the_finish(emulated):
    x = emulated.empty((0, 10), np.float32)
    labels = emulated.empty(0, np.int64)
    with emulator.recording() as record:
        loss = cuda_margin.multi_margin(x, labels, None, x, emulated.empty(0, np.float64), 1,
                                        1.0, 1.0)
    assert [launch.entry for launch in record.launches] == ["fl_multi_margin_finish_float32"]
    assert loss.get() == 0


@pytest.mark.emulated
@pytest.mark.parametrize("classes", [3, 100, 700, 5000])
def test_rows_span_several_grid_strides(emulated, monkeypatch, classes):
    rows = cases.rows_over_grid_strides(monkeypatch, classes)
    case = cases.MarginCase(rows, classes, p=2, weighted=True, in_place=True, invalid=True)
    with emulator.recording() as record:
        cases.run_margin(case, emulated)
    (main,) = [launch for launch in record.launches
               if launch.entry == "fl_multi_margin_float32"]
    assert main.grid == (3, 1, 1)


@pytest.mark.emulated
@pytest.mark.parametrize("grad", [True, False], ids=["with-grad", "forward"])
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("classes", [1, 2, 10, 100, 512, 513, 1000, 4096, 4097, 20000])
def test_reads_once_up_to_4096_classes_and_writes_the_gradient_once(emulated, classes, dtype,
                                                                     grad):
    rows = 24 if classes <= 4096 else 3
    x, labels, weight = cases.margin_inputs(cases.MarginCase(rows, classes, dtype, weighted=True))
    x = emulated.asarray(x)
    grad_out = emulated.empty(x.shape, x.dtype) if grad else None
    loss_out = emulated.empty(rows, np.float64)
    with emulator.recording(count_traffic=True) as record:
        cuda_margin.multi_margin(x, emulated.asarray(labels), emulated.asarray(weight), grad_out,
                                 loss_out, 2, 1.0, float(rows))
    (main,) = [launch for launch in record.launches if "x" in launch.args]
    # A streamed row (past 256 threads * 16 registers) is read again for its gradient;
    # each row's label, its weight and x[r, y] are read once, by the row's rank 0.
    passes = 2 if grad and classes > 4096 else 1
    gradient = {"grad_out": x.nbytes} if grad else {}  # a null pointer is no buffer
    assert main.loaded == {"x": passes * x.nbytes + rows * x.itemsize, "labels": rows * 8,
                           "weight": rows * 8, "loss_out": 0, "partials": 0} | {
        name: 0 for name in gradient}
    assert main.stored == {"x": 0, "labels": 0, "weight": 0, "loss_out": rows * 8,
                           "partials": main.grid[0] * 8} | gradient
    if classes * x.itemsize % 16 == 0:
        # Rows of whole 16-byte packets load and store in packets: in sectors too, each
        # byte moves once a pass, give or take the sectors a row group's span straddles
        # and the one sector of x[r, y] a row.
        bound = cases.sectors_per_byte(int(main.args["row_lanes"]))
        assert main.read["x"] <= bound * passes * x.nbytes + rows * 32
        if grad:
            assert main.written["grad_out"] <= bound * x.nbytes


@pytest.mark.emulated
@pytest.mark.parametrize("classes", [100, 5000], ids=["one-pass", "streamed"])
def test_a_row_of_an_invalid_label_reads_nothing(emulated, classes):
    # Its loss and gradient are NaN whatever x holds: neither pass reads it, nor a
    # streamed row's second pass. Each valid row: its passes and x[r, y].
    x = np.linspace(-1.0, 1.0, 3 * classes, dtype=np.float32).reshape(3, classes)
    labels = np.array([1, classes, -1])
    x = emulated.asarray(x)
    grad_out = emulated.empty(x.shape, x.dtype)
    with emulator.recording(count_traffic=True) as record:
        cuda_margin.multi_margin(x, emulated.asarray(labels), None, grad_out,
                                 emulated.empty(3, np.float64), 1, 1.0, 3.0)
    (main,) = [launch for launch in record.launches if "x" in launch.args]
    passes = 2 if classes > 4096 else 1
    row = classes * x.itemsize
    assert main.loaded["x"] == passes * row + x.itemsize
    assert main.stored["grad_out"] == x.nbytes
    assert np.isnan(grad_out.get()[1:]).all() and not np.isnan(grad_out.get()[0]).any()


# --- planted bugs: what the emulator finds ------------------------------------------------


def _margin(*args, **kwargs):
    return functools.partial(cases.run_margin, cases.MarginCase(*args, **kwargs))


BUGS = {
    # (text, planted text, what the launch reports (None: a wrong result), the check)
    "row-bound-off-by-one": (
        "const bool active = row < rows;", "const bool active = row <= rows;",
        "outside every buffer", _margin(7, 10)),
    "label-bound-off-by-one": (
        "label < 0 || label >= classes", "label < 0 || label > classes", "outside every buffer",
        _margin(7, 10, invalid=True, weighted=True)),
    "int-classes-parameter": (
        "long long rows, long long classes,", "long long rows, int classes,",
        "np.int64, not np.int32", _margin(7, 10)),
    "int-labels": (
        "const i64 label = labels[row];", "const int label = (int)labels[row];", None,
        _margin(7, 10, invalid=True)),
}
# Not here: the row offset computed in int, which wraps only past 2^31 elements, more
# than the emulator can hold.


test_planted_bugs_fail, test_unplanted_checks_pass = planted_bug_tests("multi_margin.cu", BUGS)
