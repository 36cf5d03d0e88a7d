"""fastloss on dask arrays: every chunking and option against float64 references and the
in-memory call; laziness; the same bits under every local scheduler; errors."""

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastloss as fl

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
fl_dask = pytest.importorskip("fastloss.dask")

REDUCTIONS = ["mean", "sum", "none"]
# Loss against the in-memory call; gradient against the float64 reference: (rtol, atol).
LOSS_TOLERANCE = {np.dtype(np.float32): (1e-6, 1e-7), np.dtype(np.float64): (1e-12, 1e-14)}
GRAD_TOLERANCE = {np.dtype(np.float32): (2e-5, 1e-7), np.dtype(np.float64): (1e-10, 1e-14)}
# Row and class chunks of a (53, 37) array: whole, rows, classes, both, odd and uneven.
CE_CHUNKS = {
    "whole": (-1, -1),
    "rows": (10, -1),
    "classes": (-1, 8),
    "both": (16, 10),
    "odd": ((1, 30, 22), (1, 35, 1)),
}
# name -> (target kind, options)
CE_OPTIONS = {
    "labels": ("labels", {}),
    "ignore-custom": ("labels", {"ignore_index": 3}),
    "smoothing": ("labels", {"label_smoothing": 0.2}),
    "weight": ("labels", {"weight": True}),
    "weight-smoothing": ("labels", {"weight": True, "label_smoothing": 0.1}),
    "probs": ("probs", {}),
    "probs-weight-smoothing": ("probs", {"weight": True, "label_smoothing": 0.3}),
}


@pytest.fixture(autouse=True)
def synchronous():
    """The scheduler is part of a test's parameters only where it says so. Dask runs the
    chunks in parallel; numba's thread team on each tiny chunk would only add its wake-up
    latency (milliseconds per call on a small VM), so the kernels run on one thread."""
    numba = pytest.importorskip("numba")
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    with dask.config.set(scheduler="synchronous"):
        yield
    numba.set_num_threads(threads)


def ce_case(shape, dtype, kind, options, seed=0):
    rows, classes = shape
    rng = np.random.default_rng(seed)
    logits = (3 * rng.standard_normal(shape)).astype(dtype)
    if kind == "probs":
        target = rng.random(shape).astype(dtype)
        target /= target.sum(axis=1, keepdims=True)
    else:
        target = rng.integers(0, classes, rows)
        target[::4] = options.get("ignore_index", -100)
    options = dict(options)
    if options.get("weight"):
        options["weight"] = rng.random(classes) + 0.5
    return logits, target, options


def assert_loss(actual, expected, dtype):
    rtol, atol = LOSS_TOLERANCE[np.dtype(dtype)]
    assert np.asarray(actual).dtype == dtype
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=rtol, atol=atol)


def assert_grad(actual, expected, dtype):
    rtol, atol = GRAD_TOLERANCE[np.dtype(dtype)]
    assert actual.dtype == dtype and actual.shape == expected.shape
    np.testing.assert_allclose(actual.astype(np.float64), expected, rtol=rtol, atol=atol)


def float64_reference(function, *arrays, **options):
    """The NumPy backend on float64 copies: the project's obviously-right reference."""
    arrays = [a.astype(np.float64) if a.dtype.kind == "f" else a for a in arrays]
    return function(*arrays, backend="numpy", **options)


# ---------------------------------------------------------------------------------------
# Values


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", CE_OPTIONS)
@pytest.mark.parametrize("chunks", CE_CHUNKS.values(), ids=CE_CHUNKS.keys())
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_cross_entropy_matches_memory_and_float64(dtype, chunks, case, reduction):
    kind, options = CE_OPTIONS[case]
    logits, target, options = ce_case((53, 37), dtype, kind, options)
    lazy_loss, lazy_grad = fl.softmax_cross_entropy_with_grad(
        da.from_array(logits, chunks=chunks), target, reduction=reduction, **options
    )
    assert lazy_grad.chunks == da.from_array(logits, chunks=chunks).chunks
    loss, grad = dask.compute(lazy_loss, lazy_grad)
    memory_loss, _ = fl.softmax_cross_entropy_with_grad(logits, target, reduction=reduction,
                                                        **options)
    want_loss, want_grad = float64_reference(fl.softmax_cross_entropy_with_grad, logits, target,
                                             reduction=reduction, **options)
    assert_loss(loss, memory_loss.astype(np.float64), dtype)
    assert_loss(loss, want_loss, dtype)
    assert_grad(grad, want_grad, dtype)
    assert type(loss) is type(memory_loss)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    "shape, chunks",
    [((1000,), 77), ((53, 37), (10, 8)), ((7, 9, 11), (2, (4, 5), 11)), ((), ()), ((0, 3), 1)],
    ids=["1d", "2d", "3d-uneven", "0d", "empty"],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_mse_matches_memory_bit_for_bit_in_the_gradient(dtype, shape, chunks, reduction):
    rng = np.random.default_rng(1)
    pred, target = (rng.standard_normal(shape).astype(dtype) for _ in range(2))
    lazy_pred = da.from_array(pred, chunks=chunks)
    lazy_loss, lazy_grad = fl.mse_with_grad(lazy_pred, da.from_array(target, chunks=7),
                                            reduction=reduction)
    assert lazy_grad.chunks == lazy_pred.chunks
    assert lazy_loss.chunks == (lazy_pred.chunks if reduction == "none" else ())
    loss, grad = dask.compute(lazy_loss, lazy_grad)
    memory_loss, memory_grad = fl.mse_with_grad(pred, target, reduction=reduction)
    # The kernel gets the whole mean's divisor: each element's gradient is the same number.
    np.testing.assert_array_equal(grad, memory_grad)
    if reduction == "none":
        np.testing.assert_array_equal(loss, memory_loss)
    elif pred.size:
        assert_loss(loss, np.float64(memory_loss), dtype)
        want = float64_reference(fl.mse, pred, target, reduction=reduction)
        assert_loss(loss, want, dtype)
    else:
        assert np.isnan(loss) if reduction == "mean" else loss == 0


def _elementwise_case(name, shape, dtype, rng):
    """``(function, x, target, options)``: valid inputs of the elementwise loss ``name``."""
    x = rng.standard_normal(shape).astype(dtype)
    target = rng.standard_normal(shape).astype(dtype)
    options = {}
    if name == "binary_cross_entropy_with_logits":
        target = (rng.random(shape) < 0.5).astype(dtype)
        options = {"weight": rng.uniform(0.5, 2, shape[-1:]),
                   "pos_weight": rng.uniform(0.5, 2, shape[-1:])}
    elif name == "binary_cross_entropy":
        x = rng.uniform(0.01, 0.99, shape).astype(dtype)
        target = rng.random(shape).astype(dtype)
        options = {"weight": rng.uniform(0.5, 2, shape)}
    elif name == "hinge":
        target = np.where(rng.random(shape) < 0.5, -1, 1).astype(dtype)
        options = {"margin": 0.5}
    elif name in ("smooth_l1", "huber"):
        options = {"beta": 0.5} if name == "smooth_l1" else {"delta": 0.5}
    elif name == "kl_div":
        options = {"log_target": True}
    return getattr(fl, f"{name}_with_grad"), x, target, options


ELEMENTWISE = ["l1", "smooth_l1", "huber", "binary_cross_entropy_with_logits",
               "binary_cross_entropy", "hinge", "kl_div"]


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_elementwise_family_matches_memory(name, reduction):
    dtype = np.float32
    with_grad, x, target, options = _elementwise_case(name, (53, 37), dtype,
                                                      np.random.default_rng(2))
    # Odd chunks; the per-element options go in as NumPy arrays and are chunked like x.
    lazy_x = da.from_array(x, chunks=((1, 30, 22), (10, 27)))
    lazy_loss, lazy_grad = with_grad(lazy_x, da.from_array(target, chunks=9),
                                     reduction=reduction, **options)
    assert lazy_grad.chunks == lazy_x.chunks
    loss, grad = dask.compute(lazy_loss, lazy_grad)
    memory_loss, memory_grad = with_grad(x, target, reduction=reduction, **options)
    np.testing.assert_array_equal(grad, memory_grad)
    if reduction == "none":
        np.testing.assert_array_equal(loss, memory_loss)
    else:
        assert_loss(loss, np.float64(memory_loss), dtype)


def test_kl_div_batchmean_divides_by_the_rows():
    x, target = np.random.default_rng(4).standard_normal((2, 53, 9))
    lazy = fl.kl_div_with_grad(da.from_array(x, chunks=(20, 4)), target, log_target=True,
                               reduction="batchmean")
    loss, grad = dask.compute(*lazy)
    memory_loss, memory_grad = fl.kl_div_with_grad(x, target, log_target=True,
                                                   reduction="batchmean")
    np.testing.assert_array_equal(grad, memory_grad)
    assert_loss(loss, np.float64(memory_loss), np.float64)


@pytest.mark.parametrize("name, bad", [("binary_cross_entropy", "probs must lie in"),
                                       ("hinge", "target")])
def test_elementwise_domain_errors_raise_when_computed(name, bad):
    with_grad, x, target, options = _elementwise_case(name, (6, 5), np.float64,
                                                      np.random.default_rng(3))
    if name == "binary_cross_entropy":
        x[4, 1] = 1.5
    else:
        target[4, 1] = 0.5
    loss, grad = with_grad(da.from_array(x, chunks=2), target, **options)  # nothing raised yet
    with pytest.raises(ValueError, match=bad):
        dask.compute(loss, grad)


@pytest.mark.parametrize("name", ["binary_cross_entropy", "hinge"])
def test_elementwise_domain_is_that_of_the_target_the_kernel_reads(name):
    # A float64 target rounded to the float32 input: 1 + 1e-12 is 1 (valid, also beside a
    # NaN input), 1 + 1e-7 stays past 1.
    x = np.array([0.2, np.nan, 0.9, 0.4], np.float32)
    other = 0.0 if name == "binary_cross_entropy" else -1.0
    with_grad = getattr(fl, f"{name}_with_grad")
    lazy = da.from_array(x, chunks=2)
    rounding = np.array([1 + 1e-12, other, 1.0, other])
    loss, grad = dask.compute(*with_grad(lazy, rounding, reduction="none"))
    memory_loss, memory_grad = with_grad(x, np.float32(rounding), reduction="none")
    np.testing.assert_array_equal(loss, memory_loss)
    np.testing.assert_array_equal(grad, memory_grad)
    with pytest.raises(ValueError, match="target"):
        dask.compute(*with_grad(lazy, np.array([1.0, other, 1 + 1e-7, other])))


@pytest.mark.parametrize("case", ["labels", "probs-weight-smoothing"])
def test_one_class_chunk_gradient_is_the_in_memory_gradient(case):
    kind, options = CE_OPTIONS[case]
    logits, target, options = ce_case((53, 37), np.float32, kind, options)
    grad = fl.softmax_cross_entropy_grad(da.from_array(logits, chunks=(10, -1)), target,
                                         **options).compute()
    np.testing.assert_array_equal(grad, fl.softmax_cross_entropy_grad(logits, target, **options))


@pytest.mark.parametrize("chunks", [(-1, -1), (3, 2)], ids=["whole", "classes"])
def test_three_functions_agree(chunks):
    logits, target, options = ce_case((20, 9), np.float32, "labels", {"label_smoothing": 0.1})
    lazy = da.from_array(logits, chunks=chunks)
    loss, grad = dask.compute(*fl.softmax_cross_entropy_with_grad(lazy, target, **options))
    assert fl.softmax_cross_entropy(lazy, target, **options).compute() == loss
    np.testing.assert_array_equal(fl.softmax_cross_entropy_grad(lazy, target, **options), grad)
    pred = da.from_array(logits, chunks=chunks)
    loss, grad = dask.compute(*fl.mse_with_grad(pred, pred.T.T + 1))
    assert fl.mse(pred, pred + 1).compute() == loss
    np.testing.assert_array_equal(fl.mse_grad(pred, pred + 1).compute(), grad)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_extreme_logits_across_class_chunks(dtype, label_smoothing):
    big = 3e38 if dtype == np.float32 else 1e300
    logits = np.array(
        [[1e30, -1e30, 0.0, 5.0], [-np.inf, -np.inf, 1.0, 0.0], [-1e30, -1e30, -1e30, 1e30],
         [big, 0.0, -1.0, 2.0], [0.0, 0.0, -np.inf, -np.inf]],
        dtype=dtype,
    )
    target = np.array([0, 2, 1, 3, 1])
    options = {"reduction": "none", "label_smoothing": label_smoothing}
    loss, grad = dask.compute(*fl.softmax_cross_entropy_with_grad(
        da.from_array(logits, chunks=(2, 2)), target, **options))
    memory_loss, memory_grad = fl.softmax_cross_entropy_with_grad(logits, target, **options)
    np.testing.assert_allclose(loss, memory_loss, rtol=1e-6)  # inf where the loss is inf
    np.testing.assert_allclose(grad, memory_grad, rtol=1e-6, atol=1e-7)
    assert np.isfinite(grad).all()


@pytest.mark.parametrize("targets", ["labels", "one-hot probabilities"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("classes, class_chunk", [(10, 3), (100, 40), (1000, 300)])
def test_a_confident_rows_loss_and_label_gradient_keep_their_digits_across_class_chunks(
        dtype, classes, class_chunk, targets):
    # As in memory (test_softmax_cross_entropy): each row's label holds its max logit, tied
    # in a third of the rows (in the same chunk or another), and its loss log(1 + s) and
    # label gradient -s / (1 + s) run from about 1e-26 to 0.5. Chunks that added s into
    # the max's 1, or took a probability's gradient as p - q, kept them to an ulp of 1.
    # (Imported here: test_dask_cluster's lean workers import this module, and conftest
    # loads numba.)
    from conftest import confident_rows, max_ulps

    rows = 256
    logits, labels, excess = confident_rows(rows, classes, dtype, seed=classes)
    chunks = (100, class_chunk)
    target = labels
    if targets == "one-hot probabilities":
        target = np.zeros_like(logits)
        target[np.arange(rows), labels] = 1
    loss, grad = dask.compute(*fl.softmax_cross_entropy_with_grad(
        da.from_array(logits, chunks=chunks), target, reduction="none"))
    _, sum_grad = dask.compute(*fl.softmax_cross_entropy_with_grad(
        da.from_array(logits, chunks=chunks), target, reduction="sum"))

    assert max_ulps(loss, np.log1p(excess), dtype) <= 6
    label_grad = sum_grad[np.arange(rows), labels]
    assert max_ulps(label_grad, -excess / (1 + excess), dtype) <= 6


@pytest.mark.parametrize("chunks", [(2, 1), (2, 2)])
def test_infinite_probability_target_across_class_chunks_is_inf_or_nan_as_in_memory(chunks):
    # An infinite target mass on the max class, on another class, on a -inf logit, and
    # against a -inf target: inf or NaN where the in-memory call (and PyTorch) has them,
    # also on the max class of a row whose sum of exponentials is below 2.
    inf = np.inf
    logits = np.array([[5.0, 1.0, 1.0], [5.0, 1.0, 1.0], [5.0, 1.0, 1.0], [0.0, -inf, 1.0],
                       [5.0, 1.0, 1.0]])
    target = np.array([[inf, 0.0, 0.0], [0.1, inf, 0.2], [inf, inf, 0.0], [0.5, inf, 0.0],
                       [inf, -inf, 0.0]])
    want = fl.softmax_cross_entropy_with_grad(logits, target, reduction="none", backend="numpy")
    got = dask.compute(*fl.softmax_cross_entropy_with_grad(
        da.from_array(logits, chunks=chunks), da.from_array(target, chunks=chunks),
        reduction="none"))
    for got_part, want_part in zip(got, want, strict=True):
        np.testing.assert_array_equal(np.isnan(got_part), np.isnan(want_part))
        np.testing.assert_array_equal(np.isinf(got_part), np.isinf(want_part))


@pytest.mark.parametrize("class_chunks", [(2, 0, 3), (0, 5), (2, 3, 0)],
                         ids=["middle", "first", "last"])
def test_an_empty_class_chunk_adds_nothing(class_chunks):
    logits = np.random.default_rng(5).standard_normal((4, 5))
    for target in (np.array([0, 1, 3, -100]), fl.softmax(logits[::-1].copy())):
        loss, grad = dask.compute(*fl.softmax_cross_entropy_with_grad(
            da.from_array(logits, chunks=((4,), class_chunks)), target, label_smoothing=0.1))
        memory_loss, memory_grad = fl.softmax_cross_entropy_with_grad(logits, target,
                                                                      label_smoothing=0.1)
        np.testing.assert_allclose(loss, memory_loss, rtol=1e-14)
        np.testing.assert_allclose(grad, memory_grad, rtol=1e-13, atol=1e-16)


def test_a_class_chunk_of_minus_inf_adds_nothing():
    # A masked vocabulary shard: its chunk is all -inf, the row's other chunks are not.
    logits = np.zeros((3, 6))
    logits[:, 3:] = -np.inf
    target = np.array([[0.5, 0.5, 0.0, 0.0, 0.0, 0.0]] * 3)
    loss, grad = dask.compute(*fl.softmax_cross_entropy_with_grad(
        da.from_array(logits, chunks=(2, 3)), target, reduction="none"))
    np.testing.assert_allclose(loss, np.log(3.0), rtol=1e-15)
    np.testing.assert_allclose(grad[:, :3], [[1 / 3 - 0.5, 1 / 3 - 0.5, 1 / 3]] * 3, rtol=1e-15)
    assert (grad[:, 3:] == 0).all()


@pytest.mark.parametrize("chunks", [(2, -1), (2, 2)], ids=["rows", "classes"])
def test_nan_propagates_and_ignored_rows_are_exactly_zero(chunks):
    logits = np.zeros((4, 4), np.float32)
    logits[0, 1] = np.nan
    logits[3] = np.nan  # ignored: no loss, no gradient, whatever its logits
    loss, grad = dask.compute(*fl.softmax_cross_entropy_with_grad(
        da.from_array(logits, chunks=chunks), np.array([0, 1, 2, -100]), reduction="none"))
    assert np.isnan(loss[0]) and np.isnan(grad[0]).all()
    assert np.isfinite(loss[1:]).all() and loss[3] == 0 and (grad[3] == 0).all()


@pytest.mark.parametrize("chunks", [(2, -1), (2, 2)], ids=["rows", "classes"])
def test_a_nan_row_of_no_weight_is_nan_but_an_ignored_one_is_zero(chunks):
    # -w_y log_softmax(z)_y with w_y = 0 and a NaN logit is NaN (PyTorch, and in memory);
    # so is a row of zero probabilities. An ignored row is 0 whatever its logits.
    logits = np.zeros((4, 4))
    logits[[0, 2, 3], 1] = np.nan
    labels, weight = np.array([0, 1, -100, 3]), np.array([0.0, 1.0, 1.0, 1.0])
    probabilities = np.full((4, 4), 0.25)
    probabilities[0] = 0.0
    for target, options in ((labels, {"weight": weight}), (probabilities, {})):
        want = fl.softmax_cross_entropy(logits, target, reduction="none", **options)
        got = fl.softmax_cross_entropy(da.from_array(logits, chunks=chunks), target,
                                       reduction="none", **options).compute()
        np.testing.assert_array_equal(got, want)
        assert np.isnan(got[0]) and np.isnan(got[3])
    assert np.isnan(got[2]) and np.isnan(want[2])  # probabilities: row 2 is kept, so NaN
    assert fl.softmax_cross_entropy(da.from_array(logits, chunks=chunks), labels,
                                    weight=weight, reduction="none").compute()[2] == 0


@pytest.mark.parametrize("chunks", [(2, -1), (2, 2)], ids=["rows", "classes"])
def test_empty_batch_and_every_row_ignored(chunks):
    empty = da.zeros((0, 5), chunks=chunks, dtype=np.float32)
    assert np.isnan(fl.softmax_cross_entropy(empty, np.zeros(0, int)).compute())
    assert fl.softmax_cross_entropy(empty, np.zeros(0, int), reduction="sum").compute() == 0
    logits = da.ones((4, 5), chunks=chunks, dtype=np.float32)
    loss, grad = dask.compute(*fl.softmax_cross_entropy_with_grad(logits, np.full(4, -100)))
    assert np.isnan(loss) and (grad == 0).all()


@pytest.mark.parametrize("chunks", [(2, -1), (2, 2)], ids=["rows", "classes"])
@pytest.mark.parametrize("options", [{}, {"label_smoothing": 0.1}, {"weight": np.ones(5)}],
                         ids=["plain", "smoothing", "weight"])
def test_empty_batch_of_probabilities_has_the_in_memory_mean_gradient(chunks, options):
    # The "mean" of an empty batch of probability targets divides by 0 rows: in memory that
    # is a NaN loss and an empty gradient; several class chunks must not raise
    # ZeroDivisionError (their gradient task computed the Python float 1.0 / 0.0).
    probs = np.full((0, 5), 0.2, dtype=np.float32)
    logits = da.zeros((0, 5), chunks=chunks, dtype=np.float32)
    want_loss, want_grad = fl.softmax_cross_entropy_with_grad(probs * 0, probs, **options)
    loss, grad = dask.compute(*fl.softmax_cross_entropy_with_grad(
        logits, da.from_array(probs, chunks=chunks), **options))
    assert np.isnan(loss) and np.isnan(want_loss)
    assert grad.shape == want_grad.shape == (0, 5) and grad.dtype == want_grad.dtype
    assert fl.softmax_cross_entropy_grad(logits, probs, **options).compute().shape == (0, 5)


@pytest.mark.parametrize("chunks", [(30, -1), (30, 16)], ids=["rows", "classes"])
def test_half_precision(chunks):
    logits, target, options = ce_case((70, 33), np.float16, "labels", {"label_smoothing": 0.1})
    loss, grad = dask.compute(*fl.softmax_cross_entropy_with_grad(
        da.from_array(logits, chunks=chunks), target, reduction="sum", **options))
    want_loss, want_grad = float64_reference(fl.softmax_cross_entropy_with_grad, logits, target,
                                             reduction="sum", **options)
    assert loss.dtype == np.float16 and grad.dtype == np.float16
    np.testing.assert_allclose(float(loss), want_loss, rtol=1e-3)
    np.testing.assert_allclose(grad.astype(np.float64), want_grad, rtol=4e-3, atol=1e-3)


def test_targets_and_weights_are_aligned_to_the_logits_chunks():
    logits, target, options = ce_case((53, 37), np.float64, "probs", {"weight": True})
    lazy = fl.softmax_cross_entropy_with_grad(
        da.from_array(logits, chunks=(16, 10)), da.from_array(target, chunks=(7, 5)),
        weight=da.from_array(options["weight"], chunks=3),
    )
    loss, grad = dask.compute(*lazy)
    want_loss, want_grad = float64_reference(fl.softmax_cross_entropy_with_grad, logits, target,
                                             weight=options["weight"])
    assert_loss(loss, want_loss, np.float64)
    assert_grad(grad, want_grad, np.float64)


@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(1, 40), classes=st.integers(1, 40), row_chunk=st.integers(1, 40),
    class_chunk=st.integers(1, 40), smoothing=st.sampled_from([0.0, 0.25]),
    reduction=st.sampled_from(REDUCTIONS), seed=st.integers(0, 2**16),
)
def test_hypothesis_any_chunking_matches_float64(rows, classes, row_chunk, class_chunk,
                                                 smoothing, reduction, seed):
    logits, target, options = ce_case((rows, classes), np.float64, "labels",
                                      {"label_smoothing": smoothing, "weight": True}, seed)
    loss, grad = dask.compute(*fl.softmax_cross_entropy_with_grad(
        da.from_array(logits, chunks=(row_chunk, class_chunk)), target, reduction=reduction,
        **options))
    want_loss, want_grad = float64_reference(fl.softmax_cross_entropy_with_grad, logits, target,
                                             reduction=reduction, **options)
    if reduction == "mean" and np.isnan(want_loss):  # every row ignored
        assert np.isnan(loss)
    else:
        assert_loss(loss, want_loss, np.float64)
    assert_grad(grad, want_grad, np.float64)


@pytest.mark.parametrize("chunks", [(2, -1), (2, 2)], ids=["rows", "classes"])
def test_underflow_in_the_tasks_is_ieees_zero_under_the_callers_errstate(chunks):
    # exp(-2000) underflows to 0 in the tasks (a class shard's sums moved to the row's max):
    # IEEE's 0, as in memory, and no FloatingPointError where the caller's errstate reaches
    # the tasks (the synchronous scheduler runs them in the caller's context).
    logits = np.array([[0, 2000, -2000, 1], [-2000, 0, 2000, 3], [5, 6, -2000, 2000]] * 2,
                      dtype=np.float64)
    labels = np.array([0, 1, 2, 3, 0, 2])
    want = fl.softmax_cross_entropy_with_grad(logits, labels, backend="numpy")
    with np.errstate(all="raise"):
        got = dask.compute(*fl.softmax_cross_entropy_with_grad(
            da.from_array(logits, chunks=chunks), da.from_array(labels, chunks=chunks[0]),
            backend="numpy"))
    np.testing.assert_allclose(got[0], want[0], rtol=1e-12)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-12, atol=0)


# ---------------------------------------------------------------------------------------
# Laziness, determinism, dispatch


def test_nothing_is_computed_before_compute():
    calls = []

    def counted(block):
        calls.append(block.shape)
        return block

    rng = np.random.default_rng(2)
    logits = da.from_array(rng.standard_normal((40, 12)), chunks=(10, 5)).map_blocks(counted)
    labels = da.from_array(rng.integers(0, 12, 40), chunks=10).map_blocks(counted)
    calls.clear()  # map_blocks tried its function on empty arrays to learn the chunk type
    results = [
        fl.softmax_cross_entropy_with_grad(logits, labels, weight=np.ones(12)),
        fl.softmax_cross_entropy_with_grad(logits.rechunk((10, -1)), labels),
        fl.softmax_cross_entropy(logits, labels, reduction="none"),
        fl.mse_with_grad(logits, logits + 1),
        fl.mse(logits, logits, reduction="none"),
    ]
    assert calls == []
    dask.compute(results)
    assert calls


def test_import_fastloss_does_not_import_dask():
    code = "import sys, fastloss; print('dask' in sys.modules, 'array_api_compat' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.split() == ["False", "False"]


def test_query_planning_arrays_are_refused_with_the_setting_to_change():
    # The skip is decided by dask (an array without to_delayed), never by fastloss's answer.
    code = ("import dask.array as da, fastloss as fl\n"
            "print(hasattr(da.ones(3), 'to_delayed'))\n"
            "try:\n    fl.mse(da.ones(3), da.ones(3))\n"
            "except TypeError as exc:\n    print(exc)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, env={**os.environ, "DASK_ARRAY__QUERY_PLANNING": "True"})
    classic, _, message = result.stdout.partition("\n")
    if classic == "True":
        pytest.skip("this dask has no array query-planning implementation to refuse")
    assert "pred is a dask array of the experimental query-planning" in message


def test_dask_arrays_are_routed_by_type_whatever_the_position():
    logits = np.zeros((4, 3), np.float32)
    lazy = fl.softmax_cross_entropy(logits, np.zeros(4, int), weight=da.ones(3))
    assert isinstance(lazy, da.Array) and lazy.shape == ()
    assert isinstance(fl.mse_grad(np.zeros(3), target=da.zeros(3)), da.Array)
    assert fl.mse_with_grad.__doc__ == fl.losses.mse.mse_with_grad.__doc__


def float64_losses():
    """Float64 losses of many chunks (deep trees), one per path: MSE, rows, classes."""
    rng = np.random.default_rng(3)
    values = rng.standard_normal((600, 50)) * np.logspace(-3, 3, 50)
    logits = da.from_array(values, chunks=(15, 50))
    labels = rng.integers(0, 50, 600)
    return (
        fl.mse(da.from_array(values, chunks=(20, 25)), da.zeros_like(logits)),
        fl.softmax_cross_entropy(logits, labels, label_smoothing=0.1, weight=np.arange(50.0)),
        fl.softmax_cross_entropy(logits.rechunk((30, 13)), labels, label_smoothing=0.1),
    )


@pytest.mark.parametrize(
    "scheduler",
    [{"scheduler": "threads", "num_workers": 1}, {"scheduler": "threads", "num_workers": 2},
     {"scheduler": "processes", "num_workers": 2}],
    ids=["threads-1", "threads-2", "processes-2"],
)
def test_same_bits_under_every_local_scheduler(scheduler):
    expected = dask.compute(float64_losses(), scheduler="synchronous")[0]
    for _ in range(2 if scheduler["scheduler"] == "threads" else 1):
        assert dask.compute(float64_losses(), **scheduler)[0] == expected


@pytest.mark.parametrize("fan_in", [2, 4, 16])
def test_tree_of_tasks_has_the_bits_of_one_pairwise_sum(monkeypatch, fan_in):
    rng = np.random.default_rng(4)
    monkeypatch.setattr(fl_dask, "FAN_IN", fan_in)
    for count in [1, 2, 3, 5, 16, 17, 31, 33, 100, 257]:
        values = list(rng.standard_normal(count) * np.logspace(-8, 8, count))
        partials = [dask.delayed(value) for value in values]
        assert fl_dask._tree_sum(partials).compute() == fl_dask.pairwise_sum(values)


# ---------------------------------------------------------------------------------------
# Errors


def test_bad_inputs_name_the_argument():
    logits = da.zeros((4, 3), chunks=2)
    labels = np.zeros(4, int)
    with pytest.raises(TypeError, match="out= is not supported for dask arrays"):
        fl.softmax_cross_entropy_grad(logits, labels, out=np.empty((4, 3)))
    with pytest.raises(ValueError, match=r"target of class indices must have shape \(N,\)"):
        fl.softmax_cross_entropy(logits, np.zeros(5, int))
    with pytest.raises(ValueError, match="logits must be 2-D"):
        fl.softmax_cross_entropy(da.zeros(3), labels[:3])
    with pytest.raises(TypeError, match="holds class indices, which must be integers"):
        fl.softmax_cross_entropy(logits, np.zeros(4))
    with pytest.raises(TypeError, match="target must be integer class indices"):
        fl.softmax_cross_entropy(logits, np.zeros(4, bool))
    with pytest.raises(ValueError, match=r"weight must have shape \(k,\)"):
        fl.softmax_cross_entropy(logits, labels, weight=np.ones(4))
    with pytest.raises(ValueError, match="reduction must be"):
        fl.mse(logits, logits, reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        fl.softmax_cross_entropy(logits, labels, label_smoothing=1.5)
    with pytest.raises(TypeError, match="pred must be a floating-point array"):
        fl.mse(da.zeros(3, dtype=int), np.zeros(3))
    with pytest.raises(ValueError, match="target must have the shape of pred"):
        fl.mse(da.zeros(3), np.zeros(4))
    with pytest.raises(TypeError, match="target must be a floating-point array"):
        fl.mse(da.zeros(3), None)
    with pytest.raises(ValueError, match="backend must be one of"):
        fl.mse(da.zeros(3), da.zeros(3), backend="gpu")
    with pytest.raises(ValueError, match=r"pos_weight must be broadcastable to the input's"):
        fl.binary_cross_entropy_with_logits(logits, logits, pos_weight=np.ones(4))
    with pytest.raises(TypeError, match="weight must be a real-valued array"):
        fl.binary_cross_entropy(logits, logits, weight=da.zeros(3, dtype=bool))
    with pytest.raises(ValueError, match="beta must be a finite number >= 0"):
        fl.smooth_l1(logits, logits, beta=-1.0)
    unknown = da.zeros(6, chunks=3)[da.zeros(6, chunks=3) == 0]
    with pytest.raises(ValueError, match="pred has unknown chunk sizes"):
        fl.mse(unknown, unknown)
    # Two such arrays: their shapes hold distinct NaNs, which compare unequal.
    rows = da.zeros((6, 2), chunks=3)[da.zeros(6, chunks=3) == 0]
    with pytest.raises(ValueError, match="pred has unknown chunk sizes"):
        fl.mse(rows, da.zeros((6, 2), chunks=3)[da.zeros(6, chunks=3) == 0])
    with pytest.raises(ValueError, match="weight has unknown chunk sizes"):
        fl.binary_cross_entropy_with_logits(logits, logits * 0 + 0.5, weight=logits[logits > 0])
    # Every argument of the row-wise functions too, not only the logits.
    rows = da.from_array(np.zeros((6, 3)), chunks=2)
    unknown_labels = da.zeros(7, dtype=np.int64, chunks=3)[:-1][da.ones(6, chunks=3) > 0]
    unknown_weight = da.ones(3, chunks=3)[da.ones(3, chunks=3) > 0]
    for call, argument in (
        (lambda: fl.softmax_cross_entropy(rows, unknown_labels), "target"),
        (lambda: fl.nll(rows, da.zeros(6, dtype=int), weight=unknown_weight), "weight"),
        (lambda: fl.multi_margin(rows, unknown_labels), "target"),
        (lambda: fl.softmax_cross_entropy(rows, rows[rows[:, 0] == 0]), "target"),
        (lambda: fl.softmax_backward(rows, rows[rows[:, 0] == 0]), "grad_p"),
    ):
        with pytest.raises(ValueError, match=f"{argument} has unknown chunk sizes"):
            call()
    for option in ({"check_labels": "yes"}, {"check_labels": None}):
        for function in (fl.softmax_cross_entropy, fl.nll, fl.multi_margin):
            with pytest.raises(TypeError, match="check_labels must be a bool"):
                function(logits, labels, **option)


def test_softmax_functions_name_the_arrays_shape():
    # The shapes of the lazy arrays themselves, not of the empty chunks they are typed by.
    with pytest.raises(ValueError, match=r"z must be 2-D .* got shape \(10,\)"):
        fl.softmax(da.zeros(10, dtype=np.float32))
    with pytest.raises(ValueError, match=r"z must be 2-D .* got shape \(2, 4, 10\)"):
        fl.log_softmax(da.zeros((2, 4, 10), dtype=np.float32))
    with pytest.raises(ValueError, match=r"p must be 2-D .* got shape \(10,\)"):
        fl.softmax_backward(da.zeros(10), da.zeros(10))
    with pytest.raises(ValueError, match=r"grad_p must have the shape of p \(3, 4\); got \(10,\)"):
        fl.softmax_backward(da.zeros((3, 4)), da.zeros(10))
    with pytest.raises(TypeError, match="z must be a floating-point array"):
        fl.softmax(da.zeros((3, 4), dtype=int))
    with pytest.raises(TypeError, match="grad_logp must have the dtype of logp float64"):
        fl.log_softmax_backward(da.zeros((3, 4)), da.zeros((3, 4), dtype=np.float32))


@pytest.mark.parametrize("chunks", [(2, -1), (2, 2), (2, 1)])
def test_a_mean_over_labels_of_no_weight_is_nan(chunks):
    """As in memory (PyTorch's 0 / 0), also where label smoothing leaves a sum that is not 0,
    in one class chunk or several: NaN in the kept rows' gradients, 0 in the ignored one's."""
    logits = np.array([[0.1, 0.2, 0.3], [0.4, -0.2, 0.0], [1.0, 2.0, 3.0], [0.0, 0.0, 1.0]])
    labels, weight = np.array([0, -100, 0, 0]), np.array([0.0, 1.0, 1.0])
    for smoothing in (0.0, 0.1):
        loss, grad = fl.softmax_cross_entropy_with_grad(
            da.from_array(logits, chunks=chunks), labels, weight=weight,
            label_smoothing=smoothing)
        want_loss, want_grad = fl.softmax_cross_entropy_with_grad(
            logits, labels, weight=weight, label_smoothing=smoothing)
        assert np.isnan(loss.compute()) and np.isnan(want_loss)
        np.testing.assert_array_equal(grad.compute(), want_grad)
        assert np.isnan(want_grad[[0, 2, 3]]).all() and (want_grad[1] == 0).all()


@pytest.mark.parametrize("chunks", [(3, 2), (3, 1)])
def test_a_row_of_no_mass_and_non_finite_logits_has_the_in_memory_gradient(chunks):
    """A kept row whose target weighs nothing (a label of weight 0, probabilities of 0) is
    0 * log_softmax: NaN across the row where its logits hold inf or are all -inf, as in
    memory and in PyTorch, whichever class chunk holds the inf."""
    logits = np.zeros((3, 4))
    logits[0, 1] = np.inf
    logits[1] = -np.inf
    logits[2, 3] = np.inf
    weight = np.array([0.0, 1.0, 1.0, 1.0])
    for target, options in ((np.array([0, 0, 0]), {"weight": weight}),
                            (np.zeros((3, 4)), {})):
        want = fl.softmax_cross_entropy_with_grad(logits, target, reduction="sum", **options)
        got = fl.softmax_cross_entropy_with_grad(
            da.from_array(logits, chunks=chunks),
            da.from_array(target, chunks=chunks if target.ndim == 2 else chunks[0]),
            reduction="sum", **options)
        np.testing.assert_array_equal(got[1].compute(), want[1])
        assert np.isnan(want[1]).all()


def test_invalid_label_raises_when_computed():
    for chunks in [(2, -1), (2, 2)]:
        loss = fl.softmax_cross_entropy(da.zeros((4, 3), chunks=chunks), np.array([0, 1, 3, 2]))
        with pytest.raises(ValueError, match=r"class index 3, outside \[0, 3\)"):
            loss.compute()
        # A uint64 label past int64's range is named (it does not wrap to -1).
        huge = np.array([0, 1, 2**64 - 1, 2], np.uint64)
        for function, options in ((fl.softmax_cross_entropy, {"ignore_index": -1}),
                                  (fl.softmax_cross_entropy, {"ignore_index": 2**63 - 1}),
                                  (fl.nll, {"ignore_index": 2**63 - 1}), (fl.multi_margin, {})):
            loss = function(da.zeros((4, 3), chunks=chunks), huge, **options)
            with pytest.raises(ValueError, match=f"class index {2**64 - 1}, past int64's range"):
                loss.compute()


@pytest.mark.parametrize("chunks", [(3, -1), (3, 2)], ids=["rows", "classes"])
def test_infinite_weight_of_an_unused_class_adds_nothing(chunks):
    logits = np.random.default_rng(4).standard_normal((6, 5))
    labels = np.array([-100, 2, 3, 4, 1, 2])
    weight = np.array([np.inf, 1.0, 2.0, 1.0, 1.0])
    for reduction in ("mean", "sum"):
        want = fl.softmax_cross_entropy_with_grad(logits, labels, weight=weight,
                                                  reduction=reduction)
        got = dask.compute(*fl.softmax_cross_entropy_with_grad(
            da.from_array(logits, chunks=chunks), labels, weight=weight, reduction=reduction))
        assert np.isfinite(got[0]) and np.isfinite(got[1]).all()
        np.testing.assert_allclose(got[0], want[0], rtol=1e-12)
        np.testing.assert_allclose(got[1], want[1], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("chunks", [(1, -1), (1, 2)], ids=["rows", "classes"])
def test_infinite_weight_on_a_row_max_class_gives_inf(chunks):
    # Each row's label is its largest logit and weighs inf: -w log_softmax is inf, as in
    # memory and in PyTorch; the term of the class at the reference must not make it NaN.
    logits = np.array([[3.0, 1.0, 0.5, -1.0], [0.0, 2.0, 1.0, 0.5]])
    labels = np.array([0, 1])
    weight = np.array([np.inf, np.inf, 1.0, 1.0])
    for reduction in ("none", "sum"):
        want = fl.softmax_cross_entropy_with_grad(logits, labels, weight=weight,
                                                  reduction=reduction)
        got = dask.compute(*fl.softmax_cross_entropy_with_grad(
            da.from_array(logits, chunks=chunks), labels, weight=weight, reduction=reduction))
        assert np.all(got[0] == np.inf)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("function", ["softmax_cross_entropy", "nll"])
def test_weighted_mean_with_ignore_index_past_the_classes(function):
    # ignore_index = k names no class: its rows add no weight to the mean's divisor.
    x = np.random.default_rng(0).standard_normal((8, 4))
    labels = np.array([0, 1, 4, 2, 3, 4, 1, 0])
    weight = np.array([1.0, 2.0, 3.0, 4.0])
    want = getattr(fl, function)(x, labels, weight=weight, ignore_index=4)
    got = getattr(fl, function)(da.from_array(x, chunks=(3, 4)), da.from_array(labels, chunks=3),
                                weight=weight, ignore_index=4)
    np.testing.assert_allclose(got.compute(), want, rtol=1e-12)


@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_class_chunks_refuse_an_invalid_label_without_a_mean(reduction):
    # Without a "mean", whose divisor pass checks the labels too, the statistics pass does.
    x = da.from_array(np.zeros((4, 6)), chunks=(2, 3))
    labels = da.from_array(np.array([0, 6, 1, 2]), chunks=2)
    with pytest.raises(ValueError, match=r"class index 6, outside \[0, 6\)"):
        fl.softmax_cross_entropy(x, labels, reduction=reduction).compute()


def test_shard_sums_make_an_invalid_label_nan():
    """The class-shard code's own contract, for callers that do not check labels (CUDA
    without check_labels): a label outside [0, k) makes its row NaN, k itself included."""
    from fastloss import _class_shards as shards

    logits, labels = np.zeros((2, 3)), np.array([3, 1])
    _, _, mass, _ = shards.shard_sums(logits, shards.row_max(logits),
                                      shards.ShardTarget(start=0, classes=3, labels=labels))
    assert np.isnan(mass[0]) and mass[1] == 1.0
    assert np.isnan(shards.label_mass(labels, -100, 3)[0])


def test_ignored_row_adds_nothing_under_smoothing_and_an_infinite_weight():
    logits = np.array([[1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 2.0, 3.0]])
    labels = np.array([0, -100])
    weight = np.array([1.0, 1.0, 1.0, np.inf])
    want = fl.softmax_cross_entropy(logits, labels, weight=weight, label_smoothing=0.1,
                                    reduction="none")
    for chunks in [(1, 2), (1, -1)]:
        got = fl.softmax_cross_entropy(da.from_array(logits, chunks=chunks), labels,
                                       weight=weight, label_smoothing=0.1, reduction="none")
        np.testing.assert_array_equal(got.compute().ravel(), want)  # [inf, 0]


@pytest.mark.parametrize("function", ["nll", "multi_margin"])
def test_losses_over_labels_only_refuse_a_target_of_probabilities(function):
    """nll and multi_margin take class indices only, as in memory: a float target of the
    input's own (N, k) shape is the TypeError of the call, when the graph is built."""
    x = np.random.default_rng(5).standard_normal((6, 4))
    probabilities = np.full((6, 4), 0.25)
    with pytest.raises(TypeError, match="target holds class indices, which must be integers"):
        getattr(fl, function)(x, probabilities)
    with pytest.raises(TypeError, match="target holds class indices, which must be integers"):
        getattr(fl, function)(da.from_array(x, chunks=(3, 2)), probabilities)


def test_per_element_weights_of_other_chunks_keep_the_inputs_chunks():
    """Lazy weights chunked their own way are rechunked to the input's chunks: the gradient
    has the input's chunks, and the values of the in-memory call."""
    rng = np.random.default_rng(6)
    x, target = rng.standard_normal((2, 12, 10))
    weight, pos_weight = rng.uniform(0.5, 2, (12, 10)), rng.uniform(0.5, 2, 10)
    target = (target > 0).astype(np.float64)
    lazy_x = da.from_array(x, chunks=(5, 4))
    loss, grad = fl.binary_cross_entropy_with_logits_with_grad(
        lazy_x, target, weight=da.from_array(weight, chunks=(7, 3)),
        pos_weight=da.from_array(pos_weight, chunks=6), reduction="sum")
    assert grad.chunks == lazy_x.chunks
    want_loss, want_grad = fl.binary_cross_entropy_with_logits_with_grad(
        x, target, weight=weight, pos_weight=pos_weight, reduction="sum")
    np.testing.assert_array_equal(grad.compute(), want_grad)
    assert_loss(loss.compute(), np.float64(want_loss), np.float64)


@pytest.mark.parametrize("case", ["labels", "weight-smoothing", "probs-weight-smoothing"])
def test_class_chunks_split_into_slabs_of_rows_match_float64(monkeypatch, case):
    # A shard's rows are handled a slab at a time (SLAB_ELEMENTS logits): slabs of 3 rows of
    # an 8-class chunk, the last slab short, must give every row its own loss and gradient.
    shards = pytest.importorskip("fastloss._class_shards")
    monkeypatch.setattr(shards, "SLAB_ELEMENTS", 3 * 8)
    kind, options = CE_OPTIONS[case]
    logits, target, options = ce_case((53, 37), np.float64, kind, options)
    options["reduction"] = "none"
    loss, grad = dask.compute(*fl.softmax_cross_entropy_with_grad(
        da.from_array(logits, chunks=(-1, 8)), target, **options))
    expected = float64_reference(fl.softmax_cross_entropy_with_grad, logits, target, **options)
    assert_loss(loss, expected[0], np.float64)
    assert_grad(grad, expected[1], np.float64)


def test_pairwise_sum_splits_at_the_largest_power_of_two_below_the_count():
    # Values whose float sum depends on the order of addition, so that each tree has its bits.
    values = [np.float64(v) for v in (1e16, 1.0, -1e16, 1.0, 3.0, 1e-3, 7.0)]
    a, b, c, d, e, f, g = values
    assert fl_dask.pairwise_sum(values) == ((a + b) + (c + d)) + ((e + f) + g)
    assert fl_dask.pairwise_sum(values[:6]) == ((a + b) + (c + d)) + (e + f)
    assert fl_dask.pairwise_sum(values[:3]) == (a + b) + c
    assert fl_dask.pairwise_sum(values[:1]) == a and fl_dask.pairwise_sum([]) == 0.0


def test_partials_are_summed_in_row_major_block_order():
    # Block partials of very different magnitudes: their order in the fixed tree shows in
    # the bits. Each block's partial is its in-memory sum (the same kernel, divisor 1).
    rng = np.random.default_rng(2)
    scale = np.repeat(np.repeat(10.0 ** rng.uniform(-8, 8, (3, 2)), 2, axis=0), 3, axis=1)
    pred = rng.standard_normal((6, 6)) * scale
    target = rng.standard_normal((6, 6))
    chunks = ((2, 2, 2), (3, 3))
    loss = fl.mse(da.from_array(pred, chunks=chunks), target, reduction="sum").compute()
    partials = [np.float64(fl.mse(pred[r:r + 2, c:c + 3], target[r:r + 2, c:c + 3],
                                  reduction="sum"))
                for r in (0, 2, 4) for c in (0, 3)]
    assert loss == fl_dask.pairwise_sum(partials)
    transposed = [partials[i] for i in (0, 2, 4, 1, 3, 5)]
    assert fl_dask.pairwise_sum(transposed) != fl_dask.pairwise_sum(partials)  # order shows
