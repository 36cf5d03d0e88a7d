"""The common case (C-contiguous NumPy float arrays, default options, a reduced
loss, a CPU backend) takes a short path through the front: it must give the
bits of the full path, and bad input must still meet the full path's errors.

The full path is reached with the same data through an ndarray subclass,
which the short path does not accept and the full path converts to a plain
view without copying.
"""

import importlib
import os
import subprocess
import sys

import numpy as np
import pytest
from test_elementwise import LOSSES

import fastloss as fl
from fastloss import _registry
from fastloss.backends.numba import elementwise
from fastloss.backends.numba import softmax_cross_entropy as rows_kernels

CPU_BACKENDS = [name for name in ("numpy", "numba") if _registry.backend_status(name)[0]]


class Sub(np.ndarray):
    """A view type that only the full path accepts."""


def full_path(x):
    return x.view(Sub)


def test_a_full_path_view_is_refused_by_every_short_path_test():
    # The premise of the short-path tests below: they compare a plain call with one whose
    # arrays full_path made, which only the full path may take.
    from fastloss import _validate as v

    x, labels = np.zeros((4, 3), np.float32), np.zeros(4, np.int64)
    cases = [(v.plain_floats, (x, x, x)), (v.typed_floats, (x, x, x)),
             (v.typed_rows, (x, labels, x)), (v.plain_rows, (x, labels, x))]
    for test, arrays in cases:
        assert test(*arrays), test.__name__
        for position in range(3):
            viewed = list(arrays)
            viewed[position] = full_path(viewed[position])
            assert not test(*viewed), (test.__name__, position)


def _returned(loss, dtype, reduction) -> bool:
    """Whether ``loss`` is what a call with ``reduction`` returns: a NumPy scalar of
    ``dtype``, for "none" an ndarray of it."""
    if reduction == "none":
        return type(loss) is np.ndarray and loss.dtype == dtype
    return type(loss) is np.dtype(dtype).type


@pytest.fixture
def full_path_refused(monkeypatch):
    """The full path's backend look-up made to raise: a call that returns took a short path."""
    def full_path_taken(*args):
        raise AssertionError("the full path")

    monkeypatch.setattr(_registry, "backend", full_path_taken)


@pytest.fixture(params=["auto", *CPU_BACKENDS])
def cpu_backend(request):
    return request.param


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("where", ["new", "out", "in place"])
def test_mse_short_path_gives_the_full_paths_bits(cpu_backend, dtype, reduction, where):
    rng = np.random.default_rng(1)
    pred = rng.standard_normal((37, 11)).astype(dtype)
    target = rng.standard_normal((37, 11)).astype(dtype)
    results = []
    for wrap in (lambda x: x, full_path):
        p = pred.copy()
        out = {"new": None, "out": np.empty_like(p), "in place": p}[where]
        loss, grad = fl.mse_with_grad(wrap(p), target, reduction=reduction,
                                      backend=cpu_backend, out=out)
        assert _returned(loss, dtype, reduction) and grad.dtype == dtype
        assert out is None or grad is out
        results.append((loss, np.asarray(grad).copy()))
        assert np.array_equal(fl.mse(wrap(pred), target, reduction=reduction,
                                     backend=cpu_backend), loss)
    (short_loss, short_grad), (full_loss, full_grad) = results
    assert short_loss.tobytes() == full_loss.tobytes()
    np.testing.assert_array_equal(short_grad, full_grad)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("where", ["new", "out", "in place"])
@pytest.mark.parametrize("shape", [(70, 3), (5, 300)], ids=str)
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 1])
def test_cross_entropy_short_path_gives_the_full_paths_bits(
    cpu_backend, dtype, reduction, where, shape, smoothing
):
    rng = np.random.default_rng(2)
    logits = (3 * rng.standard_normal(shape)).astype(dtype)
    labels = rng.integers(0, shape[1], shape[0])
    labels[::4] = 7 if shape[1] > 7 else -100
    ignore_index = 7 if shape[1] > 7 else -100
    results = []
    for wrap in (lambda x: x, full_path):
        z = logits.copy()
        out = {"new": None, "out": np.empty_like(z), "in place": z}[where]
        loss, grad = fl.softmax_cross_entropy_with_grad(
            wrap(z), labels, reduction=reduction, ignore_index=ignore_index,
            label_smoothing=smoothing, backend=cpu_backend, out=out,
        )
        assert _returned(loss, dtype, reduction) and grad.dtype == dtype
        assert out is None or grad is out
        results.append((loss, np.asarray(grad).copy()))
    (short_loss, short_grad), (full_loss, full_grad) = results
    assert short_loss.tobytes() == full_loss.tobytes()
    np.testing.assert_array_equal(short_grad, full_grad)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("where", ["new", "out", "in place", "into the target"])
@pytest.mark.parametrize("shape", [(70, 3), (5, 300)], ids=str)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_against_probabilities_short_path_gives_the_full_paths_bits(
    cpu_backend, dtype, reduction, where, shape, smoothing
):
    rng = np.random.default_rng(3)
    logits = (3 * rng.standard_normal(shape)).astype(dtype)
    probs = rng.random(shape)
    probs = (probs / probs.sum(axis=1, keepdims=True)).astype(dtype)
    results = []
    for wrap in (lambda x: x, full_path):
        z, t = logits.copy(), probs.copy()
        out = {"new": None, "out": np.empty_like(z), "in place": z, "into the target": t}[where]
        loss, grad = fl.softmax_cross_entropy_with_grad(
            wrap(z), t, reduction=reduction, label_smoothing=smoothing, backend=cpu_backend,
            out=out,
        )
        assert _returned(loss, dtype, reduction) and (out is None or grad is out)
        results.append((loss.tobytes(), np.asarray(grad).tobytes()))
    assert results[0] == results[1]


def test_the_cross_entropy_front_takes_its_short_path_for_probabilities(full_path_refused):
    logits = np.zeros((4, 2), np.float32)
    loss, grad = fl.softmax_cross_entropy_with_grad(logits, np.full((4, 2), 0.5, np.float32),
                                                    reduction="sum")
    assert loss == np.float32(4 * np.log(2.0)) and not grad.any()
    with pytest.raises(AssertionError, match="the full path"):  # the premise
        fl.softmax_cross_entropy_with_grad(logits, np.full((4, 2), 0.5), reduction="sum")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("where", ["new", "out", "in place"])
@pytest.mark.parametrize("shape", [(70, 3), (5, 300)], ids=str)
@pytest.mark.parametrize(("name", "options"), [("nll", dict(ignore_index=2)),
                                               ("multi_margin", dict(p=2, margin=0.5))])
def test_class_label_short_path_gives_the_full_paths_bits(cpu_backend, name, options, shape,
                                                         where, reduction):
    rng = np.random.default_rng(7)
    x = rng.standard_normal(shape).astype(np.float32)
    labels = rng.integers(0, shape[1], shape[0])
    results = []
    for wrap in (lambda a: a, full_path):
        z = x.copy()
        out = {"new": None, "out": np.empty_like(z), "in place": z}[where]
        loss, grad = getattr(fl, f"{name}_with_grad")(wrap(z), labels, reduction=reduction,
                                                      backend=cpu_backend, out=out, **options)
        assert _returned(loss, np.float32, reduction) and (out is None or grad is out)
        results.append((loss.tobytes(), np.asarray(grad).tobytes()))
    assert results[0] == results[1]


@pytest.mark.parametrize("weight_dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("where", ["new", "in place", "weight inside out"])
@pytest.mark.parametrize("shape", [(70, 3), (5, 300)], ids=str)
@pytest.mark.parametrize(("name", "options"), [("softmax_cross_entropy", dict(ignore_index=1)),
                                               ("nll", dict(ignore_index=1)),
                                               ("multi_margin", dict(p=2, margin=0.5))])
def test_class_weights_short_path_gives_the_full_paths_bits(cpu_backend, name, options, shape,
                                                            where, reduction, weight_dtype):
    rng = np.random.default_rng(9)
    x = rng.standard_normal(shape)
    labels = rng.integers(0, shape[1], shape[0])
    weight = rng.random(shape[1]).astype(weight_dtype)
    results = []
    for wrap in (lambda a: a, full_path):
        z, w = x.copy(), weight.copy()
        out = {"new": None, "in place": z, "weight inside out": np.ones_like(z)}[where]
        if where == "weight inside out":
            out[0] = w[0]  # the kernel must read the weights before it writes out
            w = out[0] if weight_dtype == np.float64 else w
        loss, grad = getattr(fl, f"{name}_with_grad")(wrap(z), labels, reduction=reduction,
                                                      weight=w, backend=cpu_backend, out=out,
                                                      **options)
        assert out is None or grad is out
        results.append((loss.tobytes(), np.asarray(grad).tobytes()))
    assert results[0] == results[1]


@pytest.mark.parametrize("name", ["softmax_cross_entropy", "nll", "multi_margin"])
def test_the_row_fronts_take_their_short_path_with_class_weights(full_path_refused, name):
    x, labels = np.zeros((4, 2), np.float32), np.array([0, 1, 1, 1])
    loss = getattr(fl, name)(x, labels, weight=np.array([3.0, 1.0], np.float32))
    assert np.isfinite(loss)
    with pytest.raises(AssertionError, match="the full path"):  # the premise
        getattr(fl, name)(x, labels, weight=np.array([3, 1]))


def test_class_weights_the_short_path_cannot_take_meet_the_full_checks():
    logits, labels = np.zeros((4, 3), np.float32), np.zeros(4, np.int64)
    for weight, error in [(np.ones(2, np.float32), ValueError), (np.ones((1, 3)), ValueError),
                          (np.ones(3, np.complex64), TypeError), ([1.0, 1.0, 1.0], None),
                          (np.ones(3, np.int32), None), (np.ones(3, np.float16), None)]:
        outcomes = []
        for z in (logits, full_path(logits)):
            try:
                outcomes.append(fl.softmax_cross_entropy_grad(z, labels, weight=weight).tobytes())
            except (TypeError, ValueError) as exc:
                outcomes.append((type(exc), str(exc)))
        assert outcomes[0] == outcomes[1]
        assert error is None or outcomes[0][0] is error


@pytest.mark.parametrize("name", ["softmax_cross_entropy", "nll"])
@pytest.mark.parametrize("rows", [0, 3], ids=["empty", "all ignored"])
def test_a_mean_over_no_kept_row_is_the_same_nan_on_both_paths(cpu_backend, name, rows):
    # A compiled small call once divided by a count of 0 (0 / 0: x86's NaN has its sign bit
    # set); the front's path divides by NaN.
    x = np.random.default_rng(8).standard_normal((rows, 5)).astype(np.float32)
    labels = np.zeros(rows, np.int64)
    (short_loss, short_grad), (full_loss, full_grad) = (
        getattr(fl, f"{name}_with_grad")(wrap(x), labels, ignore_index=0, backend=cpu_backend)
        for wrap in (lambda a: a, full_path))
    assert np.isnan(short_loss)
    assert short_loss.tobytes() == full_loss.tobytes()
    assert short_grad.tobytes() == full_grad.tobytes()


def test_cross_entropy_short_path_checks_labels(cpu_backend):
    logits = np.zeros((200, 4), np.float32)
    labels = np.zeros(200, np.int64)
    labels[[150, 170]] = [4, -3]
    for call in (fl.softmax_cross_entropy, fl.softmax_cross_entropy_with_grad):
        with pytest.raises(ValueError, match=r"target holds class index 4, outside \[0, 4\)"):
            call(logits, labels, backend=cpu_backend)
        with pytest.raises(ValueError, match=r"class index 4, outside \[0, 4\)"):
            call(full_path(logits), labels, backend=cpu_backend)


@pytest.mark.parametrize(
    "options",
    [
        dict(reduction=np.array(["mean"])),
        dict(reduction=["mean"]),
        dict(backend=["auto"]),
        dict(ignore_index=True),
        dict(ignore_index=np.int64(-100)),
        dict(label_smoothing=False),
        dict(label_smoothing=1.5),
        dict(label_smoothing=-0.25),
        dict(label_smoothing=2),
        dict(label_smoothing=float("nan")),
        dict(label_smoothing=np.float32(0.25)),
        dict(label_smoothing=10**400),
        dict(out=np.zeros((3, 4), np.float32)),
        dict(out=np.zeros((4, 3), np.float64)),
        dict(out=[[0.0] * 3] * 4),
    ],
    ids=str,
)
def test_options_outside_the_common_case_meet_the_full_checks(options):
    """Each call either succeeds as on the full path or raises its error."""
    logits = np.zeros((4, 3), np.float32)
    labels = np.zeros(4, np.int64)
    outcomes = []
    for z in (logits, full_path(logits)):
        try:
            fl.softmax_cross_entropy_grad(z, labels, **options)
            outcomes.append(None)
        except (TypeError, ValueError) as error:
            outcomes.append((type(error), str(error)))
    assert outcomes[0] == outcomes[1]


def test_read_only_out_takes_the_full_path_and_is_rejected():
    pred = np.ones((4, 5), np.float32)
    out = np.empty_like(pred)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="out must be writeable"):
        fl.mse_grad(pred, pred, out=out)
    with pytest.raises(ValueError, match="out must be writeable"):
        fl.softmax_cross_entropy_grad(pred, np.zeros(4, np.int64), out=out)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_host_result_rounds_once_to_the_dtype(dtype):
    dtype = np.dtype(dtype)
    host = _registry.backend("numba")
    for value in (1.0 / 3.0, 1e-46, 1e300, -0.0, float("inf"), float("nan"), np.float64(0.1)):
        with np.errstate(over="ignore"):
            got, want = host.result(value, dtype), dtype.type(value)
        assert type(got) is dtype.type
        assert got.tobytes() == want.tobytes()


# Every elementwise loss, with its scalar options (test_elementwise's matrix).
ELEMENTWISE_CASES = [
    pytest.param(loss, options, id=f"{loss.name}-{options}")
    for loss in LOSSES for options in loss.options if not set(options) & set(loss.arrays)
]


# A small call's shapes (one and two dimensions), three dimensions and a size past
# SERIAL_ELEMENTS (which go through the front's Python checks), each way of writing the
# gradient; "auto" is numba's path.
SHORT_PATH_CASES = [
    pytest.param(shape, where, dtype, id=f"{shape}-{where}-{np.dtype(dtype)}")
    for shape in [(37, 11), (300,), (3, 4, 5)]
    for where in ["new", "out", "in place", "in target"] for dtype in [np.float32, np.float64]
] + [pytest.param((600, 256), where, np.float32, id=f"(600, 256)-{where}-float32")
     for where in ["new", "in place"]]


@pytest.mark.parametrize("cpu", CPU_BACKENDS)
@pytest.mark.parametrize(("shape", "where", "dtype"), SHORT_PATH_CASES)
@pytest.mark.parametrize(("loss", "options"), ELEMENTWISE_CASES)
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_elementwise_short_path_gives_the_full_paths_bits(cpu, loss, options, shape, where,
                                                          dtype, reduction):
    x, target = (a.astype(dtype) for a in loss.inputs(np.random.default_rng(3), shape))
    results = []
    for wrap in (lambda a: a, full_path):
        xs, ts = x.copy(), target.copy()
        out = {"new": None, "out": np.empty_like(xs), "in place": xs, "in target": ts}[where]
        got, grad = loss.with_grad(wrap(xs), ts, backend=cpu, out=out, reduction=reduction,
                                   **options)
        assert _returned(got, dtype, reduction) and grad.dtype == dtype
        assert out is None or grad is out
        results.append((got.tobytes(), np.asarray(grad).tobytes()))
    assert results[0] == results[1]


WEIGHTED_CASES = [
    pytest.param(loss, sorted(options), id=f"{loss.name}-{sorted(options)}")
    for loss in LOSSES for options in loss.options if set(options) & set(loss.arrays)
]


@pytest.mark.parametrize("cpu", CPU_BACKENDS)
@pytest.mark.parametrize(("shape", "where", "dtype"), SHORT_PATH_CASES)
@pytest.mark.parametrize(("loss", "names"), WEIGHTED_CASES)
@pytest.mark.parametrize("values_dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_weighted_elementwise_short_path_gives_the_full_paths_bits(cpu, loss, names, shape,
                                                                   where, dtype, values_dtype,
                                                                   reduction):
    rng = np.random.default_rng(4)
    x, target = (a.astype(dtype) for a in loss.inputs(rng, shape))
    arrays = {name: rng.uniform(0.5, 2.0, loss.arrays[name](shape)).astype(values_dtype)
              for name in names}
    results = []
    for wrap in (lambda a: a, full_path):
        xs, ts = x.copy(), target.copy()
        out = {"new": None, "out": np.empty_like(xs), "in place": xs, "in target": ts}[where]
        got, grad = loss.with_grad(wrap(xs), ts, backend=cpu, out=out, reduction=reduction,
                                   **arrays)
        assert _returned(got, dtype, reduction) and (out is None or grad is out)
        results.append((got.tobytes(), np.asarray(grad).tobytes()))
    assert results[0] == results[1]


@pytest.mark.parametrize("weight", [[1.0, 2.0, 3.0], np.ones(3, np.int32), np.ones(2),
                                    np.ones((2, 1, 3)), np.ones(3, np.complex64),
                                    np.ones((4, 3), np.float16), np.float64(2.0)],
                         ids=["list", "int32", "(2,)", "(2, 1, 3)", "complex", "float16",
                              "NumPy scalar"])
def test_a_weight_the_short_path_declines_meets_the_full_checks(weight):
    x, target = np.full((4, 3), 0.5, np.float32), np.ones((4, 3), np.float32)
    outcomes = []
    for z in (x, full_path(x)):
        try:
            loss, grad = fl.binary_cross_entropy_with_logits_with_grad(z, target, weight=weight)
            outcomes.append((loss.tobytes(), np.asarray(grad).tobytes()))
        except (TypeError, ValueError) as exc:
            outcomes.append((type(exc), str(exc)))
    assert outcomes[0] == outcomes[1]


def test_the_elementwise_front_takes_its_short_path_with_weights(full_path_refused):
    x, target = np.zeros((4, 3), np.float32), np.ones((4, 3), np.float32)
    weight = np.array([1.0, 2.0, 3.0], np.float32)
    loss = fl.binary_cross_entropy_with_logits(x, target, weight=weight, pos_weight=weight)
    assert loss == np.float32(np.log(2.0) * (1 + 4 + 9) / 3)
    with pytest.raises(AssertionError, match="the full path"):  # the premise
        fl.binary_cross_entropy_with_logits(x, target, weight=[1.0, 2.0, 3.0])


def _shifted(array, by=1):
    """``(copy, out)``: a copy of ``array`` and an array of its shape over the same buffer,
    ``by`` elements before it (after it for a negative ``by``)."""
    buffer = np.zeros(array.size + abs(by), array.dtype)
    start = max(by, 0)
    buffer[start:start + array.size] = array.ravel()
    copy = buffer[start:start + array.size].reshape(array.shape)
    return copy, buffer[start - by:start - by + array.size].reshape(array.shape)


def _small_call(name, dtype=np.float32):
    """The numba backend's small call of ``name`` and a plain case: x, target, out."""
    call = _registry.backend("numba").small_calls[name]
    rng = np.random.default_rng(5)
    x, target, out = (rng.standard_normal((6, 5)).astype(dtype) for _ in range(3))
    return call, x, target, out


@pytest.mark.skipif("numba" not in CPU_BACKENDS, reason="numba is not installed")
@pytest.mark.parametrize(
    "case",
    ["Fortran x", "strided target", "read-only out", "other shape", "other dtype",
     "out over shifted x", "out over shifted target", "out is x, not shared",
     "out is target, not shared", "past the serial size"],
)
def test_a_small_call_refuses_what_is_not_the_common_case_and_writes_nothing(case):
    call, x, target, out = _small_call("mse")
    if case == "Fortran x":
        x = np.asfortranarray(x)
    elif case == "strided target":
        target = np.repeat(target, 2, axis=1)[:, ::2]
    elif case == "read-only out":
        out.flags.writeable = False
    elif case == "other shape":
        target = target.reshape(5, 6)
    elif case == "other dtype":
        target = target.astype(np.float64)
    elif case == "out over shifted x":
        x, out = _shifted(x)
    elif case == "out over shifted target":
        target, out = _shifted(target, -1)
    elif case == "out is x, not shared":
        out = x[:]
    elif case == "out is target, not shared":
        out = target[:]
    else:
        x, target, out = (np.ones(elementwise.SERIAL_ELEMENTS + 1, np.float32) for _ in "xto")
    before = [a.copy() for a in (x, target, out)]
    assert call(x, target, out, x.size, 0.0, "not shared" not in case) is None
    for array, kept in zip((x, target, out), before, strict=True):
        np.testing.assert_array_equal(array, kept)


@pytest.mark.skipif("numba" not in CPU_BACKENDS, reason="numba is not installed")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("where", ["out", "none", "x", "target"])
def test_a_small_call_runs_the_kernel_on_the_common_case(where, dtype):
    call, x, target, out = _small_call("huber", dtype)
    kernel = _registry.backend("numba").kernels["huber"]
    want_grad = np.empty_like(x)
    want = kernel(x.ravel(), target.ravel(), want_grad.ravel(), None, 7.0, param=0.5)
    out = {"out": out, "none": None, "x": x, "target": target}[where]
    got = call(x, target, out, 7, 0.5, True)
    assert type(got) is float and got == want
    if out is not None:
        np.testing.assert_array_equal(out, want_grad)


def _recording(monkeypatch, name):
    """The numba backend's small call of ``name``, replaced by one that records its results."""
    host = _registry.backend("numba")
    call, results = host.small_calls[name], []
    monkeypatch.setitem(host.small_calls, name,
                        lambda *args: results.append(call(*args)) or results[-1])
    return results


@pytest.mark.skipif("numba" not in CPU_BACKENDS, reason="numba is not installed")
@pytest.mark.parametrize(("shape", "taken"), [((6, 5), True), ((30,), True), ((2, 3, 5), False)],
                         ids=str)
def test_the_front_takes_the_small_call_for_one_or_two_dimensions(monkeypatch, shape, taken):
    results = _recording(monkeypatch, "l1")
    x = np.arange(30, dtype=np.float32).reshape(shape)
    loss, grad = fl.l1_with_grad(x, np.zeros_like(x), backend="numba")
    assert loss == np.float32(14.5) and (grad == np.float32(1 / 30)).sum() == 29
    assert results == ([14.5] if taken else [])


@pytest.mark.skipif("numba" not in CPU_BACKENDS, reason="numba is not installed")
def test_a_zero_d_input_does_not_take_the_small_call(monkeypatch):
    # Each number of dimensions is a compilation of its own: 0-d goes the front's own way.
    results = _recording(monkeypatch, "l1")
    x = np.array(3.0, np.float32)
    loss, grad = fl.l1_with_grad(x, np.zeros_like(x), backend="numba")
    assert loss == np.float32(3.0) and grad.shape == () and grad == np.float32(1.0)
    assert results == []


@pytest.mark.skipif("numba" not in CPU_BACKENDS, reason="numba is not installed")
@pytest.mark.parametrize(("loss", "options"), ELEMENTWISE_CASES)
def test_every_elementwise_front_takes_its_small_call(monkeypatch, loss, options):
    results = _recording(monkeypatch, loss.name)
    x, target = (a.astype(np.float32) for a in loss.inputs(np.random.default_rng(3), (9, 4)))
    got, _ = loss.with_grad(x, target, backend="numba", out=np.empty_like(x), **options)
    assert len(results) == 1 and np.float32(results[0]) == got


# Each loss over rows with its kernel's options (the small call's), class 4 the one ignored
# where a loss ignores one.
ROW_LOSSES = {"softmax_cross_entropy": (4, 0.0), "nll": (4,), "multi_margin": (2, 0.5)}


def _rows_small_call(name):
    """The numba backend's small call of ``name`` and a plain case: logits, labels, out."""
    rng = np.random.default_rng(6)
    logits, out = (rng.standard_normal((8, 5)).astype(np.float32) for _ in range(2))
    return _registry.backend("numba").small_calls[name], logits, rng.integers(0, 5, 8), out


@pytest.mark.skipif("numba" not in CPU_BACKENDS, reason="numba is not installed")
@pytest.mark.parametrize(
    "case",
    ["Fortran logits", "int32 labels", "strided labels", "read-only out", "labels of 7 rows",
     "one dimension", "out over shifted logits", "out over the labels", "invalid label",
     "past the serial size"],
)
@pytest.mark.parametrize("name", ROW_LOSSES)
def test_a_rows_small_call_refuses_what_is_not_the_common_case(name, case):
    call, logits, labels, out = _rows_small_call(name)
    if case == "Fortran logits":
        logits = np.asfortranarray(logits)
    elif case == "int32 labels":
        labels = labels.astype(np.int32)
    elif case == "strided labels":
        labels = np.repeat(labels, 2)[::2]
    elif case == "read-only out":
        out.flags.writeable = False
    elif case == "labels of 7 rows":
        labels = labels[:7]
    elif case == "one dimension":
        logits, out = logits[0], out[0]
    elif case == "out over shifted logits":
        logits, out = _shifted(logits)
    elif case == "out over the labels":
        store = np.zeros(20, np.int64)
        store[:8] = labels
        labels, out = store[:8], store.view(np.float32)[:40].reshape(8, 5)
    elif case == "invalid label":
        labels[5] = 5
    else:
        serial = importlib.import_module(f"fastloss.backends.numba.{name}").SERIAL_ELEMENTS
        logits = out = np.zeros((serial // 4 + 1, 4), np.float32)
        labels = np.zeros(len(logits), np.int64)
    before = [a.copy() for a in (logits, labels, out)]
    assert call(logits, labels, out, True, ROW_LOSSES[name]) is None
    for array, kept in zip((logits, labels, out), before, strict=True):
        np.testing.assert_array_equal(array, kept)


@pytest.mark.skipif("numba" not in CPU_BACKENDS, reason="numba is not installed")
@pytest.mark.parametrize("where", ["out", "none", "in place"])
@pytest.mark.parametrize("mean", [True, False], ids=["mean", "sum"])
@pytest.mark.parametrize("name", ROW_LOSSES)
def test_a_rows_small_call_runs_the_kernel_on_the_common_case(name, where, mean):
    call, logits, labels, out = _rows_small_call(name)
    labels[2] = 4
    options = ROW_LOSSES[name]
    kernel = _registry.backend("numba").kernels[name]
    # The mean's divisor: the rows not ignored (all rows of the multi-class hinge).
    rows = float(labels.size if name == "multi_margin" else (labels != 4).sum())
    want_grad = np.empty_like(logits)
    want = kernel(logits, labels, None, want_grad, None, *options, rows if mean else 1.0)
    out = {"out": out, "none": None, "in place": logits}[where]
    got = call(logits, labels, out, mean, options)
    assert type(got) is float and got == want
    if out is not None:
        np.testing.assert_array_equal(out, want_grad)


@pytest.mark.skipif("numba" not in CPU_BACKENDS, reason="numba is not installed")
def test_the_cross_entropy_front_takes_the_small_call(monkeypatch):
    results = _recording(monkeypatch, "softmax_cross_entropy")
    logits = np.zeros((4, 2), np.float32)
    loss, grad = fl.softmax_cross_entropy_with_grad(logits, np.array([0, 1, 1, -100]),
                                                    reduction="sum")
    assert results == [3 * np.log(2.0)] and loss == np.float32(3 * np.log(2.0))
    np.testing.assert_array_equal(grad, [[-0.5, 0.5], [0.5, -0.5], [0.5, -0.5], [0, 0]])
    results.clear()
    loss, grad = fl.softmax_cross_entropy_with_grad(logits, np.array([0, 1, 1, -100]),
                                                    reduction="sum", label_smoothing=0.5)
    assert results == [3 * np.log(2.0)] and loss == np.float32(3 * np.log(2.0))
    np.testing.assert_array_equal(grad, [[-0.25, 0.25], [0.25, -0.25], [0.25, -0.25], [0, 0]])


_ONE_LOSS = """
import numpy as np
import fastloss as fl
from fastloss import _registry

x, y = np.arange(30, dtype=np.float32).reshape(6, 5), np.array([0, 1, 2, 3, 4, 0])
kernels = _registry.backend("numba").kernels
for name in {names}:
    if {kernels_only}:
        {{"mse": lambda: kernels["mse"](x.ravel(), np.zeros(30, np.float32), None, None, 30.0),
          "l1": lambda: kernels["l1"](x.ravel(), np.zeros(30, np.float32), None, None, 30.0),
          "softmax_cross_entropy": lambda: kernels["softmax_cross_entropy"](
              x, y, None, None, None, -100, 0.0, 6.0),
          "multi_margin": lambda: kernels["multi_margin"](x, y, None, None, None, 1, 1.0, 6.0),
          }}[name]()
    elif name in ("mse", "l1"):
        print(getattr(fl, name)(x, np.zeros_like(x), backend="numba"))
    else:
        print(getattr(fl, name)(x, y, backend="numba"))
"""


@pytest.mark.skipif("numba" not in CPU_BACKENDS, reason="numba is not installed")
# Two losses whose entries take arguments of the same types (a symbol names them too).
@pytest.mark.parametrize(("first", "second"),
                         [("mse", "l1"), ("softmax_cross_entropy", "multi_margin")])
def test_small_calls_cached_by_separate_processes_run_their_own_loss(tmp_path, first,
                                                                     second):
    """Each of two processes compiles one loss's small call into a shared cache, a third
    loads both: a compiled function's symbol counts the functions its process compiled
    before, so code of two losses' entries named alike could link one into the other."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))

    def run(names, kernels_only=False):
        script = _ONE_LOSS.format(names=names, kernels_only=kernels_only)
        return subprocess.run([sys.executable, "-c", script], env=env, check=True,
                              capture_output=True, text=True).stdout.split()

    run((first, second), kernels_only=True)  # then each process below compiles its entry only
    alone = run((first,)) + run((second,))
    assert run((first, second)) == alone and alone[0] != alone[1]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("where", ["new", "out", "in place"])
@pytest.mark.parametrize("shape", [(70, 3), (5, 300), (600, 256)], ids=str)
def test_entropy_short_path_gives_the_full_paths_bits(cpu_backend, shape, where, reduction):
    logits = (3 * np.random.default_rng(8).standard_normal(shape)).astype(np.float32)
    results = []
    for wrap in (lambda a: a, full_path):
        z = logits.copy()
        out = {"new": None, "out": np.empty_like(z), "in place": z}[where]
        loss, grad = fl.softmax_entropy_with_grad(wrap(z), reduction=reduction,
                                                  backend=cpu_backend, out=out)
        assert _returned(loss, np.float32, reduction) and (out is None or grad is out)
        results.append((loss.tobytes(), np.asarray(grad).tobytes()))
    assert results[0] == results[1]


@pytest.mark.skipif("numba" not in CPU_BACKENDS, reason="numba is not installed")
@pytest.mark.parametrize(
    "case", ["Fortran logits", "read-only out", "one dimension", "out over shifted logits",
             "no classes", "past the serial size"],
)
def test_an_entropy_small_call_refuses_what_is_not_the_common_case(case):
    call = _registry.backend("numba").small_calls["softmax_entropy"]
    logits, out = (np.random.default_rng(9).standard_normal((8, 5)).astype(np.float32)
                   for _ in range(2))
    if case == "Fortran logits":
        logits = np.asfortranarray(logits)
    elif case == "read-only out":
        out.flags.writeable = False
    elif case == "one dimension":
        logits, out = logits[0], out[0]
    elif case == "out over shifted logits":
        logits, out = _shifted(logits)
    elif case == "no classes":
        logits, out = logits[:, :0], out[:, :0]
    else:
        logits = out = np.zeros((rows_kernels.SERIAL_ELEMENTS // 4 + 1, 4), np.float32)
    before = [a.copy() for a in (logits, out)]
    assert call(logits, out, True) is None
    for array, kept in zip((logits, out), before, strict=True):
        np.testing.assert_array_equal(array, kept)


@pytest.mark.skipif("numba" not in CPU_BACKENDS, reason="numba is not installed")
@pytest.mark.parametrize("where", ["out", "none", "in place"])
@pytest.mark.parametrize("mean", [True, False], ids=["mean", "sum"])
def test_an_entropy_small_call_runs_the_kernel_on_the_common_case(where, mean):
    host = _registry.backend("numba")
    logits, out = (np.random.default_rng(9).standard_normal((8, 5)).astype(np.float32)
                   for _ in range(2))
    want_grad = np.empty_like(logits)
    want = host.kernels["softmax_entropy"](logits, want_grad, None, 8 if mean else 1)
    out = {"out": out, "none": None, "in place": logits}[where]
    got = host.small_calls["softmax_entropy"](logits, out, mean)
    assert type(got) is float and got == want
    if out is not None:
        np.testing.assert_array_equal(out, want_grad)



@pytest.mark.skipif("numba" not in CPU_BACKENDS, reason="numba is not installed")
@pytest.mark.parametrize(("name", "call"), [
    ("nll", lambda z, y: fl.nll_with_grad(z, y, ignore_index=4, backend="numba")),
    ("multi_margin",
     lambda z, y: fl.multi_margin_with_grad(z, y, p=2, margin=0.5, backend="numba")),
    ("softmax_entropy", lambda z, y: fl.softmax_entropy_with_grad(z, backend="numba")),
], ids=["nll", "multi_margin", "softmax_entropy"])
def test_the_other_row_fronts_take_their_small_calls(monkeypatch, name, call):
    results = _recording(monkeypatch, name)
    z = np.random.default_rng(10).standard_normal((6, 5)).astype(np.float32)
    loss, _ = call(z, np.array([0, 4, 2, 1, 4, 3]))
    assert len(results) == 1 and np.float32(results[0]) == loss


# The softmax functions: name -> (its inputs from logits z and a gradient g).
SOFTMAX_FUNCTIONS = {
    "softmax": lambda z, g: (z,),
    "log_softmax": lambda z, g: (z,),
    "softmax_backward": lambda z, g: (fl.softmax(z), g),
    "log_softmax_backward": lambda z, g: (fl.log_softmax(z), g),
}


@pytest.mark.parametrize("where", ["new", "out", "in place", "in the second"])
@pytest.mark.parametrize("shape", [(70, 3), (5, 300), (600, 256)], ids=str)
@pytest.mark.parametrize("name", SOFTMAX_FUNCTIONS)
def test_softmax_short_path_gives_the_full_paths_bits(cpu_backend, name, shape, where):
    rng = np.random.default_rng(11)
    z, g = (3 * rng.standard_normal(shape)).astype(np.float32), rng.random(shape, np.float32)
    results = []
    for wrap in (lambda a: a, full_path):
        inputs = [a.copy() for a in SOFTMAX_FUNCTIONS[name](z, g)]
        out = {"new": None, "out": np.empty_like(z), "in place": inputs[0],
               "in the second": inputs[-1]}[where]
        got = getattr(fl, name)(wrap(inputs[0]), *inputs[1:], out=out, backend=cpu_backend)
        assert got.dtype == np.float32 and (out is None or got is out)
        results.append(np.asarray(got).tobytes())
    assert results[0] == results[1]


@pytest.mark.skipif("numba" not in CPU_BACKENDS, reason="numba is not installed")
@pytest.mark.parametrize(
    "case", ["Fortran x", "read-only out", "one dimension", "other shape", "out over shifted x",
             "out over shifted g", "past the serial size"],
)
def test_a_softmax_small_call_refuses_what_is_not_the_common_case(case):
    call = _registry.backend("numba").small_calls["softmax_backward"]
    x, g, out = (np.random.default_rng(12).random((8, 5), np.float32) for _ in range(3))
    if case == "Fortran x":
        x = np.asfortranarray(x)
    elif case == "read-only out":
        out.flags.writeable = False
    elif case == "one dimension":
        x, g, out = x[0], g[0], out[0]
    elif case == "other shape":
        g = g.reshape(5, 8)
    elif case == "out over shifted x":
        x, out = _shifted(x)
    elif case == "out over shifted g":
        g, out = _shifted(g, -1)
    else:
        x = g = out = np.zeros((rows_kernels.SERIAL_ELEMENTS // 4 + 1, 4), np.float32)
    before = [a.copy() for a in (x, g, out)]
    assert call(x, g, out) is None
    for array, kept in zip((x, g, out), before, strict=True):
        np.testing.assert_array_equal(array, kept)


@pytest.mark.skipif("numba" not in CPU_BACKENDS, reason="numba is not installed")
@pytest.mark.parametrize("name", SOFTMAX_FUNCTIONS)
def test_the_softmax_fronts_take_their_small_calls(monkeypatch, name):
    results = _recording(monkeypatch, name)
    rng = np.random.default_rng(13)
    inputs = SOFTMAX_FUNCTIONS[name](rng.standard_normal((6, 5)), rng.random((6, 5)))
    got = getattr(fl, name)(*inputs, backend="numba")
    want = getattr(fl, name)(*(full_path(a) for a in inputs), backend="numba")
    assert results == [True] and got.tobytes() == np.asarray(want).tobytes()


def test_the_fronts_take_their_short_paths_for_reduction_none(full_path_refused):
    x, labels = np.zeros((4, 2), np.float32), np.array([0, 1, 1, 0])
    weight = np.array([1.0, 3.0], np.float32)
    log_2 = np.float32(np.log(2.0))
    calls = [
        (lambda: fl.mse_with_grad(x, np.ones_like(x), reduction="none"), np.ones((4, 2))),
        (lambda: fl.binary_cross_entropy_with_logits_with_grad(x, np.ones_like(x), weight=weight,
                                                               reduction="none"),
         np.tile(weight * log_2, (4, 1))),
        (lambda: fl.softmax_cross_entropy_with_grad(x, labels, reduction="none"),
         np.full(4, log_2)),
        (lambda: fl.softmax_cross_entropy_with_grad(x, np.full((4, 2), 0.5, np.float32),
                                                    reduction="none"), np.full(4, log_2)),
        (lambda: fl.nll_with_grad(x - log_2, labels, weight=weight, reduction="none"),
         weight[labels] * log_2),
        (lambda: fl.multi_margin_with_grad(x, labels, reduction="none"), np.full(4, 0.5)),
        (lambda: fl.softmax_entropy_with_grad(x, reduction="none"), np.full(4, log_2)),
    ]
    for call, want in calls:
        loss, grad = call()
        assert loss.dtype == np.float32 and grad.shape == x.shape
        np.testing.assert_allclose(loss, want, rtol=1e-6)
