"""The cuda backend of NLL over class indices (``fastloss.backends.cuda.nll``).

The launcher is called directly, as the front calls it: on a GPU where there is
one, and on the host emulator (the ``cupy`` fixture). Against a float64 NumPy
reference (``cases.nll_reference``) over every dtype, the row modes (shared
warps, a block a row), weights, ignored and invalid labels, -inf
log-probabilities, both kinds of divisor, in-place gradients and run-to-run
bits; on the emulator also the launch geometry, the global-memory traffic and
planted bugs.
"""

import functools
import math
from unittest import mock

import numpy as np
import pytest
from cuda_emulator import cases, emulator
from test_cuda import rows_past_int32
from test_cuda_emulator import planted_bug_tests

from fastloss.backends.cuda import nll as cuda_nll
from fastloss.backends.cuda import softmax_cross_entropy as cuda_ce


@pytest.mark.parametrize("case", cases.nll_cases(), ids=lambda c: c.id)
def test_matches_the_float64_reference(cupy, case):
    cases.run_nll(case, cupy)


def _call(cupy, log_probs, labels, weight=None, divisor=1.0, ignore_index=-100, in_place=False):
    """``(loss, row losses, gradient)`` as NumPy arrays."""
    log_probs = cupy.asarray(log_probs)
    grad = log_probs if in_place else cupy.empty(log_probs.shape, log_probs.dtype)
    rows = cupy.empty(log_probs.shape[0], np.float64)
    weight = None if weight is None else cupy.asarray(weight)
    loss = cuda_nll.nll(log_probs, cupy.asarray(np.asarray(labels, np.int64)), weight, grad, rows,
                        ignore_index, divisor)
    return loss.get(), rows.get(), grad.get()


@pytest.mark.parametrize("classes", [3, 1000])
def test_minus_inf_at_the_label_is_an_infinite_loss_and_elsewhere_nothing(cupy, classes):
    log_probs = np.full((3, classes), -2.0, np.float32)
    log_probs[0, 1] = -np.inf  # the label's
    log_probs[1, 0] = -np.inf  # beside the label
    log_probs[2, :] = -np.inf  # an ignored row
    loss, rows, grad = _call(cupy, log_probs, [1, 2, -100], divisor=4.0)
    assert loss == np.inf and rows.tolist() == [np.inf, 2.0, 0.0]
    want = np.zeros((3, classes))
    want[0, 1] = want[1, 2] = -0.25
    np.testing.assert_array_equal(grad, want)


@pytest.mark.parametrize("classes", [5, 700])
def test_invalid_labels_are_nan_rows_and_ignored_ones_zero(cupy, classes):
    log_probs = np.full((7, classes), -1.0)
    labels = [classes, -1, 2**40, np.iinfo(np.int64).min, np.iinfo(np.int64).max, 0, 3]
    loss, rows, grad = _call(cupy, log_probs, labels, ignore_index=3)
    assert np.isnan(loss)
    assert np.isnan(rows[:5]).all() and np.isnan(grad[:5]).all()
    assert rows[5] == 1.0 and rows[6] == 0.0 and (grad[6] == 0).all()
    assert grad[5, 0] == -1.0 and (grad[5, 1:] == 0).all()


def test_ignore_index_inside_the_classes(cupy):
    log_probs = np.log(np.full((3, 4), 0.25))
    loss, rows, grad = _call(cupy, log_probs, [0, 1, 0], weight=[5.0, 2.0, 1.0, 1.0],
                             ignore_index=0, divisor=2.0)
    assert rows.tolist() == [0.0, 2 * math.log(4), 0.0]
    assert loss == math.log(4)
    assert (grad[[0, 2]] == 0).all() and grad[1].tolist() == [0.0, -1.0, 0.0, 0.0]


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_in_place_over_the_log_probabilities(cupy, dtype):
    case = cases.NllCase(300, 1000, dtype, weighted=True, invalid=True)
    log_probs, labels, weight = cases.nll_inputs(case)
    loss, rows, grad = _call(cupy, log_probs, labels, weight, 3.0, in_place=True)
    want_rows, want_grad = cases.nll_reference(log_probs, labels, weight, -100, 3.0)
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_array_equal(grad.astype(np.float64), cases.round_once(want_grad, dtype))


@pytest.mark.parametrize("shape", [(300, 10), (300, 1000), (7, 5000)])
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_same_bits_run_to_run(cupy, shape, dtype):
    case = cases.NllCase(*shape, dtype, weighted=True)
    log_probs, labels, weight = cases.nll_inputs(case)
    first = _call(cupy, log_probs, labels, weight, 7.0)
    again = _call(cupy, log_probs, labels, weight, 7.0)
    assert [x.tobytes() for x in first] == [x.tobytes() for x in again]


def test_a_device_divisor_is_read_on_the_device(cupy):
    log_probs = np.log(np.full((4, 3), 1 / 3))
    labels = cupy.asarray(np.array([0, 1, -100, 2]))
    weight = cupy.asarray(np.array([1.0, 2.0, 4.0]))
    divisor = cuda_ce.mean_divisor(labels, weight, 3, -100)  # 7
    grad = cupy.empty((4, 3), np.float64)
    loss = cuda_nll.nll(cupy.asarray(log_probs), labels, weight, grad, None, -100, divisor)
    assert loss.get() == pytest.approx(math.log(3), rel=1e-15)
    assert grad.get()[3].tolist() == [0.0, 0.0, -4 / 7]


@pytest.mark.parametrize("rows", [1, 4096, 4097, 9000, 4_200_000])
def test_the_device_divisor_counts_every_row(cupy, rows):
    """One block, then many blocks' partials (the grid's cap is reached past 4194304
    rows), each row once; an invalid label (5, 6) counts with its clipped class."""
    rng = np.random.default_rng(rows)
    labels = rng.integers(-1, 7, rows)
    weight = rng.uniform(0.5, 2.0, 5)
    kept = np.clip(labels[labels != -1], 0, 4)
    count = cuda_ce.mean_divisor(cupy.asarray(labels), None, 5, -1)
    assert float(count.get()) == kept.size
    weighted = cuda_ce.mean_divisor(cupy.asarray(labels), cupy.asarray(weight), 5, -1)
    assert float(weighted.get()) == pytest.approx(weight[kept].sum(), rel=1e-13)


@pytest.mark.parametrize("dtype, step", [("float16", 2.0**-10), ("bfloat16", 2.0**-7)])
def test_the_label_gradient_is_rounded_once_from_float64(cupy, dtype, step):
    """-w / d is rounded once from float64 to the storage type: a value just above a tie of
    the half type whose excess float32 drops would round to the tie, then to even, if
    rounded through float32 first."""
    above_tie = 1 + step / 2 + 2.0**-40  # float32 rounds it to the tie 1 + step / 2
    log_probs = np.full((2, 3), -1.0).astype(cases.numpy_dtype(dtype))
    weight = np.array([above_tie, 1.0, 1.0])
    _, _, grad = _call(cupy, log_probs, [0, 1], weight, divisor=1.0)
    assert grad[0, 0].astype(np.float64) == -(1 + step)  # rounded once: up, past the tie


@pytest.mark.slow
def test_past_two_to_the_31_elements(cupy):
    rows, classes = rows_past_int32(cupy, "log-probabilities")
    log_probs = cupy.zeros((rows, classes), dtype=cupy.float16)
    log_probs[-1, -1] = -4.0
    labels = cupy.full(rows, -100, dtype=cupy.int64)
    labels[-1] = classes - 1
    loss = cuda_nll.nll(log_probs, labels, None, log_probs, None, -100, 2.0)  # in place, to fit
    assert float(loss.get()) == 2.0
    assert float(log_probs[-1, -1].get()) == -0.5
    assert float(abs(log_probs[-1, :-1]).max().get()) == 0.0
    assert float(abs(log_probs[0]).max().get()) == 0.0


# --- on the emulator: launches and traffic ------------------------------------------------


@pytest.mark.emulated
def test_empty_batch_launches_only_the_finish(emulated):
    log_probs = emulated.empty((0, 10), np.float32)
    labels = emulated.empty(0, np.int64)
    with emulator.recording() as record:
        loss = cuda_nll.nll(log_probs, labels, None, log_probs, None, -100, 1.0)
    assert [launch.entry for launch in record.launches] == ["fl_nll_finish_float32"]
    assert loss.get() == 0


@pytest.mark.emulated
@pytest.mark.parametrize("classes", [3, 100, 700, 5000])
def test_rows_span_several_grid_strides(emulated, monkeypatch, classes):
    rows = cases.rows_over_grid_strides(monkeypatch, classes)
    case = cases.NllCase(rows, classes, weighted=True, in_place=True, invalid=True)
    with emulator.recording() as record:
        cases.run_nll(case, emulated)
    (main,) = [launch for launch in record.launches if launch.entry == "fl_nll_float32"]
    assert main.grid == (3, 1, 1)


def _sectors(begin: int, nbytes: int) -> int:
    """Bytes in the 32-byte sectors that cover ``[begin, begin + nbytes)``."""
    return 32 * ((begin + nbytes + 31) // 32 - begin // 32) if nbytes else 0


@pytest.mark.emulated
@pytest.mark.parametrize("grad", [True, False], ids=["with-grad", "forward"])
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("classes", [1, 2, 10, 100, 512, 513, 1000, 4097, 20000])
def test_reads_one_element_a_row_and_writes_the_gradient_once(emulated, classes, dtype, grad):
    rows = 24 if classes <= 1000 else 3
    case = cases.NllCase(rows, classes, dtype, weighted=True, invalid=True)
    log_probs, labels, weight = cases.nll_inputs(case)
    log_probs, weight = emulated.asarray(log_probs), emulated.asarray(weight)
    grad_out = emulated.empty(log_probs.shape, log_probs.dtype) if grad else None
    loss_out = emulated.empty(rows, np.float64)
    with emulator.recording(count_traffic=True) as record:
        cuda_nll.nll(log_probs, emulated.asarray(labels), weight, grad_out, loss_out, -100, 2.0)
    (main,) = [launch for launch in record.launches if "log_probs" in launch.args]
    valid = int(((labels >= 0) & (labels < classes)).sum())
    blocks = main.grid[0]
    gradient = {"grad_out": log_probs.nbytes} if grad else {}  # a null pointer is no buffer
    assert main.loaded == {"log_probs": valid * log_probs.itemsize, "labels": rows * 8,
                           "weight": valid * 8, "loss_out": 0, "partials": 0} | {
                               name: 0 for name in gradient}
    assert main.stored == {"log_probs": 0, "labels": 0, "weight": 0, "loss_out": rows * 8,
                           "partials": blocks * 8} | gradient
    assert main.read["log_probs"] <= valid * 32  # a sector per label read, no more
    if grad:
        # Whole sectors: each warp store covers 32 units from a multiple of 32
        # in memory. Two rows of a block each, or two rounds of rows, may
        # share the sector where they meet.
        once = _sectors(grad_out.__array_interface__["data"][0], grad_out.nbytes)
        assert once <= main.written["grad_out"] <= once + 32 * rows


# --- planted bugs: what the emulator finds ------------------------------------------------


def _with_blocks(check, blocks):
    """``check`` under a grid capped at ``blocks``, so that blocks loop over rows."""
    @functools.wraps(check)
    def run(cupy):
        with mock.patch.object(cuda_ce, "MAX_BLOCKS", blocks):
            check(cupy=cupy)
    return run


def _nll(*args, **kwargs):
    return functools.partial(cases.run_nll, cases.NllCase(*args, **kwargs))


# 700 classes: a block per row, hence the shared-memory hand-over; two blocks
# for seven rows, so each block runs several rounds.
BLOCK_ROWS = _with_blocks(_nll(7, 700, weighted=True, in_place=True), 2)
BUGS = {
    # (text, planted text, what the launch reports (None: a wrong result), the check)
    "label-bound-off-by-one": (
        "label < 0 || label >= classes", "label < 0 || label > classes", None,
        _nll(7, 10, invalid=True)),
    "span-bound-off-by-one": (
        # 64 rows a round: past the first round's slots, past the second's buffer.
        "j < n; j += blockDim.x", "j <= n; j += blockDim.x",
        "outside every buffer|that no thread of this block wrote", _nll(94, 10)),
    "packet-bound-off-by-one": (
        "p < packets; p += blockDim.x", "p <= packets; p += blockDim.x", "outside every buffer",
        _nll(7, 1000)),
    "int-label": (
        "const i64 label = labels[row];", "const int label = (int)labels[row];", None,
        _nll(7, 10, invalid=True)),
    "int-ignore-index-parameter": (
        "long long classes, long long ignore_index", "long long classes, int ignore_index",
        "np.int64, not np.int32", _nll(7, 10)),
    "dropped-barrier-before-writes": (
        "of their gradient.\n        __syncthreads();\n", "of their gradient.\n",
        "shared-memory race|that no thread of this block wrote", BLOCK_ROWS),
    "dropped-barrier-before-hand-over": (
        "of them).\n        __syncthreads();\n", "of them).\n",
        "shared-memory race", BLOCK_ROWS),
}


test_planted_bugs_fail, test_unplanted_checks_pass = planted_bug_tests("nll.cu", BUGS)
