"""fl.nll against torch.nn.functional.nll_loss in float64, on every backend."""

import math

import numpy as np
import pytest
from conftest import assert_close, to_backend, to_host

import fastloss as fl

torch = pytest.importorskip("torch")
F = torch.nn.functional

SHAPES = [(1, 1), (7, 3), (300, 100), (200, 1000)]  # the last: Numba's threads


def _case(shape, seed=0, ignored=True):
    rng = np.random.default_rng(seed + shape[1])
    log_probs = np.log(rng.dirichlet(np.ones(shape[1]), shape[0]))
    labels = rng.integers(0, shape[1], shape[0])
    if ignored and shape[0] > 2:
        labels[::3] = -100
    return log_probs, labels, rng.uniform(0.5, 2.0, shape[1])


def _torch(log_probs, labels, weight, reduction, **options):
    x = torch.tensor(log_probs, dtype=torch.float64, requires_grad=True)
    w = None if weight is None else torch.tensor(weight)
    loss = F.nll_loss(x, torch.tensor(labels), weight=w, reduction=reduction, **options)
    loss.sum().backward()
    return loss.detach().numpy(), x.grad.numpy()


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_matches_torch(backend, dtype, shape, reduction, weighted):
    log_probs, labels, weight = _case(shape)
    weight = weight if weighted else None
    x = log_probs.astype(dtype)
    want_loss, want_grad = _torch(x, labels, weight, reduction)
    loss, grad = fl.nll_with_grad(to_backend(x, backend), to_backend(labels, backend),
                                  weight=to_backend(weight, backend), reduction=reduction,
                                  backend=backend)
    assert grad.dtype == dtype and grad.shape == shape
    assert_close(loss, want_loss, dtype)
    assert_close(grad, want_grad, dtype)
    assert to_host(fl.nll(to_backend(x, backend), to_backend(labels, backend),
                          weight=to_backend(weight, backend), reduction=reduction,
                          backend=backend)).tobytes() == to_host(loss).tobytes()


@pytest.mark.parametrize("unused_weight", [np.inf, np.nan], ids=["inf", "nan"])
def test_an_ignored_row_adds_no_weight_to_the_mean(backend, unused_weight):
    """As cross-entropy's: ignored rows look up no class weight for the mean's divisor."""
    log_probs, _, _ = _case((5, 3))
    labels = np.array([1, -100, 2, -100, 1])
    weight = np.array([unused_weight, 1.0, 2.0])
    want_loss, want_grad = _torch(log_probs, labels, weight, "mean")
    loss, grad = fl.nll_with_grad(to_backend(log_probs, backend), to_backend(labels, backend),
                                  weight=to_backend(weight, backend), backend=backend)
    assert_close(loss, want_loss, np.float64)
    assert_close(grad, want_grad, np.float64)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("rows", [65536, 300_000], ids=["one-block", "blocks"])
def test_a_weighted_mean_divides_by_the_weight_sum_within_an_ulp(rows, seed):
    """The divisor of a weighted "mean" is the kept labels' weight sum, summed compensated
    on the CPU: the float64 gradient -w_y / sum, rounded twice, is within an ulp of the exact
    one (a plain sum in the numba kernel's lanes was up to 64 ulps off here)."""
    rng = np.random.default_rng(seed)
    log_probs = np.zeros((rows, 2))
    labels = rng.integers(0, 2, rows)
    labels[::3] = -100
    weight = rng.random(2) + 0.5
    exact = math.fsum(weight[labels[labels >= 0]])
    for backend in ("numpy", "numba"):
        grad = fl.nll_grad(log_probs, labels, weight=weight, backend=backend)
        row = np.flatnonzero(labels >= 0)[:2]
        want = -weight[labels[row]] / exact
        np.testing.assert_allclose(grad[row, labels[row]], want, rtol=2.0**-52, atol=0,
                                   err_msg=backend)


def test_ignore_index_may_be_a_class(backend):
    """An ignore_index of a class (not a negative one): its rows add nothing to the loss, to
    the mean's weight or to the gradient, whose rows stay zero."""
    log_probs, labels, weight = _case((7, 3), ignored=False)
    labels[::3] = 1
    want_loss, want_grad = _torch(log_probs, labels, weight, "mean", ignore_index=1)
    loss, grad = fl.nll_with_grad(to_backend(log_probs, backend), to_backend(labels, backend),
                                  weight=to_backend(weight, backend), ignore_index=1,
                                  backend=backend)
    assert_close(loss, want_loss, np.float64)
    assert_close(grad, want_grad, np.float64)
    assert (to_host(grad)[labels == 1] == 0).all()


def test_float16_is_computed_in_float32(backend):
    log_probs, labels, weight = _case((9, 40))
    x = log_probs.astype(np.float16)
    want_loss, want_grad = _torch(x.astype(np.float64), labels, weight, "mean")
    loss, grad = fl.nll_with_grad(to_backend(x, backend), to_backend(labels, backend),
                                  weight=to_backend(weight, backend), backend=backend)
    assert grad.dtype == np.float16
    np.testing.assert_allclose(to_host(loss).astype(np.float64), want_loss, rtol=4e-3)
    np.testing.assert_allclose(to_host(grad).astype(np.float64), want_grad, rtol=4e-3, atol=1e-3)


def test_infinite_log_probabilities(backend):
    x = np.array([[-np.inf, 0.0], [0.0, -np.inf], [-np.inf, -1.0]])
    labels = np.array([1, 1, -100])
    want_loss, want_grad = _torch(x, labels, None, "none")
    loss, grad = fl.nll_with_grad(to_backend(x, backend), to_backend(labels, backend),
                                  reduction="none", backend=backend)
    np.testing.assert_array_equal(to_host(loss), want_loss)  # 0, inf, 0
    np.testing.assert_array_equal(to_host(grad), want_grad)


@pytest.mark.parametrize("shape", [(6, 33), (300, 1000)], ids=["serial", "threaded"])
def test_out_in_place_and_layouts(backend, shape):
    log_probs, labels, weight = _case(shape)
    x = log_probs.astype(np.float32)
    args = (to_backend(labels, backend),)
    expected = to_host(fl.nll_grad(to_backend(x, backend), *args, backend=backend))
    for layout in (np.asfortranarray, lambda a: np.repeat(a, 2, axis=1)[:, ::2]):
        np.testing.assert_array_equal(
            to_host(fl.nll_grad(to_backend(layout(x), backend), *args, backend=backend)),
            expected)
    inputs = to_backend(x.copy(), backend)
    out = to_backend(np.full_like(x, np.nan), backend)  # every element must be written
    assert fl.nll_grad(inputs, *args, out=out, backend=backend) is out
    np.testing.assert_array_equal(to_host(out), expected)
    np.testing.assert_array_equal(to_host(inputs), x)  # not modified
    want_loss = to_host(fl.nll(to_backend(x, backend), *args, backend=backend))
    loss, grad = fl.nll_with_grad(inputs, *args, out=inputs, backend=backend)
    assert grad is inputs
    np.testing.assert_array_equal(to_host(inputs), expected)
    # Each row's log-probability is read before its gradient overwrites it.
    assert want_loss != 0 and to_host(loss) == want_loss
    inputs = to_backend(x.copy(), backend)
    want_losses = to_host(fl.nll(inputs, *args, reduction="none", backend=backend))
    losses = fl.nll_with_grad(inputs, *args, out=inputs, reduction="none", backend=backend)[0]
    np.testing.assert_array_equal(to_host(losses), want_losses)


@pytest.mark.parametrize("parts", [2, 3, 8])
def test_numba_threads_share_out_every_block(monkeypatch, parts):
    """Numba's threaded kernel splits the row blocks (here 5 of 65 rows) into one part per
    thread, each summing its blocks and filling its gradient rows: with any thread count,
    blocks not divided evenly and more threads than blocks included, every row's loss and
    gradient as PyTorch's."""
    nll_module = pytest.importorskip("fastloss.backends.numba.nll")
    monkeypatch.setattr(nll_module.numba, "get_num_threads", lambda: parts)
    log_probs, labels, weight = _case((300, 1000))
    want_loss, want_grad = _torch(log_probs, labels, weight, "sum")
    out = np.full_like(log_probs, np.nan)  # every element must be written
    loss, grad = fl.nll_with_grad(log_probs, labels, weight=weight, reduction="sum", out=out,
                                  backend="numba")
    assert_close(loss, want_loss, np.float64)
    assert_close(grad, want_grad, np.float64)


def test_empty_and_all_ignored(backend):
    x = to_backend(np.zeros((0, 4), np.float32), backend)
    labels = to_backend(np.zeros(0, np.int64), backend)
    assert np.isnan(to_host(fl.nll(x, labels, backend=backend)))
    assert to_host(fl.nll(x, labels, reduction="sum", backend=backend)) == 0
    ignored = to_backend(np.full(3, -100), backend)
    assert np.isnan(to_host(fl.nll(to_backend(np.zeros((3, 4)), backend), ignored,
                                   backend=backend)))
    # Labels of weight 0: PyTorch's 0 / 0, NaN, and NaN gradients at the kept labels.
    loss, grad = fl.nll_with_grad(to_backend(np.zeros((3, 4)), backend),
                                  to_backend(np.array([1, -100, 1]), backend),
                                  weight=to_backend(np.array([1.0, 0.0, 1.0, 1.0]), backend),
                                  backend=backend)
    grad = to_host(grad)
    assert np.isnan(to_host(loss))
    assert np.isnan(grad[[0, 2], 1]).all() and (np.nan_to_num(grad, nan=1.0) != 0).sum() == 2


def test_invalid_label_is_a_value_error_on_the_cpu():
    for backend in ("numpy", "numba"):
        with pytest.raises(ValueError, match="class index 4, outside"):
            fl.nll(np.zeros((2, 4)), np.array([0, 4]), backend=backend)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_uint64_label_of_int64_max_may_be_ignore_index(backend):
    labels = np.array([0, 2**63 - 1, 1], np.uint64)
    loss = fl.nll(np.log(np.full((3, 4), 0.25)), labels, ignore_index=2**63 - 1,
                  reduction="none", backend=backend)
    np.testing.assert_array_equal(loss, [np.log(4), 0.0, np.log(4)])


def test_invalid_label_on_cuda_is_a_nan_row_or_checked(cupy):
    x = cupy.asarray(np.log(np.full((3, 4), 0.25)))
    labels = cupy.asarray(np.array([0, 7, 1]))
    loss, grad = fl.nll_with_grad(x, labels, reduction="none", backend="cuda")
    assert np.isnan(to_host(loss)[1]) and np.isnan(to_host(grad)[1]).all()
    assert np.isfinite(to_host(loss)[[0, 2]]).all()
    with pytest.raises(ValueError, match="class index 7"):
        fl.nll(x, labels, backend="cuda", check_labels=True)
    huge = cupy.asarray(np.array([0, 2**64 - 1, 1], np.uint64))  # not wrapped to ignore_index
    with pytest.raises(ValueError, match=f"class index {2**63 - 1}"):
        fl.nll(x, huge, ignore_index=-1, backend="cuda", check_labels=True)
    with pytest.raises(ValueError, match=f"class index {2**63 - 2}"):
        fl.nll(x, huge, ignore_index=2**63 - 1, backend="cuda", check_labels=True)
    loss = fl.nll(x, huge, ignore_index=2**63 - 1, reduction="none", backend="cuda")
    assert np.isnan(to_host(loss)[1])


@pytest.mark.parametrize("call, error, match", [
    (lambda: fl.nll(np.zeros(4), np.zeros(4, int)), ValueError, r"log_probs must be 2-D"),
    (lambda: fl.nll(np.zeros((2, 3)), np.zeros(2)), TypeError, "must be integers"),
    (lambda: fl.nll(np.zeros((2, 3)), np.zeros(3, int)), ValueError, r"shape \(N,\)"),
    (lambda: fl.nll(np.zeros((2, 3)), np.array([0, 2**64 - 1], np.uint64),
                    ignore_index=2**63 - 1), ValueError, f"class index {2**64 - 1}, past"),
    (lambda: fl.nll(np.zeros((2, 3), int), np.zeros(2, int)), TypeError, "log_probs"),
    (lambda: fl.nll(np.zeros((2, 3)), np.zeros(2, int), weight=np.ones(2)), ValueError,
     "weight"),
    (lambda: fl.nll(np.zeros((2, 3)), np.zeros(2, int), reduction="avg"), ValueError,
     "reduction"),
    (lambda: fl.nll(np.zeros((2, 3)), np.zeros(2, int), ignore_index=1.5), TypeError,
     "ignore_index"),
    # Not ignore_index=1.
    (lambda: fl.nll(np.zeros((2, 3)), np.zeros(2, int), ignore_index=True), TypeError,
     "ignore_index must be an int"),
    (lambda: fl.nll(np.zeros((0, 0)), np.zeros(0, int)), ValueError,
     r"log_probs must be 2-D \(N, k\).*k >= 1"),
    (lambda: fl.nll_grad(np.zeros((2, 3)), np.zeros(2, int), out=np.zeros((3, 2))),
     ValueError, "out"),
])
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_dask_arrays_match_memory(reduction):
    dask = pytest.importorskip("dask")
    da = pytest.importorskip("dask.array")
    log_probs, labels, weight = _case((53, 11), seed=3)
    lazy = fl.nll_with_grad(da.from_array(log_probs, chunks=(10, 4)), da.from_array(labels, 7),
                            weight=weight, reduction=reduction)
    assert lazy[1].chunks == ((10,) * 5 + (3,), (4, 4, 3))  # the input's, as documented
    loss, grad = dask.compute(*lazy)
    memory_loss, memory_grad = fl.nll_with_grad(log_probs, labels, weight=weight,
                                                reduction=reduction)
    if reduction == "mean":  # the weight sum is added per label chunk: its last bit may move
        np.testing.assert_allclose(grad, memory_grad, rtol=1e-14)
    else:
        np.testing.assert_array_equal(grad, memory_grad)
    np.testing.assert_allclose(loss, memory_loss, rtol=1e-12)
    with pytest.raises(ValueError, match="class index 11"):
        dask.compute(fl.nll(da.from_array(log_probs, chunks=10), np.full(53, 11)))
    with pytest.raises(TypeError, match="must be integers"):
        fl.nll(da.from_array(log_probs), np.zeros(53))


@pytest.mark.parametrize("name", ["nll", "multi_margin"])
def test_a_bool_target_is_not_class_indices(name):
    """Booleans are no class indices (PyTorch refuses them too): a TypeError naming the dtype,
    not a silent 0/1 label."""
    x = np.log(np.full((4, 3), 1 / 3))
    for backend in ("numpy", "numba"):
        with pytest.raises(TypeError, match="target holds class indices, which must be "
                                            "integers; got dtype bool"):
            getattr(fl, name)(x, np.array([True, False, True, True]), backend=backend)


@pytest.mark.parametrize("parts", [2, 3])
def test_numba_parts_fill_only_their_own_rows_in_place(parts):
    """Each part of the kernel zeroes and writes only its own gradient rows: a fill that ran
    into the next part's rows would erase, in place, log-probabilities that part has not
    read yet. The parts run here one after another (the kernel's serial copy), so the
    order is fixed and an overrun shows every time, not only under a thread race."""
    nll_module = pytest.importorskip("fastloss.backends.numba.nll")
    log_probs, labels, weight = _case((300, 1000))  # blocks of 65 rows: 5 blocks
    want_losses, want_grad = np.empty(300), np.empty_like(log_probs)
    want = nll_module._serial_kernel(log_probs, labels, weight, want_grad, want_losses, -100,
                                     1.0, 1)
    in_place, losses = log_probs.copy(), np.empty(300)
    got = nll_module._serial_kernel(in_place, labels, weight, in_place, losses, -100, 1.0,
                                    parts)
    np.testing.assert_array_equal(losses, want_losses)
    np.testing.assert_array_equal(in_place, want_grad)
    assert got == want
