"""fl.multi_margin against torch.nn.functional.multi_margin_loss in float64, on every backend."""

import numpy as np
import pytest
from conftest import assert_close, to_backend, to_host

import fastloss as fl

torch = pytest.importorskip("torch")
F = torch.nn.functional

SHAPES = [(1, 1), (7, 3), (300, 100), (70, 2000)]  # the last: Numba's threads


def _case(shape, seed=0):
    rng = np.random.default_rng(seed + shape[1])
    return (rng.standard_normal(shape) * 0.5, rng.integers(0, shape[1], shape[0]),
            rng.uniform(0.5, 2.0, shape[1]))


def _torch(x, labels, weight, reduction, **options):
    leaf = torch.tensor(np.asarray(x, np.float64), requires_grad=True)
    w = None if weight is None else torch.tensor(weight)
    loss = F.multi_margin_loss(leaf, torch.tensor(labels), weight=w, reduction=reduction,
                               **options)
    loss.sum().backward()
    return loss.detach().numpy(), leaf.grad.numpy()


def _run(backend, x, labels, weight=None, **options):
    return fl.multi_margin_with_grad(to_backend(x, backend), to_backend(labels, backend),
                                     weight=to_backend(weight, backend), backend=backend,
                                     **options)


@pytest.mark.parametrize("options", [{}, {"p": 2, "margin": 0.3}], ids=["p1", "p2-margin"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_matches_torch(backend, dtype, shape, reduction, weighted, options):
    x, labels, weight = _case(shape)
    weight = weight if weighted else None
    x = x.astype(dtype)
    want_loss, want_grad = _torch(x, labels, weight, reduction, **options)
    loss, grad = _run(backend, x, labels, weight, reduction=reduction, **options)
    assert grad.dtype == dtype and grad.shape == shape
    assert_close(loss, want_loss, dtype)
    assert_close(grad, want_grad, dtype)


def test_ties_and_extremes_as_torch(backend):
    # Terms exactly 0 (ties at the margin) have derivative 0, as in PyTorch, and a term
    # whose margin - x_y + x_j is NaN (a NaN score, inf - inf) adds nothing.
    x = np.array([[0.0, -1.0, 2.0], [1e30, 0.0, -1e30], [0.5, 0.5, 0.5], [np.nan, 0.0, 1.0],
                  [0.0, np.nan, 1.0], [np.inf, 0.0, np.inf], [-np.inf, 0.0, 1.0]])
    labels = np.array([0, 1, 2, 1, 1, 0, 1])
    for p in (1, 2):
        want_loss, want_grad = _torch(x, labels, None, "none", p=p)
        loss, grad = _run(backend, x, labels, reduction="none", p=p)
        np.testing.assert_allclose(to_host(loss), want_loss, rtol=1e-12)
        np.testing.assert_allclose(to_host(grad), want_grad, rtol=1e-12)
        # A zero gradient is +0 where PyTorch's is, the label's too (0 - 0, not -0).
        np.testing.assert_array_equal(np.signbit(to_host(grad)), np.signbit(want_grad))


@pytest.mark.parametrize("classes", [2, 200], ids=["lanes", "row"])
def test_squared_terms_near_the_largest_float_keep_a_finite_gradient(backend, classes):
    """p = 2: the slope 2 h / k is finite for a term h near the largest float64 and k >= 2
    (as PyTorch's); 2 h alone would not be, nor, at k = 200, the sum of a row's h (199
    terms of 8e307; their slopes sum to 1.6e308)."""
    x = np.full((2, classes), 8e307)
    x[0, 0] = x[1, 1] = -8e307
    if classes == 200:
        x /= 2
    labels = np.array([0, 1])
    want_loss, want_grad = _torch(x, labels, None, "none", p=2)
    loss, grad = _run(backend, x, labels, reduction="none", p=2)
    assert np.isfinite(want_grad).all()
    np.testing.assert_allclose(to_host(grad), want_grad, rtol=1e-12)
    assert np.isinf(to_host(loss)).all() and np.isinf(want_loss).all()


@pytest.mark.parametrize("classes", [3, 200], ids=["lanes", "row"])
def test_infinite_and_nan_weights_weigh_only_terms_that_count(backend, classes):
    """As PyTorch: the label's weight multiplies each term that counts, so a row without
    such terms is 0 even for a weight of inf or NaN, and one with them is inf (NaN; PyTorch
    then makes every class's gradient NaN, fastloss those of the terms that count)."""
    x = np.full((4, classes), -5.0)
    x[:, :3] = [[0.0, 2.0, 1.0], [0.0, 2.0, 1.5], [3.0, 0.0, 1.0], [0.0, 2.0, 1.5]]
    labels = np.array([1, 1, 0, 0])  # rows 0 and 2: no term > 0; rows 1 and 3: one
    weight = np.ones(classes)
    weight[:2] = [np.nan, np.inf]
    want_loss, want_grad = _torch(x, labels, weight, "none")
    loss, grad = _run(backend, x, labels, weight, reduction="none")
    np.testing.assert_array_equal(to_host(loss), want_loss)
    np.testing.assert_array_equal(to_host(grad)[:3], want_grad[:3])
    assert np.isnan(to_host(grad)[3, 1:3]).all()


@pytest.mark.parametrize("classes", [4, 200], ids=["lanes", "row"])
def test_weighed_terms_near_the_largest_float_as_torch(backend, classes):
    """As PyTorch, the label's weight multiplies each term before the row's sum: two terms
    of 1e308 weighed by 0.5 sum to a finite loss, and weighed by 0 to 0, where weighing
    their sum (inf) would give inf and NaN."""
    x = np.full((2, classes), -5.0)
    x[:, :4] = [[1e308, 1e308, 0.0, -5.0], [1e308, 1e308, -5.0, 0.0]]
    labels = np.array([2, 3])
    weight = np.ones(classes)
    weight[[2, 3]] = [0.5, 0.0]
    want_loss, want_grad = _torch(x, labels, weight, "none")
    loss, grad = _run(backend, x, labels, weight, reduction="none")
    assert np.isfinite(want_loss).all() and want_loss[1] == 0.0
    np.testing.assert_allclose(to_host(loss), want_loss, rtol=1e-12)
    np.testing.assert_allclose(to_host(grad), want_grad, rtol=1e-12)


@pytest.mark.parametrize("classes", [3, 200], ids=["lanes", "row"])
def test_a_label_of_zero_weight_has_a_positive_zero_gradient_as_torch(backend, classes):
    """w_y = 0 makes every term's slope 0: PyTorch's gradient at the label is then
    0 - 0 - ... = +0, not the negated sum of the slopes, -0, though terms count (p = 1)."""
    x = np.full((2, classes), -5.0)
    x[:, :3] = [[0.0, 0.5, 0.9], [0.9, 0.5, 0.0]]
    labels = np.array([0, 2])  # both rows: two terms > 0
    weight = np.ones(classes)
    weight[[0, 2]] = 0.0
    want_loss, want_grad = _torch(x, labels, weight, "none")
    loss, grad = _run(backend, x, labels, weight, reduction="none")
    np.testing.assert_array_equal(to_host(loss), want_loss)
    grad = to_host(grad)
    np.testing.assert_array_equal(grad, want_grad)
    np.testing.assert_array_equal(np.signbit(grad), np.signbit(want_grad))


def test_float16_is_computed_in_float32(backend):
    x, labels, weight = _case((9, 40))
    x16 = x.astype(np.float16)
    want_loss, want_grad = _torch(x16, labels, weight, "mean")
    loss, grad = _run(backend, x16, labels, weight)
    assert grad.dtype == np.float16
    np.testing.assert_allclose(to_host(loss).astype(np.float64), want_loss, rtol=4e-3)
    np.testing.assert_allclose(to_host(grad).astype(np.float64), want_grad, rtol=4e-3,
                               atol=1e-3)


def test_out_in_place_and_layouts(backend):
    x, labels, _ = _case((6, 33))
    x = x.astype(np.float32)
    args = (to_backend(labels, backend),)
    expected = to_host(fl.multi_margin_grad(to_backend(x, backend), *args, backend=backend))
    for layout in (np.asfortranarray, lambda a: np.repeat(a, 2, axis=1)[:, ::2]):
        np.testing.assert_array_equal(
            to_host(fl.multi_margin_grad(to_backend(layout(x), backend), *args,
                                         backend=backend)), expected)
    inputs = to_backend(x.copy(), backend)
    out = to_backend(np.empty_like(x), backend)
    assert fl.multi_margin_grad(inputs, *args, out=out, backend=backend) is out
    np.testing.assert_array_equal(to_host(out), expected)
    np.testing.assert_array_equal(to_host(inputs), x)  # not modified
    _, grad = fl.multi_margin_with_grad(inputs, *args, out=inputs, backend=backend)
    assert grad is inputs
    np.testing.assert_array_equal(to_host(inputs), expected)


@pytest.mark.parametrize("classes", [1, 10, 128, 129])
@pytest.mark.parametrize("p", [1, 2])
def test_numba_rows_in_lanes_match_the_reference(classes, p):
    """Numba runs rows of at most 128 classes 64 at a time, in lanes: every row of every
    pass, a last pass of fewer rows, and blocks on Numba's threads (over 2**17 elements),
    loss and gradient against the float64 reference; 129 classes go a row at a time."""
    pytest.importorskip("numba")
    x, labels, weight = _case((2**17 // classes + 77, classes))
    x = x.astype(np.float32)
    x[70, 0] = np.nan  # a NaN score adds nothing, as in PyTorch
    options = dict(p=p, margin=0.7, weight=weight, reduction="none")
    want_loss, want_grad = fl.multi_margin_with_grad(x, labels, backend="numpy", **options)
    loss, grad = fl.multi_margin_with_grad(x, labels, backend="numba", **options)
    assert_close(loss, want_loss, np.float32)
    assert_close(grad, want_grad, np.float32)


@pytest.mark.parametrize("classes", [100, 128])
@pytest.mark.parametrize("p", [1, 2])
def test_numba_float64_rows_in_lanes_are_within_two_ulps_of_their_terms(classes, p):
    """A float64 row in lanes adds its classes' terms one after another, compensated: its
    loss and its label's gradient (minus the sum of the other slopes) are within 2 ulps of
    their terms' magnitude against long double (numpy: up to 3.7; a plain sum was up to 5.9
    off in the loss and 15.7 in the gradient)."""
    pytest.importorskip("numba")
    rows = 2048
    x, labels, weight = _case((rows, classes))
    x *= 2.0
    loss, grad = fl.multi_margin_with_grad(x, labels, p=p, weight=weight, reduction="none",
                                           backend="numba")
    picked = np.arange(rows), labels
    h = 1 - x.astype(np.longdouble)[picked][:, None] + x.astype(np.longdouble)
    counts = h > 0
    counts[picked] = False
    row_weight = weight.astype(np.longdouble)[labels][:, None] / classes
    terms = np.where(counts, h**p, 0) * row_weight
    slopes = np.where(counts, 1 if p == 1 else 2 * h, 0) * row_weight
    for got, summed in ((loss, terms), (-grad[picked], slopes)):
        scale = summed.sum(axis=1) * np.longdouble(2.0**-52)  # terms of one sign
        assert (np.abs(got - summed.sum(axis=1)) <= 2 * scale).all()


def test_invalid_label_is_a_value_error_on_the_cpu():
    for backend in ("numpy", "numba"):
        with pytest.raises(ValueError, match=r"class index 3, outside \[0, 3\)$"):
            fl.multi_margin(np.zeros((2, 3)), np.array([0, 3]), backend=backend)


def test_invalid_label_on_cuda_is_a_nan_row_or_checked(cupy):
    x = cupy.asarray(np.zeros((3, 4)))
    labels = cupy.asarray(np.array([0, -1, 1]))
    loss, grad = fl.multi_margin_with_grad(x, labels, reduction="none", backend="cuda")
    assert np.isnan(to_host(loss)[1]) and np.isnan(to_host(grad)[1]).all()
    assert np.isfinite(to_host(loss)[[0, 2]]).all()
    with pytest.raises(ValueError, match="class index -1"):
        fl.multi_margin(x, labels, backend="cuda", check_labels=True)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_dask_arrays_match_memory(reduction):
    dask = pytest.importorskip("dask")
    da = pytest.importorskip("dask.array")
    x, labels, weight = _case((53, 11), seed=5)
    lazy = fl.multi_margin_with_grad(da.from_array(x, chunks=(10, 4)), labels, weight=weight,
                                     p=2, reduction=reduction)
    assert lazy[1].chunks == ((10,) * 5 + (3,), (4, 4, 3))  # the input's, as documented
    loss, grad = dask.compute(*lazy)
    memory_loss, memory_grad = fl.multi_margin_with_grad(x, labels, weight=weight, p=2,
                                                         reduction=reduction)
    np.testing.assert_array_equal(grad, memory_grad)
    np.testing.assert_allclose(loss, memory_loss, rtol=1e-12)


@pytest.mark.parametrize("call, error, match", [
    (lambda: fl.multi_margin(np.zeros(4), np.zeros(4, int)), ValueError, "scores must be 2-D"),
    (lambda: fl.multi_margin(np.zeros((2, 3)), np.zeros(2)), TypeError, "must be integers"),
    (lambda: fl.multi_margin(np.zeros((0, 0)), np.zeros(0, int)), ValueError,
     r"scores must be 2-D \(N, k\).*k >= 1"),
    (lambda: fl.multi_margin(np.zeros((2, 3)), np.zeros(2, int), p=3), ValueError, "p must"),
    (lambda: fl.multi_margin(np.zeros((2, 3)), np.zeros(2, int), p=2.5), ValueError, "p must"),
    # Not a number: a TypeError, as for every other option.
    (lambda: fl.multi_margin(np.zeros((2, 3)), np.zeros(2, int), p=np.array([1, 1])),
     TypeError, "p must be a real number"),
    (lambda: fl.multi_margin(np.zeros((2, 3)), np.zeros(2, int), p="1"), TypeError,
     "p must be a real number"),
    (lambda: fl.multi_margin(np.zeros((2, 3)), np.zeros(2, int), p=True), TypeError,
     "p must be a real number"),
    (lambda: fl.multi_margin(np.zeros((2, 3)), np.zeros(2, int), margin=10**400), ValueError,
     "margin"),
    (lambda: fl.multi_margin(np.zeros((2, 3)), np.zeros(2, int), margin=np.nan), ValueError,
     "margin"),
    (lambda: fl.multi_margin(np.zeros((2, 3)), np.zeros(2, int), weight=np.ones(2)),
     ValueError, "weight"),
    (lambda: fl.multi_margin_grad(np.zeros((2, 3)), np.zeros(2, int), out=np.zeros((3, 2))),
     ValueError, "out"),
])
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()
