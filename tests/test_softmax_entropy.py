"""fl.softmax_entropy against PyTorch's -(softmax * log_softmax).sum(-1) in float64."""

import numpy as np
import pytest
from conftest import (
    assert_close,
    assert_within_an_ulp,
    confident_rows,
    max_ulps,
    to_backend,
    to_host,
)

import fastloss as fl

torch = pytest.importorskip("torch")

SHAPES = [(1, 1), (7, 3), (300, 100), (70, 2000)]  # the last: Numba's threads


def _torch(z, reduction):
    """PyTorch's loss, and its gradient -p (log p + H) per row: autograd would give NaN
    through the 0 * -inf of a logit of -inf (test_gradient_formula_is_autograds checks the
    formula elsewhere)."""
    x = torch.tensor(np.asarray(z, np.float64))
    p, log_p = torch.softmax(x, 1), torch.log_softmax(x, 1)
    rows = -torch.where(p > 0, p * log_p, 0.0).sum(1)  # a logit of -inf adds 0
    grad = torch.where(p > 0, -p * (log_p + rows[:, None]), 0.0)
    if reduction == "mean":
        return rows.mean().numpy(), (grad / len(rows)).numpy()
    return (rows.sum() if reduction == "sum" else rows).numpy(), grad.numpy()


def test_gradient_formula_is_autograds():
    x = torch.tensor(_logits((5, 9)), requires_grad=True)
    (-(torch.softmax(x, 1) * torch.log_softmax(x, 1)).sum()).backward()
    np.testing.assert_allclose(_torch(x.detach().numpy(), "sum")[1], x.grad.numpy(), rtol=1e-12,
                               atol=1e-15)


def _logits(shape, seed=0):
    return np.random.default_rng(seed + shape[1]).standard_normal(shape) * 3


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_matches_torch(backend, dtype, shape, reduction):
    z = _logits(shape).astype(dtype)
    want_loss, want_grad = _torch(z, reduction)
    loss, grad = fl.softmax_entropy_with_grad(to_backend(z, backend), reduction=reduction,
                                              backend=backend)
    assert grad.dtype == dtype and grad.shape == shape
    assert_close(loss, want_loss, dtype)
    assert_close(grad, want_grad, dtype)
    alone = fl.softmax_entropy(to_backend(z, backend), reduction=reduction, backend=backend)
    assert to_host(alone).tobytes() == to_host(loss).tobytes()


def test_float16_is_computed_in_float32(backend):
    z = _logits((9, 40)).astype(np.float16)
    want_loss, want_grad = _torch(z, "mean")
    loss, grad = fl.softmax_entropy_with_grad(to_backend(z, backend), backend=backend)
    assert grad.dtype == np.float16
    assert_within_an_ulp(loss, want_loss, np.float16)
    assert_within_an_ulp(grad, want_grad, np.float16)


def test_extreme_rows_as_torch(backend, dtype):
    big = 1e30 if dtype == np.float32 else 1e300
    z = np.array([
        [big, -big, 0.0, 1.0],
        [-np.inf, 0.0, -np.inf, 2.0],
        [-big, -big, -big, -big],
        [5.0, 5.0, 5.0, 5.0],
    ]).astype(dtype)
    want_loss, want_grad = _torch(z, "none")
    loss, grad = fl.softmax_entropy_with_grad(to_backend(z, backend), reduction="none",
                                              backend=backend)
    assert_close(loss, want_loss, dtype)
    assert_close(grad, want_grad, dtype)
    np.testing.assert_allclose(to_host(loss)[3], np.log(4.0), rtol=1e-6)


@pytest.mark.parametrize("classes", [3, 32, 600], ids=["lane", "lanes", "block"])
def test_float64_maxima_far_apart(backend, classes):
    """Logits near float64's limits, whose differences overflow: a class of probability 0
    adds 0 (on cuda too, where the row's parts meet from different threads: from 32
    classes, a thread's share all -1e308 rebased to the row's 1e308, as a row of two
    lanes or of a block holds it)."""
    z = np.full((2, classes), -1e308)
    z[:, :3] = [[1e308, 0.0, -1e308], [-1e308, 1e308, 0.0]]
    # Every row is one-hot: entropy 0, gradient 0.
    loss, grad = fl.softmax_entropy_with_grad(to_backend(z, backend), reduction="none",
                                              backend=backend)
    assert_close(loss, np.zeros(2), np.float64)
    assert_close(grad, np.zeros_like(z), np.float64)


@pytest.mark.parametrize("classes", [3, 200])
def test_nan_infinite_and_all_minus_infinity_rows_are_nan(backend, classes):
    """As PyTorch: a row with NaN, with +inf (softmax inf / inf) or all -inf is NaN in
    every class of its gradient, the classes of probability 0 included."""
    z = np.tile(np.linspace(0.0, 2.0, classes), (4, 1))
    z[0, 0], z[1], z[2, 1] = np.nan, -np.inf, np.inf
    loss, grad = fl.softmax_entropy_with_grad(to_backend(z, backend), reduction="none",
                                              backend=backend)
    loss, grad = to_host(loss), to_host(grad)
    assert np.isnan(loss[:3]).all() and np.isnan(grad[:3]).all()
    assert np.isfinite(loss[3]) and np.isfinite(grad[3]).all()


@pytest.mark.parametrize("classes", [10, 100, 200, 1000])
def test_the_entropy_of_a_confident_row_keeps_its_digits(backend, dtype, classes):
    # H = log(1 + s) + sum_c e_c (max - z_c) / (1 + s), s = sum of the others' e_c, from
    # about 1e-26 to 0.5 (conftest.confident_rows): log(1 + s) from a sum rounded to an ulp
    # of 1 kept 1e-16 of it absolute. Within a few ulps of the exact entropy (two sums of
    # exponentials, each within two ulps on numba's float64 path).
    logits, _, excess = confident_rows(512, classes, dtype, seed=classes)
    z = logits.astype(np.longdouble)
    exact = np.log1p(excess) + (np.exp(z) * -z).sum(axis=1) / (1 + excess)
    result = fl.softmax_entropy(to_backend(logits, backend), reduction="none", backend=backend)
    assert max_ulps(result, exact, dtype) <= 8


def test_out_in_place_and_layouts(backend):
    z = _logits((6, 33)).astype(np.float32)
    expected = to_host(fl.softmax_entropy_grad(to_backend(z, backend), backend=backend))
    for layout in (np.asfortranarray, lambda a: np.repeat(a, 2, axis=1)[:, ::2]):
        np.testing.assert_array_equal(
            to_host(fl.softmax_entropy_grad(to_backend(layout(z), backend), backend=backend)),
            expected)
    inputs = to_backend(z.copy(), backend)
    out = to_backend(np.empty_like(z), backend)
    assert fl.softmax_entropy_grad(inputs, out=out, backend=backend) is out
    np.testing.assert_array_equal(to_host(out), expected)
    np.testing.assert_array_equal(to_host(inputs), z)  # not modified
    _, grad = fl.softmax_entropy_with_grad(inputs, out=inputs, backend=backend)
    assert grad is inputs
    np.testing.assert_array_equal(to_host(inputs), expected)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(5, 40), (70, 2100), (1500, 100)],
                         ids=["serial", "threads", "threads in lanes"])
def test_out_over_the_logits(backend, dtype, shape):
    """out=logits (the numba kernel keeps the exponentials in a scratch row) and out
    overlapping the logits a row further on give the bits of a separate out."""
    z = _logits(shape).astype(dtype)
    z[0, :2] = -np.inf
    loss, expected = fl.softmax_entropy_with_grad(z, reduction="none", backend=backend)
    inputs = z.copy()
    in_place_loss, grad = fl.softmax_entropy_with_grad(inputs, reduction="none", out=inputs,
                                                       backend=backend)
    assert grad is inputs
    np.testing.assert_array_equal(in_place_loss, loss)
    np.testing.assert_array_equal(grad, expected)
    buffer = np.concatenate([z, z[-1:]])
    shifted_loss, _ = fl.softmax_entropy_with_grad(buffer[:-1], reduction="none",
                                                   out=buffer[1:], backend=backend)
    np.testing.assert_array_equal(shifted_loss, loss)
    np.testing.assert_array_equal(buffer[1:], expected)


@pytest.mark.parametrize("classes", [1, 10, 128, 129, 192, 193])
def test_numba_rows_in_lanes_match_the_reference(classes):
    """Numba runs rows of at most 192 classes (ENTROPY_LANE_CLASSES) 64 at a time, in lanes:
    every row of every pass, a last pass of fewer rows, and blocks on Numba's threads (over
    2**17 elements), loss and gradient against the float64 reference; 193 classes go a row
    at a time."""
    pytest.importorskip("numba")
    z = _logits((2**17 // classes + 77, classes)).astype(np.float32)
    z[5, -1], z[70] = -np.inf, np.nan  # a class of probability 0, and a NaN row
    want_loss, want_grad = fl.softmax_entropy_with_grad(z, reduction="none", backend="numpy")
    loss, grad = fl.softmax_entropy_with_grad(z, reduction="none", backend="numba")
    assert_close(loss, want_loss, np.float32)
    assert_close(grad, want_grad, np.float32)
    total = fl.softmax_entropy(np.delete(z, 70, axis=0), reduction="sum", backend="numba")
    assert_close(total, np.delete(want_loss, 70).sum(), np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("classes", [200, 3 * 64 + 63])
def test_numba_rows_one_at_a_time_write_nothing_past_their_out(dtype, classes):
    """Rows of more than 192 classes go one at a time, a last partial chunk of classes
    masked: the gradient lands in ``out`` alone, a view with guard rows on either side, and
    no element of the guards changes."""
    pytest.importorskip("numba")
    z = _logits((3, classes)).astype(dtype)
    buffer = np.full((5, classes), 7.0, dtype)
    out = buffer[1:-1]
    loss = fl.softmax_entropy_with_grad(z, reduction="none", out=out, backend="numba")[0]
    want_loss, want_grad = _torch(z, "none")
    assert_close(loss, want_loss, dtype)
    assert_close(out, want_grad, dtype)
    assert (buffer[0] == 7.0).all() and (buffer[-1] == 7.0).all()


def test_empty_batch(backend):
    empty = to_backend(np.zeros((0, 4), np.float32), backend)
    assert np.isnan(to_host(fl.softmax_entropy(empty, backend=backend)))
    assert to_host(fl.softmax_entropy(empty, reduction="sum", backend=backend)) == 0


@pytest.mark.parametrize("call, error, match", [
    (lambda: fl.softmax_entropy(np.zeros(4)), ValueError, "logits must be 2-D"),
    (lambda: fl.softmax_entropy(np.zeros((2, 0))), ValueError, "k >= 1"),
    (lambda: fl.softmax_entropy(np.zeros((2, 3), int)), TypeError, "logits"),
    (lambda: fl.softmax_entropy(np.zeros((2, 3)), reduction="avg"), ValueError, "reduction"),
    (lambda: fl.softmax_entropy_grad(np.zeros((2, 3)), out=np.zeros((2, 3), np.float32)),
     TypeError, "out"),
])
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_dask_arrays_match_memory(reduction):
    dask = pytest.importorskip("dask")
    da = pytest.importorskip("dask.array")
    z = _logits((53, 11), seed=4)
    lazy = fl.softmax_entropy_with_grad(da.from_array(z, chunks=(10, 4)), reduction=reduction)
    assert lazy[1].chunks == ((10,) * 5 + (3,), (4, 4, 3))  # the input's, as documented
    loss, grad = dask.compute(*lazy)
    memory_loss, memory_grad = fl.softmax_entropy_with_grad(z, reduction=reduction)
    np.testing.assert_array_equal(grad, memory_grad)
    np.testing.assert_allclose(loss, memory_loss, rtol=1e-12)
    with pytest.raises(ValueError, match="2-D"):
        fl.softmax_entropy(da.zeros(5))
