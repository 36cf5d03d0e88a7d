"""fastloss.softmax_cross_entropy[_grad|_with_grad] on every backend, against PyTorch in float64."""

import warnings

import numpy as np
import pytest
from conftest import assert_close, confident_rows, max_ulps, to_backend, to_host
from hypothesis import given, settings
from hypothesis import strategies as st

import fastloss as fl

torch = pytest.importorskip("torch")
F = torch.nn.functional

SHAPES = [(1, 1), (1, 5), (197, 3), (37, 33), (64, 1000), (5000, 7)]
REDUCTIONS = ["mean", "sum", "none"]


def torch_reference(logits, target, reduction="mean", **options):
    """PyTorch's loss and gradient, computed in float64 from the same values."""
    logits_t = torch.tensor(logits.astype(np.float64), requires_grad=True)
    target_t = torch.tensor(target if target.dtype.kind in "iu" else target.astype(np.float64))
    if options.get("weight") is not None:
        options["weight"] = torch.tensor(options["weight"], dtype=torch.float64)
    loss = F.cross_entropy(logits_t, target_t, reduction=reduction, **options)
    loss.sum().backward()
    return loss.detach().numpy(), logits_t.grad.numpy()


def make_case(shape, dtype, targets, seed=0, scale=3.0):
    rows, classes = shape
    rng = np.random.default_rng(seed)
    logits = (scale * rng.standard_normal(shape)).astype(dtype)
    if targets == "labels":
        target = rng.integers(0, classes, rows)
        target[rng.random(rows) < 0.2] = -100
    else:
        target = rng.random(shape).astype(dtype)
        target /= target.sum(axis=1, keepdims=True)
    return logits, target


def run(backend, logits, target, reduction="mean", out=None, **options):
    if options.get("weight") is not None:
        options["weight"] = to_backend(options["weight"], backend)
    return fl.softmax_cross_entropy_with_grad(
        to_backend(logits, backend), to_backend(target, backend), reduction=reduction,
        backend=backend, out=out, **options,
    )


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("targets", ["labels", "probabilities"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_torch(backend, dtype, shape, reduction, targets, weighted, label_smoothing):
    logits, target = make_case(shape, dtype, targets)
    weight = np.random.default_rng(1).random(shape[1]) + 0.5 if weighted else None
    options = dict(weight=weight, label_smoothing=label_smoothing)
    want_loss, want_grad = torch_reference(logits, target, reduction, **options)
    loss, grad = run(backend, logits, target, reduction, **options)
    assert_close(loss, want_loss, dtype)
    assert_close(grad, want_grad, dtype)
    assert to_host(loss).dtype == dtype and grad.dtype == dtype and grad.shape == shape


# Shapes that take every layout: rows of two classes, rows in lanes, one row at a time.
CONFIDENT_CLASSES = [2, 10, 100, 1000]


@pytest.mark.parametrize("targets", ["labels", "one-hot probabilities"])
@pytest.mark.parametrize("classes", CONFIDENT_CLASSES)
def test_a_confident_rows_loss_and_label_gradient_keep_their_digits(backend, dtype, classes,
                                                                     targets):
    # Each row's label holds its max logit, and its loss log(1 + s) and label gradient
    # -s / (1 + s) run from about 1e-26 to 0.5 (conftest.confident_rows). A sum of
    # exponentials rounded to an ulp of 1 kept them to 1e-16 absolute (float64: thousands
    # of ulps off below 1e-12, 0 below 1e-16), as did a gradient p - q with both near 1
    # against probabilities. Both within a few ulps of the exact values (numba's float64
    # exponentials are within two each).
    rows = 512
    logits, labels, excess = confident_rows(rows, classes, dtype, seed=classes)
    target = labels
    if targets == "one-hot probabilities":
        target = np.zeros_like(logits)
        target[np.arange(rows), labels] = 1

    losses = fl.softmax_cross_entropy(to_backend(logits, backend), to_backend(target, backend),
                                      reduction="none", backend=backend)
    _, grad = run(backend, logits, target, reduction="sum")

    assert max_ulps(losses, np.log1p(excess), dtype) <= 6
    label_grad = to_host(grad)[np.arange(rows), labels]
    assert max_ulps(label_grad, -excess / (1 + excess), dtype) <= 6


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_three_functions_agree(backend, reduction):
    logits, target = make_case((20, 9), np.float32, "labels", seed=2)
    logits_b, target_b = to_backend(logits, backend), to_backend(target, backend)
    loss, grad = fl.softmax_cross_entropy_with_grad(logits_b, target_b, reduction=reduction,
                                                    backend=backend)
    np.testing.assert_array_equal(
        to_host(fl.softmax_cross_entropy(logits_b, target_b, reduction=reduction,
                                         backend=backend)), to_host(loss))
    np.testing.assert_array_equal(
        to_host(fl.softmax_cross_entropy_grad(logits_b, target_b, reduction=reduction,
                                              backend=backend)), to_host(grad))


def test_ignore_index_other_than_default(backend):
    logits, target = make_case((30, 6), np.float64, "labels", seed=3)
    target[target == -100] = 0
    target[::4] = 2
    want = torch_reference(logits, target, ignore_index=2, label_smoothing=0.2)
    got = run(backend, logits, target, ignore_index=2, label_smoothing=0.2)
    assert_close(got[0], want[0], np.float64)
    assert_close(got[1], want[1], np.float64)


def test_ignore_index_may_be_a_0d_integer_array(backend):
    # As NumPy takes an integer wherever it needs one: a NumPy integer or a 0-d integer array
    # (through __index__), but not a bool one nor a 1-element 1-D one.
    logits, target = make_case((30, 6), np.float64, "labels", seed=3)
    target[target == -100] = 0
    target[::4] = 2
    want = run(backend, logits, target, ignore_index=2)
    for ignore_index in (np.array(2), np.array(2, np.uint8), np.int32(2)):
        got = run(backend, logits, target, ignore_index=ignore_index)
        assert_close(got[0], want[0], np.float64)
        assert_close(got[1], want[1], np.float64)
    for ignore_index in (np.array(True), np.array([2]), np.array(2.0)):
        with pytest.raises(TypeError, match="ignore_index must be an int"):
            run(backend, logits, target, ignore_index=ignore_index)


def test_label_smoothing_of_one_is_the_uniform_target(backend):
    # The end of [0, 1] is allowed, as in PyTorch: the label no longer counts.
    logits, target = make_case((30, 6), np.float64, "labels", seed=4)
    want = torch_reference(logits, target, label_smoothing=1.0)
    got = run(backend, logits, target, label_smoothing=1.0)
    assert_close(got[0], want[0], np.float64)
    assert_close(got[1], want[1], np.float64)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.3])
def test_extreme_logits_match_torch(backend, dtype, label_smoothing):
    logits = np.array(
        [[1e30, -1e30, 0.0, 5.0], [-np.inf, 0.0, 1.0, -np.inf], [-1e30, -1e30, -1e30, 1e30],
         [3e38 if dtype == np.float32 else 1e300, 0.0, -1.0, 2.0]],
        dtype=dtype,
    )
    target = np.array([0, 2, 1, 3])
    want_loss, want_grad = torch_reference(logits, target, "none", label_smoothing=label_smoothing)
    loss, grad = run(backend, logits, target, "none", label_smoothing=label_smoothing)
    assert_close(loss, want_loss, dtype)  # inf where the true loss is inf (smoothing over -inf)
    assert_close(grad, want_grad, dtype)
    assert np.isfinite(to_host(grad)).all()


def test_infinite_weight_of_an_unused_class_adds_nothing(backend):
    logits, target = make_case((6, 3), np.float64, "labels", seed=9)
    target = np.array([1, 2, 1, 2, 1, 2])
    weight = np.array([np.inf, 1.0, 2.0])
    want_loss, want_grad = torch_reference(logits, target, "none", weight=weight)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no 0 * inf along the way
        loss, grad = run(backend, logits, target, "none", weight=weight)
    assert_close(loss, want_loss, np.float64)
    assert_close(grad, want_grad, np.float64)


@pytest.mark.parametrize("unused_weight", [np.inf, np.nan], ids=["inf", "nan"])
def test_an_ignored_row_adds_no_weight_to_the_mean(backend, unused_weight):
    """The "mean" divides by the weights of the rows kept: an ignored row's label looks up
    no weight, not even an infinite or NaN one of a class that no kept row has."""
    logits, _ = make_case((5, 3), np.float64, "labels", seed=4)
    target = np.array([1, -100, 2, -100, 1])
    weight = np.array([unused_weight, 1.0, 2.0])
    want_loss, want_grad = torch_reference(logits, target, "mean", weight=weight)
    loss, grad = run(backend, logits, target, "mean", weight=weight)
    assert_close(loss, want_loss, np.float64)
    assert_close(grad, want_grad, np.float64)


@pytest.mark.parametrize("classes", [3, 200], ids=["lanes", "row"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_infinite_weight_on_the_max_class_gives_inf(backend, classes, label_smoothing):
    """As PyTorch: the loss of a row whose weighted class is its max is inf, not the NaN of
    inf * (max - max)."""
    logits = np.full((2, classes), -3.0, np.float32)
    logits[:, :3] = [[0.0, 2.0, 1.0], [2.0, 0.0, 1.0]]
    labels = np.array([1, 1])  # row 0: its label is the max; row 1: it is not
    weight = np.ones(classes)
    weight[1] = np.inf
    want_loss, _ = torch_reference(logits, labels, "none", weight=weight,
                                   label_smoothing=label_smoothing)
    loss, _ = run(backend, logits, labels, "none", weight=weight,
                  label_smoothing=label_smoothing)
    np.testing.assert_array_equal(to_host(loss), want_loss)


@pytest.mark.parametrize("classes", [3, 200], ids=["lanes", "row"])
def test_infinite_probability_target_matches_torch(backend, classes):
    """inf or NaN exactly where PyTorch has them: an infinite target mass on the max class, on
    another class, on a -inf logit, and against a -inf target."""
    inf = np.inf
    rows = [([5.0, 1.0, 1.0], [inf, 0.0, 0.0]), ([5.0, 1.0, 1.0], [0.1, inf, 0.2]),
            ([5.0, 1.0, 1.0], [inf, inf, 0.0]), ([0.0, -inf, 1.0], [0.5, inf, 0.0]),
            ([5.0, 1.0, 1.0], [inf, -inf, 0.0])]
    logits = np.full((len(rows), classes), -3.0)
    target = np.zeros((len(rows), classes))
    for i, (z, t) in enumerate(rows):
        logits[i, :3], target[i, :3] = z, t
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # PyTorch's inf - inf in NumPy's view
        want_loss, want_grad = torch_reference(logits, target, "none")
    loss, grad = run(backend, logits, target, "none")
    np.testing.assert_array_equal(to_host(loss), want_loss)
    np.testing.assert_array_equal(np.isnan(to_host(grad)), np.isnan(want_grad))
    np.testing.assert_array_equal(np.isinf(to_host(grad)), np.isinf(want_grad))


def test_infinite_weight_on_a_class_of_zero_probability_is_nan_as_in_torch(backend):
    """PyTorch weighs the probabilities, w * t = inf * 0: NaN rows, on every backend alike."""
    logits = np.array([[1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 2.0, 3.0]])
    target = np.array([[0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.5, 0.0]])
    weight = np.array([1.0, 1.0, 1.0, np.inf])
    want_loss, want_grad = torch_reference(logits, target, "none", weight=weight)
    loss, grad = run(backend, logits, target, "none", weight=weight)
    np.testing.assert_array_equal(to_host(loss), want_loss)
    np.testing.assert_array_equal(to_host(grad), want_grad)


def test_zero_probability_on_minus_inf_logit_is_finite(backend):
    # 0 * log 0 = 0: PyTorch gives NaN here (0 * -inf); the limit is the right answer.
    logits = np.array([[0.0, -np.inf, 1.0]])
    target = np.array([[0.25, 0.0, 0.75]])
    loss, grad = run(backend, logits, target, "sum")
    log_softmax = np.array([0.0, 1.0]) - np.log(1 + np.e)
    assert_close(loss, -(0.25 * log_softmax[0] + 0.75 * log_softmax[1]), np.float64)
    softmax = np.exp(log_softmax)
    assert_close(grad, [[softmax[0] - 0.25, 0.0, softmax[1] - 0.75]], np.float64)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_a_label_of_zero_weight_on_a_minus_inf_logit_adds_nothing(backend, label_smoothing):
    """q_y w_y = 0 at a logit of -inf: no term (0 * log 0 = 0, as for a probability of 0),
    not 0 * inf = NaN (PyTorch's answer); the row's other classes count as usual."""
    logits = np.array([[-np.inf, 0.0, 1.0], [0.5, -np.inf, 2.0]])
    labels = np.array([0, 1])
    weight = np.array([0.0, 0.0, 2.0])
    classes = logits.shape[1]
    q = (1 - label_smoothing) * np.eye(classes)[labels] + label_smoothing / classes
    qw = q * weight
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    with np.errstate(invalid="ignore"):
        want_loss = np.where(qw == 0, 0.0, -qw * log_softmax).sum(axis=1)
    want_grad = np.exp(log_softmax) * qw.sum(axis=1, keepdims=True) - qw
    loss, grad = run(backend, logits, labels, "none", weight=weight,
                     label_smoothing=label_smoothing)
    assert_close(loss, want_loss, np.float64)
    assert_close(grad, want_grad, np.float64)


def test_nan_row_is_nan_even_where_the_target_has_no_mass(backend):
    """0 * log 0 = 0 spares classes of no target mass, not a NaN row; but an ignored row
    adds nothing, whatever its logits."""
    logits = np.array([[0.0, np.nan, 1.0], [-np.inf] * 3, [0.0, 1.0, 2.0]])
    target = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.5, 0.0, 0.5]])
    loss = to_host(run(backend, logits, target, "none")[0])
    assert np.isnan(loss[:2]).all() and np.isfinite(loss[2])
    labels = np.array([-100, -100, 1])
    loss = to_host(run(backend, logits, labels, "none")[0])
    np.testing.assert_array_equal(loss[:2], 0.0)
    assert np.isfinite(to_host(run(backend, logits, labels, "mean")[0]))


def test_nan_propagates_and_all_minus_inf_row_is_nan(backend):
    logits = np.zeros((3, 4), np.float32)
    logits[0, 1] = np.nan
    logits[1] = -np.inf
    loss, grad = run(backend, logits, np.array([0, 1, 2]), "none")
    loss, grad = to_host(loss), to_host(grad)
    assert np.isnan(loss[:2]).all() and np.isnan(grad[:2]).all()
    assert np.isfinite(loss[2]) and np.isfinite(grad[2]).all()


def test_every_row_ignored(backend):
    logits, _ = make_case((4, 3), np.float32, "labels")
    target = np.full(4, -100)
    loss, grad = run(backend, logits, target)
    assert np.isnan(to_host(loss))
    assert (to_host(grad) == 0).all()
    assert to_host(run(backend, logits, target, "sum")[0]) == 0


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_a_mean_over_rows_of_no_weight_is_nan(backend, label_smoothing):
    """The kept rows' labels weigh 0: PyTorch's mean is then 0 / 0, a NaN loss and NaN in the
    kept rows' gradients (0 in the ignored row's), also where smoothing leaves a sum that is
    not 0 (which gave inf, and an inf or NaN gradient by backend)."""
    logits = np.array([[0.1, 0.2, 0.3], [0.4, -0.2, 0.0], [1.0, 2.0, 3.0]], np.float32)
    weight = np.array([0.0, 1.0, 1.0], np.float32)
    target = np.array([0, -100, 0])
    loss, grad = fl.softmax_cross_entropy_with_grad(
        to_backend(logits, backend), to_backend(target, backend),
        weight=to_backend(weight, backend), label_smoothing=label_smoothing, backend=backend)
    grad = to_host(grad)
    assert np.isnan(to_host(loss))
    assert np.isnan(grad[[0, 2]]).all() and (grad[1] == 0).all()
    rows = fl.softmax_cross_entropy(to_backend(logits, backend), to_backend(target, backend),
                                    weight=to_backend(weight, backend), reduction="sum",
                                    label_smoothing=label_smoothing, backend=backend)
    assert np.isfinite(to_host(rows))  # the sum is not NaN


@pytest.mark.parametrize("targets", ["labels", "probabilities"])
def test_empty_batch(backend, targets):
    logits = np.zeros((0, 5), np.float32)
    target = np.zeros(0, np.int64) if targets == "labels" else np.zeros((0, 5), np.float32)
    assert np.isnan(to_host(run(backend, logits, target)[0]))
    assert to_host(run(backend, logits, target, "sum")[0]) == 0
    assert run(backend, logits, target)[1].shape == (0, 5)


@pytest.mark.parametrize("targets", ["labels", "probabilities"])
def test_half_precision_is_computed_in_float32(backend, targets):
    logits, target = make_case((70, 33), np.float16, targets, seed=4)
    want_loss, want_grad = torch_reference(logits, target, "sum", label_smoothing=0.1)
    loss, grad = run(backend, logits, target, "sum", label_smoothing=0.1)
    assert to_host(loss).dtype == np.float16 and grad.dtype == np.float16
    assert_close(loss, want_loss, np.float16)
    assert_close(grad, want_grad, np.float16)


@pytest.mark.parametrize("layout", ["fortran", "strided", "big-endian"])
def test_layouts(backend, layout):
    logits, target = make_case((40, 31), np.float64, "probabilities", seed=5)
    if layout == "fortran":
        logits, target = np.asfortranarray(logits), np.asfortranarray(target)
    elif layout == "big-endian":
        if backend == "cuda":
            pytest.skip("CuPy has no non-native byte order")
        logits, target = logits.astype(">f8"), target.astype(">f8")
    else:
        logits, target = logits[::2, ::3], target[::2, ::3] / target[::2, ::3].sum(1, keepdims=1)
    want_loss, want_grad = torch_reference(logits, target)
    loss, grad = run(backend, logits, target)
    assert_close(loss, want_loss, np.float64)
    assert_close(grad, want_grad, np.float64)


@pytest.mark.parametrize("where", ["fresh", "logits", "strided"])
def test_out_receives_gradient(backend, where):
    logits, target = make_case((25, 12), np.float32, "labels", seed=6)
    want_loss, want_grad = torch_reference(logits, target, weight=np.arange(1.0, 13.0))
    logits_b = to_backend(logits.copy(), backend)
    if where == "fresh":
        out = to_backend(np.empty_like(logits), backend)
    elif where == "logits":
        out = logits_b
    else:
        out = to_backend(np.empty((25, 24), np.float32), backend)[:, ::2]
    loss, grad = fl.softmax_cross_entropy_with_grad(
        logits_b, to_backend(target, backend), weight=to_backend(np.arange(1.0, 13.0), backend),
        backend=backend, out=out,
    )
    assert grad is out
    assert_close(out, want_grad, np.float32)
    assert_close(loss, want_loss, np.float32)


@pytest.mark.parametrize("classes", [12, 129, 1000])
def test_out_may_be_the_probability_target(backend, classes):
    """The kernels read a probability target after writing the gradient (long rows on
    numba), so an out= that is the target goes through a buffer of the front's."""
    logits, target = make_case((9, classes), np.float64, "probabilities", seed=8)
    want_loss, want_grad = torch_reference(logits, target, label_smoothing=0.1)
    out = to_backend(target.copy(), backend)
    loss, grad = fl.softmax_cross_entropy_with_grad(to_backend(logits, backend), out,
                                                    label_smoothing=0.1, backend=backend, out=out)
    assert grad is out
    assert_close(out, want_grad, np.float64)
    assert_close(loss, want_loss, np.float64)


def test_inputs_are_not_modified(backend):
    logits, target = make_case((30, 10), np.float32, "probabilities", seed=7)
    labels = np.arange(30) % 10
    weight = np.linspace(0.5, 2, 10)
    copies = [x.copy() for x in (logits, target, labels, weight)]
    moved = [to_backend(x, backend) for x in (logits, target, labels, weight)]
    for reduction in REDUCTIONS:
        fl.softmax_cross_entropy_with_grad(moved[0], moved[1], reduction=reduction,
                                           weight=moved[3], label_smoothing=0.1, backend=backend)
        fl.softmax_cross_entropy_with_grad(moved[0], moved[2], reduction=reduction,
                                           weight=moved[3], backend=backend)
    for original, after in zip(copies, moved, strict=True):
        np.testing.assert_array_equal(to_host(after), original)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(0, 40),
    classes=st.integers(1, 70),
    reduction=st.sampled_from(REDUCTIONS),
    label_smoothing=st.sampled_from([0.0, 0.05, 1.0]),
    weighted=st.booleans(),
    scale=st.sampled_from([1e-3, 1.0, 30.0, 1e4]),
    seed=st.integers(0, 2**32 - 1),
)
def test_hypothesis_matches_torch(rows, classes, reduction, label_smoothing, weighted, scale, seed):
    logits, target = make_case((rows, classes), np.float64, "labels", seed=seed, scale=scale)
    weight = np.random.default_rng(seed).random(classes) + 0.1 if weighted else None
    want_loss, want_grad = torch_reference(logits, target, reduction, weight=weight,
                                           label_smoothing=label_smoothing)
    for backend in ("numpy", "numba"):
        loss, grad = run(backend, logits, target, reduction, weight=weight,
                         label_smoothing=label_smoothing)
        np.testing.assert_allclose(loss, want_loss, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(grad, want_grad, rtol=1e-10, atol=1e-12)


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["softmax_cross_entropy", "nll", "multi_margin"])
@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("bad", [3, -1])
def test_an_invalid_label_in_the_first_row_is_found(name, backend, bad):
    if backend == "numba":
        pytest.importorskip("numba")
    with pytest.raises(ValueError, match=rf"class index {bad}, outside \[0, 3\)"):
        getattr(fl, name)(np.zeros((2, 3)), np.array([bad, 0]), reduction="sum", backend=backend)


@pytest.mark.parametrize("name", ["softmax_cross_entropy", "nll"])
def test_a_far_invalid_label_with_class_weights_is_found_without_reading_past_them(name):
    # Numba sums the kept rows' class weights while it looks for invalid labels: a label
    # far outside [0, k) must not index the weights (clamped), or the call reads memory
    # terabytes past them (a crash) instead of raising the label's error.
    pytest.importorskip("numba")
    bad = 2**40
    with pytest.raises(ValueError, match=rf"class index {bad}, outside \[0, 3\)"):
        getattr(fl, name)(np.zeros((2, 3)), np.array([0, bad]), weight=np.ones(3),
                          reduction="sum", backend="numba")


@pytest.mark.parametrize("backend", ["numpy", "numba", "dask"])
def test_ignore_index_of_a_class_is_refused_with_probabilities(backend):
    # PyTorch refuses an ignore_index >= 0 with a probability target; a negative one, which
    # names no class, is taken (and means nothing there).
    if backend != "numpy":
        pytest.importorskip(backend)
    logits, probs = make_case((4, 5), np.float32, "probabilities")
    if backend == "dask":
        import dask.array as da

        logits, probs, backend = da.from_array(logits), da.from_array(probs), "numpy"
    with pytest.raises(ValueError, match="ignore_index applies to class-index targets only"):
        fl.softmax_cross_entropy(logits, probs, ignore_index=0, backend=backend)
    loss = fl.softmax_cross_entropy(logits, probs, ignore_index=-1, backend=backend)
    expected = fl.softmax_cross_entropy(logits, probs, backend=backend)
    assert float(loss) == float(expected)


def test_bad_inputs_name_the_argument():
    logits, probs = make_case((4, 5), np.float32, "probabilities")
    labels = np.array([0, 1, 2, 3])
    call = fl.softmax_cross_entropy
    cases = [
        (ValueError, "target.*class index 5", lambda: call(logits, np.array([0, 1, 5, 2]))),
        (ValueError, "target.*class index -1", lambda: call(logits, np.array([0, -1, 2, 2]))),
        # A uint64 label past int64's range is named as it is (not wrapped to -1, not capped).
        (ValueError, f"target.*class index {2**64 - 1}, past int64's range", lambda: call(
            logits, np.array([0, 1, 2**64 - 1, 2], np.uint64), ignore_index=-1)),
        (ValueError, f"target.*class index {2**63}, past", lambda: call(
            logits, np.array([0, 1, 2**63, 2], np.uint64), ignore_index=2**63 - 1)),
        (ValueError, r"target.*\(N,\)", lambda: call(logits, labels[:3])),
        (ValueError, r"target.*\(N,\)", lambda: call(logits, labels.reshape(2, 2))),
        (ValueError, "target.*probabilities", lambda: call(logits, probs[:, :4])),
        (TypeError, r"target of shape \(4,\) holds class indices, which must be integers",
         lambda: call(logits, labels.astype(np.float32))),
        (TypeError, "target", lambda: call(logits, labels.astype(bool))),
        (TypeError, "logits", lambda: call(logits.astype(np.int64), labels)),
        (ValueError, "logits.*2-D", lambda: call(logits[0], labels[0])),
        (ValueError, "logits.*2-D", lambda: call(logits[None], labels)),
        (ValueError, "logits.*k >= 1", lambda: call(logits[:, :0], labels)),
        (ValueError, "weight", lambda: call(logits, labels, weight=np.ones(4))),
        (TypeError, "weight", lambda: call(logits, labels, weight=np.ones(5, bool))),
        (ValueError, "label_smoothing", lambda: call(logits, labels, label_smoothing=1.5)),
        (ValueError, "label_smoothing", lambda: call(logits, labels, label_smoothing=-0.1)),
        (ValueError, "label_smoothing",
         lambda: call(logits, labels, label_smoothing=float("nan"))),
        (TypeError, "label_smoothing", lambda: call(logits, labels, label_smoothing="0.1")),
        (ValueError, "label_smoothing", lambda: call(logits, labels, label_smoothing=10**400)),
        (TypeError, "ignore_index", lambda: call(logits, labels, ignore_index=1.5)),
        (TypeError, "check_labels must be a bool; got 'no'",
         lambda: call(logits, labels, check_labels="no")),
        (TypeError, "check_labels must be a bool; got 1",
         lambda: fl.nll(logits, labels, check_labels=1)),
        (TypeError, "check_labels must be a bool; got None",
         lambda: fl.multi_margin(logits, labels, check_labels=None)),
        (ValueError, "reduction", lambda: call(logits, labels, reduction="mean ")),
        (ValueError, "backend", lambda: call(logits, labels, backend="torch")),
        (ValueError, "out", lambda: fl.softmax_cross_entropy_grad(
            logits, labels, out=np.empty((5, 4), np.float32))),
        (TypeError, "out", lambda: fl.softmax_cross_entropy_grad(
            logits, labels, out=np.empty((4, 5), np.float64))),
    ]
    for error, pattern, bad_call in cases:
        with pytest.raises(error, match=pattern):
            bad_call()


@pytest.mark.parametrize("name", ["softmax_cross_entropy", "nll", "multi_margin"])
def test_class_weights_of_another_shape_but_k_elements_are_refused(name):
    """Class weights are (k,), as PyTorch's: a (1, k) or (k, 1) array of k weights is the named
    ValueError on every CPU backend, not an IndexError or a compilation error of the kernel."""
    logits = np.random.default_rng(11).standard_normal((4, 3))
    labels = np.array([0, 1, 2, 0])
    for backend in ("numpy", "numba"):
        for shape in ((1, 3), (3, 1)):
            with pytest.raises(ValueError, match=r"weight must have shape \(k,\) = \(3,\); "
                                                 rf"got \({shape[0]}, {shape[1]}\)"):
                getattr(fl, name)(logits, labels, weight=np.ones(shape), backend=backend)
