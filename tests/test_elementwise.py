"""The elementwise losses on every backend against ``torch.nn.functional`` and float64 NumPy.

MSE keeps its own file (test_mse.py); each loss here is a row of ``LOSSES``:
its function, its PyTorch reference, its inputs and its options. The same
matrix (dtypes, shapes, layouts, options, extremes, in-place out=, empty
input, bad input) runs for every row on every backend of the ``backend``
fixture, the CUDA kernels included on the host emulator.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
from conftest import TOLERANCE, to_backend, to_host

import fastloss as fl

torch = pytest.importorskip("torch")
F = torch.nn.functional

REDUCTIONS = ["mean", "sum", "none"]
SHAPES = [(1,), (7, 33), (3, 4, 5), (129, 65)]


def _normal_pair(rng, shape):
    return rng.standard_normal(shape) * 2, rng.standard_normal(shape) * 2


def _logits_and_labels(rng, shape):
    return rng.standard_normal(shape) * 4, rng.random(shape)


def _probs_and_labels(rng, shape):
    return rng.uniform(0.001, 0.999, shape), (rng.random(shape) < 0.5).astype(float)


def _scores_and_signs(rng, shape):
    return rng.standard_normal(shape) * 2, np.where(rng.random(shape) < 0.5, -1.0, 1.0)


def _log_probs_and_probs(rng, shape):
    target = rng.random(shape)
    target[rng.random(shape) < 0.2] = 0.0  # 0 * log 0 = 0
    return rng.standard_normal(shape) * 2, target


def _kl_div_reference(input, target, reduction="mean", **options):
    with warnings.catch_warnings():  # PyTorch warns that "mean" is not "batchmean"
        warnings.simplefilter("ignore", UserWarning)
        return F.kl_div(input, target, reduction=reduction, **options)


def _hinge_reference(scores, target, margin=1.0, reduction="mean"):
    # relu: a subgradient of 0 at the kink, as fastloss defines it.
    return getattr(F.relu(margin - target * scores), reduction if reduction != "none" else
                   "clone")()


@dataclass(frozen=True)
class Loss:
    name: str
    reference: Callable  # torch's functional form: (input, target, reduction=..., **options)
    inputs: Callable  # (rng, shape) -> float64 (input, target)
    options: list[dict] = field(default_factory=lambda: [{}])
    # Arrays among the options (broadcast over the input's shape by a function of it).
    arrays: dict[str, Callable] = field(default_factory=dict)

    @property
    def with_grad(self):
        return getattr(fl, f"{self.name}_with_grad")


def _columns(shape):
    return shape[-1:] if shape else ()


LOSSES = [
    Loss("l1", F.l1_loss, _normal_pair),
    Loss("smooth_l1", F.smooth_l1_loss, _normal_pair,
         [{}, {"beta": 0.5}, {"beta": 0.0}, {"beta": 3.0}]),
    Loss("huber", F.huber_loss, _normal_pair, [{}, {"delta": 0.5}, {"delta": 4.0}]),
    Loss("binary_cross_entropy_with_logits", F.binary_cross_entropy_with_logits,
         _logits_and_labels, [{}, {"weight": 1}, {"pos_weight": 1}, {"weight": 1, "pos_weight": 1}],
         {"weight": lambda shape: (1,) * (len(shape) > 1) + _columns(shape),
          "pos_weight": _columns}),
    Loss("binary_cross_entropy", F.binary_cross_entropy, _probs_and_labels,
         [{}, {"weight": 1}], {"weight": lambda shape: shape}),
    Loss("hinge", _hinge_reference, _scores_and_signs, [{}, {"margin": 0.25}]),
    Loss("kl_div", _kl_div_reference, _log_probs_and_probs, [{}, {"log_target": True}]),
]
IDS = [loss.name for loss in LOSSES]


def _options(loss: Loss, options: dict, shape, rng) -> dict:
    """The option values: arrays drawn for the array options, numbers as given."""
    return {name: rng.uniform(0.5, 2.0, loss.arrays[name](shape)) if name in loss.arrays
            else value for name, value in options.items()}


def torch_reference(loss: Loss, x, target, reduction, options):
    """Loss and gradient of the reduced loss ("none": of the sum) by PyTorch in float64."""
    x_t = torch.tensor(np.asarray(x, np.float64), requires_grad=True)
    extra = {name: torch.tensor(value) if isinstance(value, np.ndarray) else value
             for name, value in options.items()}
    value = loss.reference(x_t, torch.tensor(np.asarray(target, np.float64)),
                           reduction=reduction, **extra)
    value.sum().backward()
    return value.detach().numpy(), x_t.grad.numpy()


def _on(backend, options):
    return {name: to_backend(value, backend) if isinstance(value, np.ndarray) else value
            for name, value in options.items()}


def assert_close(actual, expected, dtype):
    rtol, atol = TOLERANCE[np.dtype(dtype)]
    np.testing.assert_allclose(to_host(actual).astype(np.float64), expected, rtol=rtol,
                               atol=atol)


def _run(loss, backend, x, target, reduction="mean", options=None, **kwargs):
    return loss.with_grad(to_backend(x, backend), to_backend(target, backend),
                          reduction=reduction, backend=backend, **_on(backend, options or {}),
                          **kwargs)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("loss", LOSSES, ids=IDS)
def test_matches_torch(backend, dtype, loss, shape, reduction):
    rng = np.random.default_rng(len(shape) * 100 + shape[-1])
    x, target = (a.astype(dtype) for a in loss.inputs(rng, shape))
    for options in loss.options:
        values = _options(loss, options, shape, rng)
        values = {k: v.astype(dtype) if isinstance(v, np.ndarray) else v
                  for k, v in values.items()}
        want_loss, want_grad = torch_reference(loss, x, target, reduction, values)
        got_loss, got_grad = _run(loss, backend, x, target, reduction, values)
        assert_close(got_loss, want_loss, dtype)
        assert_close(got_grad, want_grad, dtype)
        assert to_host(got_loss).dtype == dtype and to_host(got_grad).dtype == dtype
        assert got_grad.shape == x.shape
        # The loss-only and gradient-only calls are views of the same pass.
        functions = [getattr(fl, loss.name), getattr(fl, f"{loss.name}_grad")]
        args = (to_backend(x, backend), to_backend(target, backend))
        alone = [f(*args, reduction=reduction, backend=backend, **_on(backend, values))
                 for f in functions]
        np.testing.assert_array_equal(to_host(alone[0]), to_host(got_loss))
        np.testing.assert_array_equal(to_host(alone[1]), to_host(got_grad))


def _half_dtypes(backend):
    names = ["float16"] + (["bfloat16"] if backend == "cuda" else [])
    if "bfloat16" in names:
        ml_dtypes = pytest.importorskip("ml_dtypes")
        return [np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)]
    return [np.dtype(np.float16)]


HALF_TOLERANCE = {"float16": (4e-3, 1e-3), "bfloat16": (1.6e-2, 8e-3)}


@pytest.mark.parametrize("loss", LOSSES, ids=IDS)
def test_half_precision_is_computed_in_float32_or_better(backend, loss):
    rng = np.random.default_rng(3)
    for half in _half_dtypes(backend):
        x, target = (a.astype(half) for a in loss.inputs(rng, (129, 17)))
        want_loss, want_grad = torch_reference(loss, x, target, "sum", {})
        got_loss, got_grad = _run(loss, backend, x, target, "sum")
        assert to_host(got_loss).dtype == half and to_host(got_grad).dtype == half
        rtol, atol = HALF_TOLERANCE[half.name]
        np.testing.assert_allclose(to_host(got_loss).astype(np.float64), want_loss, rtol=rtol)
        np.testing.assert_allclose(to_host(got_grad).astype(np.float64), want_grad, rtol=rtol,
                                   atol=atol)


@pytest.mark.parametrize(
    "layout", ["fortran", "fortran-input", "strided", "transposed-target", "zero-d"]
)
@pytest.mark.parametrize("loss", LOSSES, ids=IDS)
def test_layouts(backend, loss, layout):
    rng = np.random.default_rng(2)
    x, target = loss.inputs(rng, (40, 30))
    if layout == "fortran":
        x, target = np.asfortranarray(x), np.asfortranarray(target)
    elif layout == "fortran-input":
        x = np.asfortranarray(x)
    elif layout == "strided":
        x, target = x[::3, 1::2], target[::3, ::2]
    elif layout == "transposed-target":
        target = np.asfortranarray(target)
    else:
        x, target = x[0, 0].reshape(()), target[0, 0].reshape(())
    options = _options(loss, loss.options[-1], x.shape, rng)
    want_loss, want_grad = torch_reference(loss, x, target, "sum", options)
    got_loss, got_grad = _run(loss, backend, x, target, "sum", options)
    assert_close(got_loss, want_loss, np.float64)
    assert_close(got_grad, want_grad, np.float64)
    # The gradient takes the input's layout, whatever the target's.
    if layout.startswith("fortran"):
        assert got_grad.flags.f_contiguous
    elif layout == "transposed-target":
        assert got_grad.flags.c_contiguous


@pytest.mark.parametrize("where", ["fresh", "input", "target", "strided"])
@pytest.mark.parametrize("loss", LOSSES, ids=IDS)
def test_out_receives_gradient(backend, loss, where):
    rng = np.random.default_rng(4)
    x, target = (a.astype(np.float32) for a in loss.inputs(rng, (50, 20)))
    want_loss, want_grad = torch_reference(loss, x, target, "mean", {})
    x_b, target_b = to_backend(x, backend), to_backend(target, backend)
    out = {"fresh": lambda: to_backend(np.empty_like(x), backend), "input": lambda: x_b,
           "target": lambda: target_b,
           "strided": lambda: to_backend(np.empty((50, 40), np.float32), backend)[:, ::2]}[where]()
    got_loss, got_grad = loss.with_grad(x_b, target_b, backend=backend, out=out)
    assert got_grad is out
    assert_close(out, want_grad, np.float32)
    assert_close(got_loss, want_loss, np.float32)


@pytest.mark.parametrize("loss", LOSSES, ids=IDS)
def test_float16_out_gets_the_bits_of_the_call_without_it(backend, loss):
    # Computed in float32 and rounded once into out=, as into a new gradient.
    x, target = (to_backend(a.astype(np.float16), backend)
                 for a in loss.inputs(np.random.default_rng(2), (64, 64)))
    _, want = loss.with_grad(x, target, reduction="sum", backend=backend)
    out = to_backend(np.empty((64, 64), np.float16), backend)
    _, got = loss.with_grad(x, target, reduction="sum", backend=backend, out=out)
    assert got is out and want.dtype == np.float16
    np.testing.assert_array_equal(to_host(got).view(np.uint16), to_host(want).view(np.uint16))


@pytest.mark.parametrize("loss", LOSSES, ids=IDS)
def test_inputs_are_not_modified(backend, loss):
    rng = np.random.default_rng(5)
    x, target = (a.astype(np.float32) for a in loss.inputs(rng, (30, 30)))
    x_b, target_b = to_backend(x, backend), to_backend(target, backend)
    for reduction in REDUCTIONS:
        loss.with_grad(x_b, target_b, reduction=reduction, backend=backend)
    np.testing.assert_array_equal(to_host(x_b), x)
    np.testing.assert_array_equal(to_host(target_b), target)


@pytest.mark.parametrize("loss", LOSSES, ids=IDS)
def test_empty_input(backend, loss):
    empty = to_backend(np.zeros((0, 5), np.float32), backend)
    fn = getattr(fl, loss.name)
    assert np.isnan(to_host(fn(empty, empty, backend=backend)))
    assert to_host(fn(empty, empty, reduction="sum", backend=backend)) == 0
    assert getattr(fl, f"{loss.name}_grad")(empty, empty, backend=backend).shape == (0, 5)


EXTREMES = {
    # (input, target) pairs that are valid, and finite where PyTorch is.
    "l1": ([1e30, -1e30, 0.5, 2.0], [0.0, 1e30, 0.5, -1e30]),
    "smooth_l1": ([1e30, -1e30, 0.5, 2.0], [0.0, 1e30, 0.5, -1e30]),
    "huber": ([1e30, -1e30, 0.5, 2.0], [0.0, 1e30, 0.5, -1e30]),
    "binary_cross_entropy_with_logits": ([1e30, -1e30, 1e30, -1e30, 0.0, 50.0],
                                         [1.0, 0.0, 0.3, 0.7, 0.5, 1.0]),
    "binary_cross_entropy": ([0.0, 1.0, 0.0, 1.0, 1e-30, 1.0 - 1e-16],
                             [0.0, 1.0, 1.0, 0.0, 0.5, 0.5]),
    "hinge": ([1e30, -1e30, 1.0, -1.0], [1.0, 1.0, 1.0, 1.0]),
    "kl_div": ([1e30, -1e30, -np.inf, 0.0, -50.0], [0.0, 0.0, 0.0, 1e-30, 1.0]),
}


@pytest.mark.parametrize("loss", LOSSES, ids=IDS)
def test_extreme_values_match_torch(backend, dtype, loss):
    x, target = (np.array(a, dtype) for a in EXTREMES[loss.name])
    want_loss, want_grad = torch_reference(loss, x, target, "none", {})
    got_loss, got_grad = _run(loss, backend, x, target, "none")
    assert_close(got_loss, want_loss, dtype)
    assert_close(got_grad, want_grad, dtype)


def test_smooth_l1_with_beta_0_is_l1_at_a_tie(backend, dtype):
    """beta = 0 takes the linear branch everywhere: |x - t| < 0 never holds, so a tie is
    not 0.5 * 0 / 0."""
    x, target = np.array([1.0, 2.0, 3.0], dtype), np.array([1.0, 0.0, 3.0], dtype)
    want_loss, want_grad = torch_reference(LOSSES[1], x, target, "none", {"beta": 0.0})
    loss, grad = _run(LOSSES[1], backend, x, target, "none", {"beta": 0.0})
    assert_close(to_host(loss), want_loss, dtype)
    assert_close(to_host(grad), want_grad, dtype)


def test_kl_div_target_of_zero_adds_plus_zero_and_a_negative_one_nan(backend, dtype):
    # PyTorch's xlogy(t, t) - t x: +0 for t = 0 (0 log 0 = 0, not 0 times a finite log of
    # the smallest float, which is -0), NaN for t < 0.
    x, target = np.array([1.0, 2.0, 0.5, 0.5], dtype), np.array([0.0, 0.0, -0.25, 0.25], dtype)
    loss = to_host(_run(LOSSES[-1], backend, x, target, "none", {})[0])
    assert (loss[:2] == 0).all() and not np.signbit(loss[:2]).any()
    assert np.isnan(loss[2]) and np.isfinite(loss[3])


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_l1_of_float32_is_computed_in_float64(backend):
    # |x - t| = 2**24 + 1 is exact in float64 and 2**24 in float32 (ties to even): three
    # such terms sum to 50331651, rounded once to the float32 50331652, not 3 * 2**24.
    x, target = np.full(3, 2.0**24 + 2, np.float32), np.ones(3, np.float32)
    assert float(fl.l1(x, target, reduction="sum", backend=backend)) == 50331652.0


def test_kl_div_log_target_of_minus_inf_adds_nothing(backend, dtype):
    """A log target of -inf is a probability of 0: loss 0 (PyTorch: 0 * -inf = NaN) and
    gradient -0, as for a probability target of 0."""
    x, target = np.array([-1.0, -2.0], dtype), np.array([-np.inf, -1.0], dtype)
    loss, grad = _run(LOSSES[-1], backend, x, target, "none", {"log_target": True})
    loss, grad = to_host(loss), to_host(grad)
    assert loss[0] == 0 and grad[0] == 0 and np.signbit(grad[0])
    want_loss, want_grad = torch_reference(LOSSES[-1], x[1:], target[1:], "none",
                                           {"log_target": True})
    assert_close(loss[1:], want_loss, dtype)
    assert_close(grad[1:], want_grad, dtype)


@pytest.mark.parametrize("loss", LOSSES, ids=IDS)
def test_nan_in_nan_out(backend, loss):
    x, target = (a.astype(np.float32) for a in loss.inputs(np.random.default_rng(6), (10, 10)))
    x[3, 4] = np.nan
    got_loss, got_grad = _run(loss, backend, x, target, "none")
    got_loss, got_grad = to_host(got_loss), to_host(got_grad)
    assert np.isnan(got_loss[3, 4])
    if loss.name == "kl_div":  # its gradient, -target, does not read the input
        assert np.isfinite(got_grad).all()
        return
    assert np.isnan(got_grad[3, 4])
    assert np.isfinite(np.delete(got_grad.ravel(), 34)).all()


@pytest.mark.parametrize("shape", [(37, 11), (37,), ()],  # 1-d: over the elements;
                         ids=["2-d", "1-d", "0-d"])  # 0-d: the sum
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div_batchmean_matches_torch(backend, dtype, log_target, shape):
    loss = LOSSES[-1]
    x, target = (a.astype(dtype) for a in loss.inputs(np.random.default_rng(9), shape))
    options = {"log_target": log_target}
    want_loss, want_grad = torch_reference(loss, x, target, "batchmean", options)
    got_loss, got_grad = _run(loss, backend, x, target, "batchmean", options)
    assert_close(got_loss, want_loss, dtype)
    assert_close(got_grad, want_grad, dtype)


def test_kl_div_of_a_log_target_past_the_largest_float_is_inf(backend, dtype):
    """PyTorch's e^t (t - x): inf, where p log p - p x would be inf - inf = NaN."""
    target = np.array([100.0 if dtype == np.float32 else 710.0, 0.0], dtype)
    x = np.array([1.0, -1.0], dtype)
    loss, grad = _run(LOSSES[-1], backend, x, target, "none", {"log_target": True})
    assert np.isposinf(to_host(loss)[0]) and np.isneginf(to_host(grad)[0])
    assert_close(to_host(loss)[1:], [1.0], dtype)


def test_infinite_logits_give_the_limit(backend):
    """Where PyTorch computes 0 * inf = NaN, the coefficient 0 adds nothing."""
    logits = np.array([np.inf, -np.inf, np.inf, -np.inf])
    target = np.array([1.0, 0.0, 0.0, 1.0])
    loss, grad = _run(LOSSES[3], backend, logits, target, "none")
    np.testing.assert_array_equal(to_host(loss), [0.0, 0.0, np.inf, np.inf])
    np.testing.assert_array_equal(to_host(grad), [0.0, 0.0, 1.0, -1.0])


def test_tiny_terms_keep_their_digits(backend, dtype):
    """Where a term is far below 1 the result keeps its relative precision: BCE's
    log(1 - p) of a tiny p (log1p(-p), as PyTorch), and BCE with logits' gradient
    sigmoid(x) - t of a very negative logit with t = 0 (no cancellation against 1)."""
    tiny = 1e-40 if dtype == np.float64 else 1e-30
    probs = np.array([1e-12, 1e-8, 1e-5, 1e-3, 0.25, tiny], dtype)
    exact = -np.log1p(-probs.astype(np.float64))
    loss = fl.binary_cross_entropy(to_backend(probs, backend), to_backend(np.zeros_like(probs),
                                   backend), reduction="none", backend=backend)
    np.testing.assert_allclose(to_host(loss), exact, rtol=TOLERANCE[np.dtype(dtype)][0], atol=0)

    logits = np.array([-10.0, -15.0, -20.0, -40.0, -80.0], dtype)
    exp = np.exp(logits.astype(np.float64))
    loss, grad = fl.binary_cross_entropy_with_logits_with_grad(
        to_backend(logits, backend), to_backend(np.zeros_like(logits), backend),
        reduction="none", backend=backend)
    rtol = TOLERANCE[np.dtype(dtype)][0]
    np.testing.assert_allclose(to_host(grad), exp / (1.0 + exp), rtol=rtol, atol=0)
    np.testing.assert_allclose(to_host(loss), np.log1p(exp), rtol=rtol, atol=0)


@pytest.mark.parametrize("beta", [1e-310, 1e-300], ids=["subnormal", "tiny"])
def test_tiny_beta(backend, dtype, beta):
    """smooth_l1's quadratic part with a beta whose reciprocal overflows (subnormal), or
    below which diff * diff underflows (tiny)."""
    pred = np.array([0.0, 0.2 * beta, -0.5 * beta, 1.0], dtype)
    target = np.zeros_like(pred)
    diff = pred.astype(np.float64)
    with np.errstate(over="ignore"):  # diff / beta where the other branch is taken
        want_grad = np.where(np.abs(diff) < beta, diff / beta, np.sign(diff))
        want_loss = np.where(np.abs(diff) < beta, 0.5 * diff * (diff / beta),
                             np.abs(diff) - beta / 2)
    loss, grad = fl.smooth_l1_with_grad(to_backend(pred, backend), to_backend(target, backend),
                                        beta=beta, reduction="none", backend=backend)
    assert_close(grad, want_grad, dtype)
    assert_close(loss, want_loss, dtype)


def test_gradient_is_zero_where_equal_and_at_the_kink(backend):
    x = np.array([1.0, -2.0, 0.5])
    l1_grad = fl.l1_grad(to_backend(x, backend), to_backend(x.copy(), backend), backend=backend)
    assert (to_host(l1_grad) == 0).all()
    hinge_grad = fl.hinge_grad(to_backend(np.array([1.0, -1.0]), backend),
                               to_backend(np.array([1.0, -1.0]), backend), backend=backend)
    assert (to_host(hinge_grad) == 0).all()


# --- values outside a loss's domain -------------------------------------------------------

OUTSIDE = {
    # (loss, the argument outside its domain, input, target); element 1 is outside.
    "bce-probs": ("binary_cross_entropy", "probs", np.array([0.5, 1.5, 0.2]),
                  np.array([1.0, 0.0, 1.0])),
    "bce-target": ("binary_cross_entropy", "target", np.array([0.5, 0.5, 0.2]),
                   np.array([1.0, -0.25, 1.0])),
    "hinge": ("hinge", "target", np.array([0.5, 1.5, 0.2]), np.array([1.0, 0.0, -1.0])),
}


@pytest.mark.parametrize("case", sorted(OUTSIDE))
# out: none, an input itself, or a view of an input's memory (another object).
@pytest.mark.parametrize("where", ["fresh", "input", "input view", "target view"])
@pytest.mark.parametrize("reduction", ["mean", "none"], ids=["common-path", "full-path"])
def test_outside_the_domain_is_a_value_error_on_the_cpu(case, where, reduction):
    name, argument, x, target = OUTSIDE[case]
    # The message names the argument and its first value outside, as a plain number.
    value = (x if argument == "probs" else target)[1]
    for backend in ("numpy", "numba"):
        x_copy, target_copy = x.copy(), target.copy()
        out = {"fresh": None, "input": x_copy, "input view": x_copy[:],
               "target view": target_copy[:]}[where]
        with pytest.raises(ValueError, match=rf"^{argument} must .*; got {value}$"):
            getattr(fl, f"{name}_with_grad")(x_copy, target_copy, backend=backend, out=out,
                                             reduction=reduction)
        # Checked before the kernel overwrote them.
        np.testing.assert_array_equal(x_copy, x)
        np.testing.assert_array_equal(target_copy, target)


@pytest.mark.parametrize("case", sorted(OUTSIDE))
def test_outside_the_domain_is_nan_on_cuda(cupy, case):
    name, _, x, target = OUTSIDE[case]
    loss, grad = getattr(fl, f"{name}_with_grad")(cupy.asarray(x), cupy.asarray(target),
                                                  reduction="none", backend="cuda")
    assert np.isnan(to_host(loss)[1]) and np.isnan(to_host(grad)[1])
    assert np.isfinite(to_host(loss)[[0, 2]]).all()


def test_nan_inside_the_domain_is_nan_not_an_error():
    loss = fl.binary_cross_entropy(np.array([np.nan, 0.5]), np.array([1.0, 0.0]))
    assert np.isnan(loss)
    assert np.isnan(fl.hinge(np.array([1.0, 2.0]), np.array([np.nan, 1.0])))
    # In place too: the check must not read the gradient the kernel wrote over an input.
    for backend in ("numpy", "numba"):
        for name, x, target in (("binary_cross_entropy", [np.nan, 0.9], [0.0, 0.0]),
                                ("hinge", [np.nan, 0.2], [1.0, -1.0])):
            for aliased in ("input", "target"):
                x_copy, target_copy = np.array(x), np.array(target)
                out = x_copy if aliased == "input" else target_copy
                loss, _ = getattr(fl, f"{name}_with_grad")(x_copy, target_copy, out=out,
                                                           backend=backend)
                assert np.isnan(loss)




ROUNDED_TARGETS = [
    # (loss, a float64 target that rounds into the domain in float32, one that does not)
    ("binary_cross_entropy", [1 + 1e-12, 0.0, -1e-60], [1 + 1e-7, 0.0, 0.0]),
    ("hinge", [1 + 1e-12, -1.0, 1.0], [1 + 1e-7, -1.0, 1.0]),
]


@pytest.mark.parametrize("name, inside, outside", ROUNDED_TARGETS,
                         ids=[case[0] for case in ROUNDED_TARGETS])
def test_the_domain_is_that_of_the_target_the_kernel_reads(name, inside, outside):
    # A float64 target is rounded to the float32 input's dtype: 1 + 1e-12 becomes 1, a valid
    # target, whatever else the call holds (a NaN input, an in-place gradient); 1 + 1e-7
    # stays past 1 and is refused.
    with_grad = getattr(fl, f"{name}_with_grad")
    for backend in ("numpy", "numba"):
        for x in (np.array([0.2, 0.7, 0.9], np.float32), np.array([0.2, np.nan, 0.9], np.float32)):
            loss, grad = with_grad(x, np.float32(inside), backend=backend, reduction="none")
            in_place = x.copy()
            rounded = with_grad(x, np.array(inside), backend=backend, reduction="none")
            _, in_place_grad = with_grad(in_place, np.array(inside), backend=backend,
                                         reduction="none", out=in_place)
            np.testing.assert_array_equal(rounded[0], loss)
            np.testing.assert_array_equal(rounded[1], grad)
            np.testing.assert_array_equal(in_place_grad, grad)
            with pytest.raises(ValueError, match="target"):
                with_grad(x, np.array(outside), backend=backend)


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize("loss", LOSSES, ids=IDS)
def test_bad_inputs_name_the_argument(loss):
    rng = np.random.default_rng(7)
    x, target = (a.astype(np.float32) for a in loss.inputs(rng, (4, 5)))
    name = "pred" if loss.name in ("l1", "smooth_l1", "huber") else {
        "binary_cross_entropy_with_logits": "logits", "binary_cross_entropy": "probs",
        "hinge": "scores", "kl_div": "input"}[loss.name]
    fn, grad_fn = getattr(fl, loss.name), getattr(fl, f"{loss.name}_grad")
    cases = [
        (ValueError, "target", lambda: fn(x, target[:, :4])),
        # Of x's size and layout, not its shape (the common path's own check).
        (ValueError, "target", lambda: fn(x, target.reshape(5, 4))),
        (ValueError, "target", lambda: fn(x, target.reshape(-1))),
        (TypeError, name, lambda: fn(x.astype(np.int32), target)),
        (TypeError, "target", lambda: fn(x, target.astype(np.int64))),
        (TypeError, name, lambda: fn(x.astype(np.complex64), target)),
        (ValueError, "reduction", lambda: fn(x, target, reduction="avg")),
        (ValueError, "backend", lambda: fn(x, target, backend="jax")),
        (ValueError, "out", lambda: grad_fn(x, target, out=np.empty((5, 4), np.float32))),
        (TypeError, "out", lambda: grad_fn(x, target, out=np.empty((4, 5)))),
        (TypeError, "out", lambda: grad_fn(x, target, out=x.tolist())),
        (TypeError, name, lambda: fn(object(), target)),
        # None is no array, also where the input takes the common path.
        (TypeError, "target", lambda: fn(x, None)),
        (TypeError, "target", lambda: grad_fn(x, None, backend="numpy")),
    ]
    for error, argument, call in cases:
        with pytest.raises(error, match=argument):
            call()


@pytest.mark.parametrize(
    "call, error, argument",
    [
        (lambda x, t: fl.smooth_l1(x, t, beta=-1.0), ValueError, "beta"),
        (lambda x, t: fl.smooth_l1(x, t, beta="1"), TypeError, "beta"),
        (lambda x, t: fl.huber(x, t, delta=0.0), ValueError, "delta must be a finite number > 0"),
        (lambda x, t: fl.huber(x, t, delta=-1.0), ValueError, "delta must be a finite number > 0"),
        (lambda x, t: fl.huber(x, t, delta=np.inf), ValueError, "delta"),
        (lambda x, t: fl.hinge(x, np.sign(t) + (t == 0), margin=np.nan), ValueError, "margin"),
        (lambda x, t: fl.binary_cross_entropy_with_logits(x, t, weight=np.ones(4)), ValueError,
         "weight"),
        (lambda x, t: fl.binary_cross_entropy_with_logits(x, t, pos_weight=np.ones(4)),
         ValueError, "pos_weight"),
        (lambda x, t: fl.binary_cross_entropy_with_logits(x, t, pos_weight=np.ones(5, bool)),
         TypeError, "pos_weight"),
        (lambda x, t: fl.binary_cross_entropy(x.clip(0, 1), t.clip(0, 1), weight="w"),
         TypeError, "weight"),
        (lambda x, t: fl.kl_div(x, t, log_target=1), TypeError, "log_target"),
        (lambda x, t: fl.kl_div(x, t, reduction="batch"), ValueError, "batchmean"),
        # batchmean reads the batch size only from an array: a ragged list gets the TypeError
        # of any other reduction.
        (lambda x, t: fl.kl_div([[0.1, 0.2], [0.3]], t, reduction="batchmean"), TypeError,
         "input must be an array"),
        # Integers past float's range are out of range, not Python's OverflowError.
        (lambda x, t: fl.smooth_l1(x, t, beta=10**400), ValueError, "beta"),
        (lambda x, t: fl.huber(x, t, delta=10**400), ValueError, "delta"),
        (lambda x, t: fl.hinge(x, np.sign(t) + (t == 0), margin=-10**400), ValueError, "margin"),
        (lambda x, t: fl.mse(x, t, reduction=np.array(["mean", "sum"])), ValueError,
         "reduction"),
    ],
)
def test_bad_options_name_the_option(call, error, argument):
    rng = np.random.default_rng(8)
    x, target = rng.standard_normal((4, 5)), rng.random((4, 5))
    with pytest.raises(error, match=argument):
        call(x, target)


def test_kl_div_batchmean_of_lists_is_the_mean():
    """batchmean takes the batch size from a list as from an array (a ragged one gets the
    TypeError of any reduction)."""
    log_probs = [[-1.0, -2.0], [-0.5, -1.5], [-0.3, -0.1]]
    probs = [[0.2, 0.8], [0.5, 0.5], [0.9, 0.1]]
    for backend in ("numpy", "numba"):
        total = fl.kl_div(log_probs, probs, reduction="sum", backend=backend)
        assert fl.kl_div(log_probs, probs, reduction="batchmean", backend=backend) == total / 3
        assert fl.kl_div(tuple(log_probs), probs, reduction="batchmean",
                         backend=backend) == total / 3


@pytest.mark.parametrize("name", ["softmax_cross_entropy", "nll", "multi_margin"])
def test_class_weights_of_bfloat16_weigh_as_the_per_element_ones_do(name):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = np.random.default_rng(3).standard_normal((5, 4)).astype(np.float32)
    labels, weight = np.array([0, 1, 2, 3, 0]), np.array([1, 2, 0.5, 3])
    function = getattr(fl, name)
    assert (function(x, labels, weight=weight.astype(ml_dtypes.bfloat16))
            == function(x, labels, weight=weight))


def test_integer_weights_weigh_as_floats():
    # Per-element weights are real-valued arrays, integers too (as PyTorch promotes them).
    x, target = np.array([[0.3, -1.2, 2.0]]), np.array([[1.0, 0.0, 1.0]])
    for option in ("weight", "pos_weight"):
        want = fl.binary_cross_entropy_with_logits(x, target, **{option: np.array([1.0, 2, 3])})
        assert fl.binary_cross_entropy_with_logits(x, target,
                                                   **{option: np.array([1, 2, 3])}) == want


def test_a_per_element_array_broadcasting_past_the_input_is_refused_by_name():
    """weight and pos_weight must broadcast *to* the input's shape: one whose broadcast with it
    is larger (an extra leading axis) is the named ValueError, not NumPy's own."""
    rng = np.random.default_rng(10)
    x, target = rng.standard_normal((4, 5)), rng.random((4, 5))
    for backend in ("numpy", "numba"):
        for option in ("weight", "pos_weight"):
            with pytest.raises(ValueError, match=f"{option} must be broadcastable to the "
                                                 r"input's shape \(4, 5\); got \(2, 4, 5\)"):
                fl.binary_cross_entropy_with_logits(x, target, backend=backend,
                                                    **{option: np.ones((2, 4, 5))})


@pytest.mark.parametrize("cpu_backend", ["numpy", "numba"])
def test_a_float16_out_past_its_range_gets_inf_without_a_warning(cpu_backend):
    """A gradient past float16's range (computed in float32) is inf in out= as in a new
    gradient, as in PyTorch, and without NumPy's overflow warning."""
    x = np.full((3, 4), 60000.0, np.float16)
    target = -x
    _, want = fl.mse_with_grad(x, target, reduction="sum", backend=cpu_backend)
    out = np.empty_like(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, got = fl.mse_with_grad(x, target, reduction="sum", backend=cpu_backend, out=out)
    assert got is out and np.isinf(want).all()
    np.testing.assert_array_equal(out.view(np.uint16), want.view(np.uint16))


@pytest.mark.parametrize("cpu_backend", ["numpy", "numba"])
def test_a_loss_past_float32s_range_is_inf_without_a_warning(cpu_backend):
    # The float64 total rounds once to float32: inf, as PyTorch's, and quietly.
    x = np.full(8, 1e20, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for reduction in ("mean", "sum"):
            loss = fl.mse(x, np.zeros_like(x), reduction=reduction, backend=cpu_backend)
            assert type(loss) is np.float32 and loss == np.inf


# np.broadcast_shapes raises RuntimeError past 32 dimensions; NumPy arrays have up to 64.
WEIGHTED = [
    ("binary_cross_entropy_with_logits", "weight"),
    ("binary_cross_entropy_with_logits", "pos_weight"),
    ("binary_cross_entropy", "weight"),
]


@pytest.mark.parametrize("cpu_backend", ["numpy", "numba"])
@pytest.mark.parametrize(("name", "option"), WEIGHTED)
def test_weight_of_more_than_32_dimensions_is_a_value_error(cpu_backend, name, option):
    x = np.full((2, 3), 0.5)
    with pytest.raises(ValueError, match=option):
        getattr(fl, name)(x, x, backend=cpu_backend, **{option: np.ones((1,) * 40)})


@pytest.mark.parametrize("cpu_backend", ["numpy", "numba"])
@pytest.mark.parametrize(("name", "option"), WEIGHTED)
def test_input_of_more_than_32_dimensions_takes_a_weight(cpu_backend, name, option):
    x = np.full((1,) * 38 + (2, 3), 0.25)
    target = np.full_like(x, 0.5)
    got = getattr(fl, name)(x, target, backend=cpu_backend, **{option: np.full(3, 2.0)})
    want = getattr(F, name)(torch.tensor(x), torch.tensor(target),
                            **{option: torch.full((3,), 2.0, dtype=torch.float64)})
    np.testing.assert_allclose(got, want.item(), rtol=1e-12)


# A per-element array that broadcasting repeats whole along the kernel's walk (C order, or F
# for a Fortran input) reaches the kernels once, read modulo its length; any other is
# broadcast to all of the input's elements (fastloss.backends.ElementwiseLoss). Either way it
# must weigh as its broadcast does. Sizes past the serial kernel's, periods that do not
# divide a numba block, and one longer than a block.
REPEATING = [
    ((300, 1000), "C", (1000,)), ((300, 1000), "C", (1, 1000)), ((300, 1000), "C", ()),
    ((300, 1000), "C", (300, 1)), ((300, 1000), "F", (300, 1)), ((300, 1000), "F", (1000,)),
    ((70000, 3), "C", (3,)), ((5, 40000), "C", (40000,)), ((4, 50, 700), "C", (50, 700)),
    ((4, 50, 700), "C", (1, 50, 1)), ((4, 50, 700), "C", (4, 1, 700)),
    ((4, 50, 700), "F", (4, 50, 1)), ((37, 3), "C", (3,)),
]


@pytest.mark.parametrize("cpu_backend", ["numpy", "numba"])
@pytest.mark.parametrize(("name", "option"), WEIGHTED)
@pytest.mark.parametrize(("shape", "order", "values_shape"), REPEATING, ids=str)
def test_a_per_element_array_weighs_as_its_broadcast_does(cpu_backend, name, option, shape,
                                                          order, values_shape):
    rng = np.random.default_rng(5)
    x = np.asarray(rng.random(shape, np.float32), order=order)
    target = np.asarray(rng.random(shape) > 0.5, np.float32, order=order)
    values = rng.uniform(0.5, 2.0, values_shape).astype(np.float32)
    whole = np.array(np.broadcast_to(values, shape), order=order)
    function = getattr(fl, f"{name}_with_grad")
    got_loss, got_grad = function(x, target, backend=cpu_backend, **{option: values})
    # The same bits as the broadcast array gives (which reaches the kernels whole) ...
    whole_loss, whole_grad = function(x, target, backend=cpu_backend, **{option: whole})
    assert got_loss.tobytes() == whole_loss.tobytes()
    assert got_grad.tobytes() == whole_grad.tobytes()
    # ... and the values of the reference backend's float64 given the broadcast array.
    want_loss, want_grad = function(x.astype(np.float64), target.astype(np.float64),
                                    backend="numpy", **{option: whole.astype(np.float64)})
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5)
    np.testing.assert_allclose(got_grad, want_grad, rtol=1e-5, atol=1e-12)
