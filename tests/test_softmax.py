"""fl.softmax, fl.log_softmax and their vector-Jacobian products against PyTorch in float64."""

import numpy as np
import pytest
from conftest import (
    TOLERANCE,
    assert_within_an_ulp,
    confident_rows,
    max_ulps,
    to_backend,
    to_host,
)

import fastloss as fl

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _torch_forward(name, z):
    return (F.softmax if name == "softmax" else F.log_softmax)(torch.from_numpy(z), dim=1).numpy()


def _torch_backward(name, z, g):
    """The gradient with respect to z of sum(g * f(z)), f softmax or log-softmax."""
    zt = torch.from_numpy(z).requires_grad_()
    forward = F.softmax if name == "softmax_backward" else F.log_softmax
    (grad,) = torch.autograd.grad(forward(zt, dim=1), zt, torch.from_numpy(g))
    return grad.numpy()


def _case(name, z, g):
    """(fastloss arguments in float64, expected result): a backward function gets
    f(z) of the same float64 z that PyTorch differentiates."""
    if name in ("softmax", "log_softmax"):
        return (z,), _torch_forward(name, z)
    forward = "softmax" if name == "softmax_backward" else "log_softmax"
    return (_torch_forward(forward, z), g), _torch_backward(name, z, g)


NAMES = ["softmax", "log_softmax", "softmax_backward", "log_softmax_backward"]
SHAPES = [(1, 1), (7, 3), (300, 100), (5, 1000), (70, 2000)]  # the last: Numba's threads


def _tolerance(dtype, expected):
    rtol, atol = TOLERANCE[np.dtype(dtype)]
    return rtol, atol * max(1.0, float(np.nanmax(np.abs(expected), initial=1.0)))


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", NAMES)
def test_matches_torch(backend, dtype, name, shape):
    rng = np.random.default_rng(shape[1])
    z = rng.standard_normal(shape) * 4
    g = rng.standard_normal(shape)
    arguments, expected = _case(name, z, g)
    arguments = [to_backend(a.astype(dtype), backend) for a in arguments]
    result = getattr(fl, name)(*arguments, backend=backend)
    assert result.shape == shape and result.dtype == dtype
    rtol, atol = _tolerance(dtype, expected)
    np.testing.assert_allclose(to_host(result), expected, rtol=rtol, atol=atol)


def _vjp_of_output(name, y, g):
    """PyTorch's backward formulas, in float64, given the forward's output y: softmax's
    y (g - sum(y g)), log-softmax's g - e^y sum(g)."""
    if name == "softmax_backward":
        return y * (g - np.sum(y * g, axis=1, keepdims=True))
    return g - np.exp(y) * np.sum(g, axis=1, keepdims=True)


@pytest.mark.parametrize("name", NAMES)
def test_float16_is_computed_in_float32(backend, name):
    """Within one float16 ulp of the float64 result of the float16 arguments: computed in
    float32 and rounded once (half arithmetic is off by several ulp)."""
    rng = np.random.default_rng(3)
    z = rng.standard_normal((9, 40)).astype(np.float16).astype(np.float64)
    g = rng.standard_normal((9, 40)).astype(np.float16).astype(np.float64)
    if name in ("softmax", "log_softmax"):
        arguments, expected = (z,), _torch_forward(name, z)
    else:
        forward = "softmax" if name == "softmax_backward" else "log_softmax"
        y = _torch_forward(forward, z).astype(np.float16).astype(np.float64)
        arguments, expected = (y, g), _vjp_of_output(name, y, g)
    result = getattr(fl, name)(*[to_backend(a.astype(np.float16), backend)
                                 for a in arguments], backend=backend)
    assert result.dtype == np.float16
    assert_within_an_ulp(result, expected, np.float16)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_extreme_rows_as_torch(backend, dtype, name):
    big = 1e30 if dtype == np.float32 else 1e300
    z = np.array([
        [big, -big, 0.0, 1.0],
        [-np.inf, 0.0, -np.inf, 2.0],
        [-np.inf] * 4,  # NaN, as PyTorch
        [np.nan, 0.0, 1.0, 2.0],  # NaN row
        [-big, -big, -big, -big],
    ])
    expected = _torch_forward(name, z.astype(dtype).astype(np.float64))
    result = to_host(getattr(fl, name)(to_backend(z.astype(dtype), backend), backend=backend))
    np.testing.assert_allclose(result, expected, rtol=TOLERANCE[np.dtype(dtype)][0], atol=1e-6)
    assert np.isnan(result[2]).all() and np.isnan(result[3]).all()


@pytest.mark.parametrize("classes", [100, 200], ids=["lanes", "row"])
def test_log_softmax_keeps_the_maximum_out_of_the_log(backend, classes):
    # (z - max) - log(sum), not z - (max + log(sum)): 1e8 + log(k) would round to 1e8's
    # spacing (1.5e-8), far from -log(k) in float64.
    z = np.full((3, classes), 1e8)
    result = to_host(fl.log_softmax(to_backend(z, backend), backend=backend))
    np.testing.assert_allclose(result, -np.log(classes), rtol=1e-14)


@pytest.mark.parametrize("classes", [10, 100, 200, 1000])
def test_log_softmax_of_a_confident_row_keeps_its_digits(backend, dtype, classes):
    # The max class's log-probability is -log(1 + s) with s from about 1e-26 to 0.5
    # (conftest.confident_rows): a sum of exponentials rounded to an ulp of 1 kept it to
    # 1e-16 absolute (0 below that). Every class within a few ulps of the exact values.
    logits, _, excess = confident_rows(512, classes, dtype, seed=classes)
    exact = logits.astype(np.longdouble) - np.log1p(excess)[:, None]
    result = fl.log_softmax(to_backend(logits, backend), backend=backend)
    assert max_ulps(result, exact, dtype) <= 6


@pytest.mark.parametrize("classes", [10, 32, 100, 1000])
def test_log_softmax_backward_of_a_confident_row_keeps_its_digits(backend, dtype, classes):
    # NLL's gradient through log-softmax: g = -1 at the max class, whose entry p - 1 =
    # expm1(log p) runs from about -1e-26 to -0.5 (conftest.confident_rows); an exponential
    # rounded to an ulp of 1 kept it to 1e-16 absolute. Every class within a few ulps of
    # the exact values of the given log-probabilities.
    rows = 512
    logits, top, excess = confident_rows(rows, classes, dtype, seed=classes)
    logp = (logits.astype(np.longdouble) - np.log1p(excess)[:, None]).astype(dtype)
    g = np.zeros_like(logp)
    g[np.arange(rows), top] = -1
    exact = np.exp(logp.astype(np.longdouble))
    exact[np.arange(rows), top] = np.expm1(logp[np.arange(rows), top].astype(np.longdouble))
    result = fl.log_softmax_backward(to_backend(logp, backend), to_backend(g, backend),
                                     backend=backend)
    assert max_ulps(result, exact, dtype) <= 4


@pytest.mark.parametrize("classes", [10, 40])
def test_log_softmax_backward_of_any_input_is_pytorchs_formula(backend, dtype, classes):
    # PyTorch's g - e^y sum(g) holds for any y, not only a log-softmax output: y around the
    # forms' bound (log p near 0, as a confident row's max) and above 0 (p > 1), where
    # taking the confident form past its range would be wrong.
    rng = np.random.default_rng(classes)
    y = rng.uniform(-1.0, 1.0, (64, classes)).astype(dtype)
    g = rng.standard_normal((64, classes)).astype(dtype)
    expected = _vjp_of_output("log_softmax_backward", y.astype(np.float64), g.astype(np.float64))
    result = fl.log_softmax_backward(to_backend(y, backend), to_backend(g, backend),
                                     backend=backend)
    rtol, atol = _tolerance(dtype, expected)
    np.testing.assert_allclose(to_host(result), expected, rtol=rtol, atol=atol)


@pytest.mark.parametrize("classes", [2, 40])
def test_log_softmax_backward_of_an_infinite_gradient_is_pytorchs(backend, classes):
    # g - p sum(g) with sum(g) = inf: -inf at the max class (p > 1/2), NaN at the inf one,
    # as PyTorch has them; the max class's confident form would make inf - inf a NaN.
    z = np.full((3, classes), -5.0)
    z[:, 0] = 3.0
    logp = fl.log_softmax(z, backend="numpy")
    g = np.zeros_like(z)
    g[:, 1] = np.inf
    want = _torch_backward("log_softmax_backward", z, g)
    got = to_host(fl.log_softmax_backward(to_backend(logp, backend), to_backend(g, backend),
                                          backend=backend))
    np.testing.assert_array_equal(got[:, :2], want[:, :2])
    assert np.isneginf(want[:, 0]).all() and np.isnan(want[:, 1]).all()


@pytest.mark.parametrize("name", NAMES)
def test_out_in_place_and_layouts(backend, name):
    rng = np.random.default_rng(5)
    z = rng.standard_normal((6, 33)).astype(np.float32)
    g = rng.standard_normal((6, 33)).astype(np.float32)
    arguments = [z] if name in ("softmax", "log_softmax") else [fl.softmax(z), g]
    expected = to_host(getattr(fl, name)(*[to_backend(a, backend) for a in arguments],
                                         backend=backend))
    # Fortran order and a strided view give the same values.
    for layout in (np.asfortranarray, lambda a: np.repeat(a, 2, axis=1)[:, ::2]):
        views = [to_backend(layout(a), backend) for a in arguments]
        np.testing.assert_array_equal(to_host(getattr(fl, name)(*views, backend=backend)),
                                      expected)
    # out= receives the result and may be the first input itself; inputs are never modified.
    inputs = [to_backend(a.copy(), backend) for a in arguments]
    out = to_backend(np.empty_like(z), backend)
    assert getattr(fl, name)(*inputs, out=out, backend=backend) is out
    np.testing.assert_array_equal(to_host(out), expected)
    for before, after in zip(arguments, inputs, strict=True):
        np.testing.assert_array_equal(to_host(after), before)
    first = inputs[0]
    assert getattr(fl, name)(*inputs, out=first, backend=backend) is first
    np.testing.assert_array_equal(to_host(first), expected)


@pytest.mark.parametrize("classes", [1, 10, 32, 33, 128, 129, 224, 225])
@pytest.mark.parametrize("name", NAMES)
def test_numba_rows_in_lanes_match_the_reference(name, classes):
    """Numba runs short rows 64 at a time, in lanes (softmax and log-softmax: up to 224
    float32 classes, the backward functions: up to 32): every row of every pass, a last pass of
    fewer rows, and blocks on Numba's threads (over 2**17 elements), against the float64
    reference, on both sides of each limit."""
    pytest.importorskip("numba")
    rng = np.random.default_rng(classes)
    shape = (2**17 // classes + 77, classes)
    z = (rng.standard_normal(shape) * 4).astype(np.float32)
    z[5, -1], z[70] = -np.inf, -np.inf  # a class of probability 0, and a NaN row
    arguments = [z]
    if name.endswith("backward"):
        forward = "softmax" if name == "softmax_backward" else "log_softmax"
        arguments = [getattr(fl, forward)(z, backend="numpy"),
                     rng.standard_normal(shape).astype(np.float32)]
    expected = getattr(fl, name)(*arguments, backend="numpy")
    rtol = TOLERANCE[np.dtype(np.float32)][0]
    np.testing.assert_allclose(getattr(fl, name)(*arguments, backend="numba"), expected,
                               rtol=rtol, atol=1e-6)
    # In place, each block of rows is computed once: a block that ran past its last row
    # would take the rows after it through the function twice.
    first = arguments[0].copy()
    getattr(fl, name)(first, *arguments[1:], out=first, backend="numba")
    np.testing.assert_allclose(first, expected, rtol=rtol, atol=1e-6)



@pytest.mark.parametrize("classes", [127, 128, 129, 224, 225])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_numba_float64_rows_in_lanes_on_both_sides_of_their_limit(name, classes):
    """float64 rows go in lanes up to 128 classes (a 1 KiB row, the stack tile's), not 224
    as float32 rows do: a limit one class too high would overrun the tile."""
    pytest.importorskip("numba")
    rng = np.random.default_rng(classes)
    z = rng.standard_normal((3 * 64 + 5, classes)) * 4
    z[5, -1], z[70] = -np.inf, -np.inf  # a class of probability 0, and a NaN row
    expected = getattr(fl, name)(z, backend="numpy")
    np.testing.assert_allclose(getattr(fl, name)(z, backend="numba"), expected,
                               rtol=1e-12, atol=1e-15)
    in_place = z.copy()
    getattr(fl, name)(in_place, out=in_place, backend="numba")
    np.testing.assert_allclose(in_place, expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("classes", [10, 64, 128])
def test_numba_float64_softmax_in_lanes_is_within_three_ulps(classes):
    """A float64 row in lanes sums its exponentials one class after another, compensated:
    each probability is within 3 ulps of the long double softmax of the same rounded
    shifts z - max (numpy: up to 7; a plain sum was 13 off)."""
    pytest.importorskip("numba")
    rng = np.random.default_rng(classes)
    z = rng.standard_normal((4096, classes))
    shifted = (z - z.max(axis=1, keepdims=True)).astype(np.longdouble)
    exact = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    ulp = np.spacing(exact.astype(np.float64)).astype(np.longdouble)
    assert (np.abs(fl.softmax(z, backend="numba") - exact) / ulp).max() <= 3.0


@pytest.mark.parametrize("classes", [16, 32])
def test_numba_float64_softmax_backward_in_lanes_is_within_two_ulps_of_its_terms(classes):
    """A float64 row in lanes sums p_c g_c one class after another, compensated: each
    p_c (g_c - sum) is within 2 ulps of its terms' magnitude against long double (numpy: up
    to 2.3; a plain sum was 4.1 off)."""
    pytest.importorskip("numba")
    rng = np.random.default_rng(classes)
    p = fl.softmax(rng.standard_normal((8192, classes)) * 3, backend="numpy")
    g = rng.standard_normal(p.shape)
    y, grad = p.astype(np.longdouble), g.astype(np.longdouble)
    exact = y * (grad - (y * grad).sum(axis=1, keepdims=True))
    scale = y * (np.abs(grad) + np.abs(y * grad).sum(axis=1, keepdims=True))
    error = np.abs(fl.softmax_backward(p, g, backend="numba") - exact)
    assert (error / (scale * np.longdouble(2.0**-52))).max() <= 2.0


@pytest.mark.parametrize("name", ["softmax_backward", "log_softmax_backward"])
def test_inputs_of_either_byte_order_are_one_dtype(name):
    # As the elementwise losses take them: the kernels read native copies.
    rng = np.random.default_rng(5)
    z, g = rng.standard_normal((2, 9, 7)).astype(np.float32)
    forward = fl.softmax(z) if name == "softmax_backward" else fl.log_softmax(z)
    for backend in ("numpy", "numba"):
        expected = getattr(fl, name)(forward, g, backend=backend)
        for orders in ((">f4", "<f4"), ("<f4", ">f4"), (">f4", ">f4")):
            swapped = [a.astype(order) for a, order in zip((forward, g), orders, strict=True)]
            result = getattr(fl, name)(*swapped, backend=backend)
            np.testing.assert_array_equal(result, expected)


def test_empty_inputs():
    assert fl.softmax(np.zeros((0, 4), np.float32)).shape == (0, 4)
    assert fl.log_softmax_backward(np.zeros((3, 0)), np.zeros((3, 0))).shape == (3, 0)


@pytest.mark.parametrize("call, error, match", [
    (lambda: fl.softmax(np.zeros(4)), ValueError, r"z must be 2-D \(N, k\)"),
    (lambda: fl.log_softmax(np.zeros((2, 3), np.int64)), TypeError, "z must be a floating"),
    (lambda: fl.softmax_backward(np.zeros((2, 3)), np.zeros((3, 2))), ValueError,
     r"grad_p must have the shape of p \(2, 3\)"),
    (lambda: fl.log_softmax_backward(np.zeros((2, 3)), np.zeros((2, 3), np.float32)), TypeError,
     "grad_logp must have the dtype of logp"),
    (lambda: fl.softmax(np.zeros((2, 3)), out=np.zeros((3, 2))), ValueError, "out must have"),
    (lambda: fl.softmax(np.zeros((2, 3)), out=np.zeros((2, 3), np.float32)), TypeError,
     "out must have dtype"),
    (lambda: fl.softmax(np.zeros((2, 3)), backend="gpu"), ValueError, "backend must be"),
])
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("name", NAMES)
def test_dask_arrays_give_the_in_memory_bits(name):
    da = pytest.importorskip("dask.array")
    rng = np.random.default_rng(11)
    z, g = rng.standard_normal((2, 53, 37)).astype(np.float32)
    arguments = [z] if name in ("softmax", "log_softmax") else [fl.softmax(z), g]
    lazy = getattr(fl, name)(*(da.from_array(a, chunks=(10, 8)) for a in arguments))
    assert isinstance(lazy, da.Array) and lazy.chunks[0] == (10,) * 5 + (3,)
    np.testing.assert_array_equal(lazy.compute(), getattr(fl, name)(*arguments))


def test_dask_errors_when_the_graph_is_built():
    da = pytest.importorskip("dask.array")
    with pytest.raises(ValueError, match="2-D"):
        fl.softmax(da.zeros(5))
    with pytest.raises(TypeError, match="out="):
        fl.log_softmax(da.zeros((2, 3)), out=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="grad_p must have the shape"):
        fl.softmax_backward(da.zeros((2, 3)), da.zeros((3, 2)))
