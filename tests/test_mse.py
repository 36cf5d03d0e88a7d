"""fastloss.mse / mse_grad / mse_with_grad on every backend, against float64 NumPy and PyTorch."""

import warnings

import numpy as np
import pytest
from conftest import assert_close, assert_within_an_ulp, to_backend, to_host
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastloss as fl

torch = pytest.importorskip("torch")
F = torch.nn.functional

SHAPES = [(1, 1), (1, 37), (7, 33), (1000,), (3, 4, 5), (4099, 33)]
REDUCTIONS = ["mean", "sum", "none"]


def reference(pred, target, reduction):
    """Loss and gradient in float64, written from the definition."""
    diff = pred.astype(np.float64) - target.astype(np.float64)
    if reduction == "none":
        return diff**2, 2 * diff
    if reduction == "sum":
        return np.sum(diff**2), 2 * diff
    return np.mean(diff**2), 2 * diff / diff.size


def random_pair(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_float64_reference(backend, dtype, shape, reduction):
    pred, target = random_pair(shape, dtype)
    want_loss, want_grad = reference(pred, target, reduction)
    p, t = to_backend(pred, backend), to_backend(target, backend)
    loss, grad = fl.mse_with_grad(p, t, reduction=reduction, backend=backend)
    assert_close(loss, want_loss, dtype)
    assert_close(grad, want_grad, dtype)
    assert to_host(loss).dtype == dtype and to_host(grad).dtype == dtype
    assert grad.shape == pred.shape
    assert_close(fl.mse(p, t, reduction=reduction, backend=backend), want_loss, dtype)
    assert_close(fl.mse_grad(p, t, reduction=reduction, backend=backend), want_grad, dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_matches_torch(backend, dtype, reduction):
    pred, target = random_pair((33, 65), dtype, seed=1)
    pred_t = torch.tensor(pred, requires_grad=True)
    loss_t = F.mse_loss(pred_t, torch.tensor(target), reduction=reduction)
    loss_t.sum().backward()
    p, t = to_backend(pred, backend), to_backend(target, backend)
    loss, grad = fl.mse_with_grad(p, t, reduction=reduction, backend=backend)
    assert_close(loss, loss_t.detach().double().numpy(), dtype)
    assert_close(grad, pred_t.grad.double().numpy(), dtype)


def test_returns_numpy_scalar_of_input_dtype():
    pred, target = random_pair((4, 5), np.float32)
    loss = fl.mse(pred, target)
    assert isinstance(loss, np.float32)


@pytest.mark.parametrize(
    "layout",
    ["fortran", "strided", "transposed-target", "zero-d", "big-endian"],
)
def test_layouts(backend, layout):
    pred, target = random_pair((40, 30), np.float64, seed=2)
    if layout == "fortran":
        pred, target = np.asfortranarray(pred), np.asfortranarray(target)
    elif layout == "strided":
        pred, target = pred[::3, 1::2], target[::3, ::2]
    elif layout == "transposed-target":
        target = np.asfortranarray(target)
    elif layout == "zero-d":
        pred, target = pred[0, 0].reshape(()), target[0, 0].reshape(())
    else:
        if backend == "cuda":
            pytest.skip("CuPy has no non-native byte order")
        pred, target = pred.astype(">f8"), target.astype(">f8")
    want_loss, want_grad = reference(pred, target, "sum")
    loss, grad = fl.mse_with_grad(
        to_backend(pred, backend), to_backend(target, backend), reduction="sum", backend=backend
    )
    assert_close(loss, want_loss, np.float64)
    assert_close(grad, want_grad, np.float64)
    assert grad.shape == pred.shape


def test_big_endian_half_is_computed_in_float32(backend):
    if backend == "cuda":
        pytest.skip("CuPy has no non-native byte order")
    pred, target = random_pair((40, 30), np.float16, seed=2)
    want_loss, want_grad = reference(pred, target, "mean")
    loss, grad = fl.mse_with_grad(pred.astype(">f2"), target.astype(">f2"), backend=backend)
    assert loss.dtype == np.float16 and grad.dtype == np.dtype(">f2")
    assert_within_an_ulp(loss, want_loss, np.float16)
    assert_within_an_ulp(grad, want_grad, np.float16)


@pytest.mark.parametrize("dtype, value", [(np.float16, 300.0), (np.float32, 1e20)])
def test_results_past_their_range_are_inf_without_a_warning(backend, dtype, value):
    # On cuda the rounding happens on the device, where nothing could warn: the values count.
    def on(array):
        return to_backend(array, backend)

    pred, target = np.full(4, value, dtype), np.full(4, -value, dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isposinf(to_host(fl.mse(on(pred), on(target), backend=backend)))
        assert np.isposinf(to_host(fl.mse(on(pred), on(target), reduction="none",
                                          backend=backend))).all()
        if dtype == np.float16:  # the gradient of the sum, 2 * 130000, is past 65504 too
            grad = fl.mse_grad(on(np.full(4, 65000, dtype)), on(np.full(4, -65000, dtype)),
                               reduction="sum", backend=backend)
            assert np.isposinf(to_host(grad)).all()


def test_fortran_gradient_keeps_layout(backend):
    pred, target = (np.asfortranarray(x) for x in random_pair((16, 8), np.float32))
    grad = fl.mse_grad(to_backend(pred, backend), to_backend(target, backend), backend=backend)
    assert grad.flags.f_contiguous


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_half_precision_is_computed_in_float32(backend, reduction):
    pred, target = random_pair((129, 17), np.float16, seed=3)
    want_loss, want_grad = reference(pred, target, reduction)
    loss, grad = fl.mse_with_grad(
        to_backend(pred, backend), to_backend(target, backend), reduction=reduction,
        backend=backend,
    )
    assert to_host(loss).dtype == np.float16 and grad.dtype == np.float16
    assert_within_an_ulp(loss, want_loss, np.float16)
    assert_within_an_ulp(grad, want_grad, np.float16)


@pytest.mark.parametrize("where", ["fresh", "pred", "target", "strided"])
def test_out_receives_gradient(backend, where):
    pred, target = random_pair((50, 20), np.float32, seed=4)
    want_loss, want_grad = reference(pred, target, "mean")
    pred_b, target_b = to_backend(pred, backend), to_backend(target, backend)
    if where == "fresh":
        out = to_backend(np.empty_like(pred), backend)
    elif where == "pred":
        out = pred_b
    elif where == "target":
        out = target_b
    else:
        out = to_backend(np.empty((50, 40), np.float32), backend)[:, ::2]
    loss, grad = fl.mse_with_grad(pred_b, target_b, backend=backend, out=out)
    assert grad is out
    assert_close(out, want_grad, np.float32)
    assert_close(loss, want_loss, np.float32)


def test_inputs_are_not_modified(backend):
    pred, target = random_pair((30, 30), np.float32, seed=5)
    pred_b, target_b = to_backend(pred, backend), to_backend(target, backend)
    for reduction in REDUCTIONS:
        fl.mse_with_grad(pred_b, target_b, reduction=reduction, backend=backend)
    np.testing.assert_array_equal(to_host(pred_b), pred)
    np.testing.assert_array_equal(to_host(target_b), target)


def test_nan_propagates(backend):
    pred, target = random_pair((10, 10), np.float32)
    pred[3, 4] = np.nan
    loss, grad = fl.mse_with_grad(to_backend(pred, backend), to_backend(target, backend),
                                  backend=backend)
    grad = to_host(grad)
    assert np.isnan(to_host(loss))
    assert np.isnan(grad[3, 4]) and np.isfinite(np.delete(grad.ravel(), 34)).all()


def test_empty_input(backend):
    empty = to_backend(np.zeros((0, 5), np.float32), backend)
    assert np.isnan(to_host(fl.mse(empty, empty, backend=backend)))
    assert to_host(fl.mse(empty, empty, reduction="sum", backend=backend)) == 0
    assert fl.mse_grad(empty, empty, backend=backend).shape == (0, 5)


def test_large_float32_sum_is_exact_to_1e6(backend):
    pred, target = random_pair((4_000_000,), np.float32, seed=6)
    pred += 0.5
    exact = np.sum((pred.astype(np.float64) - target) ** 2)
    loss = fl.mse(to_backend(pred, backend), to_backend(target, backend), reduction="sum",
                  backend=backend)
    assert abs(float(to_host(loss)) - exact) <= 1e-6 * exact


@settings(max_examples=60, deadline=None)
@given(
    arrays=st.integers(1, 3).flatmap(
        lambda ndim: hnp.array_shapes(min_dims=ndim, max_dims=ndim, max_side=70).flatmap(
            lambda shape: st.tuples(
                *[hnp.arrays(np.float64, shape, elements=st.floats(-1e6, 1e6))] * 2
            )
        )
    ),
    reduction=st.sampled_from(REDUCTIONS),
)
def test_hypothesis_matches_reference(arrays, reduction):
    pred, target = arrays
    want_loss, want_grad = reference(pred, target, reduction)
    for backend in ("numpy", "numba"):
        loss, grad = fl.mse_with_grad(pred, target, reduction=reduction, backend=backend)
        np.testing.assert_allclose(loss, want_loss, rtol=1e-12, atol=1e-300)
        np.testing.assert_allclose(grad, want_grad, rtol=1e-12, atol=1e-300)


# --- bad input --------------------------------------------------------------------------------


def test_bad_inputs_name_the_argument():
    pred, target = random_pair((4, 5), np.float32)
    cases = [
        (ValueError, "target", lambda: fl.mse(pred, target[:, :4])),
        # Of pred's size and layout, not its shape (the common path's own check).
        (ValueError, "target", lambda: fl.mse(pred, target.reshape(5, 4))),
        (ValueError, "target", lambda: fl.mse(pred, target.reshape(-1))),
        (TypeError, "pred", lambda: fl.mse(pred.astype(np.int32), target)),
        (TypeError, "target", lambda: fl.mse(pred, target.astype(np.int64))),
        (TypeError, "pred", lambda: fl.mse(pred.astype(np.complex64), target)),
        (ValueError, "reduction", lambda: fl.mse(pred, target, reduction="avg")),
        (ValueError, "backend", lambda: fl.mse(pred, target, backend="jax")),
        (TypeError, "backend", lambda: fl.mse(pred, target, backend=None)),
        (ValueError, "out", lambda: fl.mse_grad(pred, target, out=np.empty((5, 4), np.float32))),
        (TypeError, "out", lambda: fl.mse_grad(pred, target, out=np.empty((4, 5)))),
        (TypeError, "pred", lambda: fl.mse(object(), target)),
        (TypeError, "out", lambda: fl.mse_grad(pred, target, out=pred.tolist())),
    ]
    for error, name, call in cases:
        with pytest.raises(error, match=name):
            call()


def test_read_only_out_is_rejected():
    pred, target = random_pair((4, 5), np.float32)
    out = np.empty_like(pred)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="out"):
        fl.mse_grad(pred, target, out=out)

