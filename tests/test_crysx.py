"""fastloss.compat.crysx: crysx_nn's conventions, its training loop's use, and PyTorch's mean."""

import numpy as np
import pytest

import fastloss
from fastloss.compat import crysx

SHAPES = [(1, 1), (32, 10), (97, 3)]
TOLERANCE = {np.float32: (2e-5, 1e-6), np.float64: (1e-12, 1e-14)}




def make(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    predictions = rng.normal(0.0, 2.0, shape).astype(dtype)
    labels = rng.integers(0, shape[1], shape[0])
    onehot = np.eye(shape[1], dtype=dtype)[labels]
    return predictions, onehot, labels


def softmax(z):
    shifted = np.exp(z - z.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def close(actual, expected, dtype):
    rtol, atol = TOLERANCE[dtype]
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_crysx_conventions(shape, dtype):
    """crysx_nn.loss's formulas: summed over samples, MSE averaged over output nodes."""
    predictions, targets, labels = make(shape, dtype)
    p64, t64 = predictions.astype(np.float64), targets.astype(np.float64)
    k = shape[1]

    loss = crysx.MSE_loss(predictions, targets)
    assert loss.dtype == dtype and np.ndim(loss) == 0
    close(loss, np.sum((p64 - t64) ** 2) / k, dtype)
    grad = crysx.MSE_loss_grad(predictions, targets)
    assert grad.dtype == dtype and grad.shape == shape
    close(grad, 2 * (p64 - t64) / k, dtype)

    cross_entropy = -np.sum(t64 * np.log(softmax(p64)))
    close(crysx.Softmax_CCE_loss(predictions, targets), cross_entropy, dtype)
    close(crysx.Softmax_CCE_loss(predictions, labels), cross_entropy, dtype)
    close(crysx.Softmax_CCE_loss_grad(predictions, targets), softmax(p64) - t64, dtype)
    close(crysx.Softmax_CCE_loss_grad(predictions, labels), softmax(p64) - t64, dtype)


def test_fused_gradient_equals_the_softmax_jacobian_product():
    """``softmax(z) - t`` is crysx_nn's Softmax_grad(z) (N, k, k) times CCE_loss_grad = -t/p."""
    logits, targets, _ = make((16, 7), np.float64)
    p = softmax(logits)
    jacobian = np.einsum("ij,jk->ijk", p, np.eye(7)) - np.einsum("ij,ik->ijk", p, p)
    delta = np.einsum("ijk,ik->ij", jacobian, -targets / p)
    np.testing.assert_allclose(crysx.Softmax_CCE_loss_grad(logits, targets), delta, atol=1e-12)


def test_cce_of_probabilities_and_the_fused_jacobian_product():
    """crysx_nn's CCE pair as it computes it, and softmax_backward in place of its
    Softmax_grad(z) (N, k, k) product: the same delta as the fused softmax CCE gradient."""
    logits, targets, _ = make((16, 7), np.float64)
    p = softmax(logits)
    # crysx_nn 0.1.7's NumPy CCE_loss and CCE_loss_grad, as written there.
    clipped = np.clip(p, 1e-7, 1 - 1e-7)
    np.testing.assert_allclose(crysx.CCE_loss(p, targets),
                               -np.sum(targets * np.log(clipped + 1e-7)), rtol=1e-14)
    dloss_dp = crysx.CCE_loss_grad(p, targets)
    np.testing.assert_array_equal(dloss_dp, -np.nan_to_num(np.divide(targets, clipped)))
    jacobian = np.einsum("ij,jk->ijk", p, np.eye(7)) - np.einsum("ij,ik->ijk", p, p)
    product = np.einsum("ijk,ik->ij", jacobian, dloss_dp)
    np.testing.assert_allclose(crysx.softmax_backward(p, dloss_dp), product, atol=1e-12)
    np.testing.assert_allclose(crysx.softmax_backward(p, dloss_dp),
                               crysx.Softmax_CCE_loss_grad(logits, targets), atol=1e-12)


def test_cce_of_saturated_probabilities_is_clipped_as_crysx_makes_it():
    # crysx_nn clips p to [epsilon, 1 - epsilon] (1e-7) in the loss and the gradient alike.
    p, t = np.array([[0.0, 1.0], [1e-10, 1 - 1e-10]]), np.array([[1.0, 0.0], [1.0, 0.0]])
    np.testing.assert_array_equal(crysx.CCE_loss_grad(p, t), [[-1e7, 0.0], [-1e7, 0.0]])
    np.testing.assert_allclose(crysx.CCE_loss(p, t), -2 * np.log(2e-7), rtol=1e-15)
    np.testing.assert_array_equal(crysx.CCE_loss_grad(p, t, epsilon=0.25), [[-4.0, 0.0]] * 2)
    # The gradient takes the targets' dtype (crysx_nn's divide(..., dtype=targets.dtype)),
    # the predictions' for integer one-hot rows.
    assert crysx.CCE_loss_grad(p, t.astype(np.float32)).dtype == np.float32
    assert crysx.CCE_loss_grad(p.astype(np.float32), t.astype(int)).dtype == np.float32
    # Native byte order, as a NumPy division gives it (crysx_nn's dtype= refuses '>f4').
    for p_dtype, t_dtype in (("<f4", ">f4"), (">f4", ">f4"), (">f8", "<f4")):
        grad = crysx.CCE_loss_grad(p.astype(p_dtype), t.astype(t_dtype))
        assert grad.dtype == np.dtype(t_dtype).newbyteorder("=")
        np.testing.assert_array_equal(grad, crysx.CCE_loss_grad(p.astype(p_dtype[1:]),
                                                                t.astype(t_dtype[1:])))


@pytest.mark.parametrize("function", [crysx.CCE_loss, crysx.CCE_loss_grad])
def test_cce_takes_only_rows_of_the_predictions_shape(function):
    """Its array expressions would broadcast anything else into a number: (N,) labels
    beside N x N predictions, a (1, k) row, a (N, k - 1) array."""
    p = np.full((4, 4), 0.25, np.float32)
    for bad in (np.array([0, 1, 2, 3]).astype(np.float32), np.full((1, 4), 0.25, np.float32),
                np.ones((4, 3), np.float32)):
        with pytest.raises(ValueError, match=r"targets must be one-hot or probability rows"):
            function(p, bad)
    for bad, got in ((np.eye(4, dtype=complex), "dtype complex128"), (None, "NoneType"),
                     (p.tolist(), "list")):
        with pytest.raises(TypeError, match=f"targets must be a real-valued numpy array; "
                                            f"got {got}"):
            function(p, bad)
    # One-hot rows of integers are rows of the predictions' shape, as crysx_nn takes them.
    np.testing.assert_array_equal(function(p, np.eye(4, dtype=np.int64)),
                                  function(p, np.eye(4, dtype=np.float32)))
    with pytest.raises(TypeError, match="predictions must be a floating-point numpy array"):
        function(np.eye(4, dtype=np.int64), p)


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
@pytest.mark.parametrize("function", [crysx.CCE_loss, crysx.CCE_loss_grad])
def test_cce_of_array_subclasses_and_bad_epsilon(function):
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]], np.float32)
    t = np.eye(3, dtype=np.float32)
    # np.matrix's * is a matrix product: it is computed as the plain array it views.
    np.testing.assert_array_equal(function(np.matrix(p), np.matrix(t)), function(p, t))
    assert type(function(np.matrix(p), t)) is not np.matrix
    for name, args in (("targets", (p, np.ma.masked_array(t, mask=t > 0))),
                       ("predictions", (np.ma.masked_array(p, mask=p > 0.5), t))):
        with pytest.raises(TypeError, match=f"{name} is a masked array"):
            function(*args)
    for epsilon, error in ((np.nan, ValueError), (-1e-7, ValueError), (0.5, ValueError),
                           ("x", TypeError), (None, TypeError)):
        with pytest.raises(error, match="epsilon"):
            function(p, t, epsilon=epsilon)


def test_inputs_are_not_modified():
    predictions, targets, _ = make((8, 4), np.float32)
    saved = predictions.copy(), targets.copy()
    crysx.MSE_loss_grad(predictions, targets)
    crysx.Softmax_CCE_loss_grad(predictions, targets)
    np.testing.assert_array_equal(predictions, saved[0])
    np.testing.assert_array_equal(targets, saved[1])


def test_pytorch_mean_is_the_crysx_value_over_the_batch_size():
    torch = pytest.importorskip("torch", reason="the comparison needs PyTorch")
    predictions, targets, labels = make((12, 5), np.float64)
    n = len(predictions)
    for ours, ours_grad, theirs, target in (
        (crysx.MSE_loss, crysx.MSE_loss_grad, torch.nn.functional.mse_loss, targets),
        (crysx.Softmax_CCE_loss, crysx.Softmax_CCE_loss_grad,
         torch.nn.functional.cross_entropy, labels),
    ):
        z = torch.tensor(predictions, requires_grad=True)
        loss = theirs(z, torch.tensor(target))
        loss.backward()
        np.testing.assert_allclose(ours(predictions, target) / n, loss.item(), rtol=1e-12)
        np.testing.assert_allclose(ours_grad(predictions, target) / n, z.grad.numpy(),
                                   rtol=1e-12, atol=1e-15)


def _nn_optimize_like(inputs, outputs, weights, epochs, batch_size, eeta, error, grad_error):
    """The lines of crysx_nn's nn_optimize that use errorFunc / gradErrorFunc, around a
    one-layer network with the 'Identity' activation (a[nLayers] are the logits)."""
    errors = []
    batches = inputs.shape[0] // batch_size
    for _ in range(epochs):
        error_epoch = 0.0
        for batch in range(batches):
            x = inputs[batch * batch_size:(batch + 1) * batch_size]
            expected = outputs[batch * batch_size:(batch + 1) * batch_size]
            output = x @ weights.T
            error_epoch += error(output, expected) / batch_size
            dc_da = grad_error(output, expected) / batch_size
            weights = weights - eeta * dc_da.T @ x
        errors.append(error_epoch / batches)
    return weights, errors


@pytest.mark.parametrize("pair", ["mse", "softmax_cce"])
def test_drops_into_nn_optimize(pair):
    rng = np.random.default_rng(5)
    inputs = rng.normal(size=(64, 6))
    labels = (inputs[:, 0] > 0).astype(int) + (inputs[:, 1] > 0)
    outputs = np.eye(3)[labels]
    functions = {
        "mse": (crysx.MSE_loss, crysx.MSE_loss_grad, "mse_with_grad"),
        "softmax_cce": (crysx.Softmax_CCE_loss, crysx.Softmax_CCE_loss_grad,
                        "softmax_cross_entropy_with_grad"),
    }
    error, grad_error, fused_name = functions[pair]
    start = rng.normal(scale=0.1, size=(3, 6))
    weights, errors = _nn_optimize_like(inputs, outputs, start, 5, 16, 0.5, error, grad_error)
    assert errors[-1] < errors[0]

    # The same loop on fastloss's PyTorch-style mean times the batch size (the
    # documented conversion) gives the same weights.
    fused = getattr(fastloss, fused_name)
    expected = _nn_optimize_like(
        inputs, outputs, start, 5, 16, 0.5,
        lambda o, t: fused(o, t)[0] * len(o),
        lambda o, t: fused(o, t)[1] * len(o),
    )[0]
    np.testing.assert_allclose(weights, expected, rtol=1e-10)


@pytest.mark.parametrize(
    "function", [crysx.MSE_loss, crysx.MSE_loss_grad, crysx.MAE_loss, crysx.MAE_loss_grad,
                 crysx.BCE_loss, crysx.BCE_loss_grad, crysx.CCE_loss, crysx.CCE_loss_grad,
                 crysx.Softmax_CCE_loss, crysx.Softmax_CCE_loss_grad],
    ids=lambda f: f.__name__,
)
def test_arrays_must_be_two_dimensional(function):
    with pytest.raises(ValueError, match=r"\(N, k\)"):
        function(np.zeros(4), np.zeros(4))
    with pytest.raises(ValueError, match=r"\(N, k\)"):
        function(np.full((2, 3, 4), 0.5), np.full((2, 3, 4), 0.5))
    with pytest.raises(TypeError, match=r"\(N, k\) array"):
        function([[1.0, 2.0]], [[1.0, 2.0]])


def test_half_precision_loss_is_rounded_once_after_the_division():
    """The sum over the batch may pass float16's 65504 where the loss, divided by the
    nodes, does not: the kernel divides before it rounds."""
    target = np.zeros((1, 4), np.float16)
    assert crysx.MSE_loss(np.full((1, 4), 200.0, np.float16), target) == 40000
    grad = crysx.MSE_loss_grad(np.full((1, 4), 40000.0, np.float16), target)
    assert (grad == 20000).all() and grad.dtype == np.float16
    assert crysx.MAE_loss(np.full((1, 4), 20000.0, np.float16), target) == 20000


def test_cupy_names_are_the_same_functions():
    assert crysx.MSE_loss_cupy is crysx.MSE_loss
    assert crysx.MSE_loss_grad_cupy is crysx.MSE_loss_grad
    assert crysx.Softmax_CCE_loss_cupy is crysx.Softmax_CCE_loss
    assert crysx.Softmax_CCE_loss_grad_cupy is crysx.Softmax_CCE_loss_grad


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", ["MSE_loss", "MSE_loss_grad", "Softmax_CCE_loss",
                                  "Softmax_CCE_loss_grad"])
def test_cupy_arrays_stay_on_the_device(cupy, name, dtype):
    predictions, targets, _ = make((33, 10), dtype)
    function = getattr(crysx, name)
    result = function(cupy.asarray(predictions), cupy.asarray(targets))
    assert isinstance(result, cupy.ndarray) and result.dtype == dtype
    close(result.get(), function(predictions, targets).astype(np.float64), dtype)


# --- MAE and BCE ---------------------------------------------------------------------------


def _probabilities(shape, dtype, seed=1):
    rng = np.random.default_rng(seed)
    probs = rng.uniform(0.01, 0.99, shape).astype(dtype)
    return probs, (rng.random(shape) < 0.5).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_mae_and_bce_follow_crysx_formulas(shape, dtype):
    predictions, targets, _ = make(shape, dtype)
    p64, t64 = predictions.astype(np.float64), targets.astype(np.float64)
    k = shape[1]
    close(crysx.MAE_loss(predictions, targets), np.sum(np.abs(p64 - t64)) / k, dtype)
    close(crysx.MAE_loss_grad(predictions, targets), np.sign(p64 - t64) / k, dtype)

    probs, labels = _probabilities(shape, dtype)
    p64, t64 = probs.astype(np.float64), labels.astype(np.float64)
    # crysx_nn's BCE_loss and BCE_loss_grad, away from its 1e-7 clip.
    bce = -np.sum(t64 * np.log(p64) + (1 - t64) * np.log(1 - p64)) / k
    bce_grad = -(t64 / p64 - (1 - t64) / (1 - p64)) / k
    loss = crysx.BCE_loss(probs, labels)
    assert loss.dtype == dtype and np.ndim(loss) == 0
    close(loss, bce, dtype)
    grad = crysx.BCE_loss_grad(probs, labels)
    assert grad.dtype == dtype and grad.shape == shape
    close(grad, bce_grad, dtype)


def test_mae_and_bce_are_pytorch_means_times_the_batch():
    torch = pytest.importorskip("torch", reason="the comparison needs PyTorch")
    predictions, targets, _ = make((12, 5), np.float64)
    probs, labels = _probabilities((12, 5), np.float64)
    for ours, ours_grad, theirs, x, target in (
        (crysx.MAE_loss, crysx.MAE_loss_grad, torch.nn.functional.l1_loss, predictions, targets),
        (crysx.BCE_loss, crysx.BCE_loss_grad, torch.nn.functional.binary_cross_entropy, probs,
         labels),
    ):
        z = torch.tensor(x, requires_grad=True)
        loss = theirs(z, torch.tensor(target))
        loss.backward()
        np.testing.assert_allclose(ours(x, target) / 12, loss.item(), rtol=1e-12)
        np.testing.assert_allclose(ours_grad(x, target) / 12, z.grad.numpy(), rtol=1e-12,
                                   atol=1e-15)


@pytest.mark.parametrize("name", ["MAE_loss", "MAE_loss_grad", "BCE_loss", "BCE_loss_grad"])
def test_mae_and_bce_on_cupy_arrays(cupy, name):
    probs, labels = _probabilities((33, 10), np.float32)
    function = getattr(crysx, name)
    assert getattr(crysx, f"{name}_cupy") is function
    result = function(cupy.asarray(probs), cupy.asarray(labels))
    assert isinstance(result, cupy.ndarray) and result.dtype == np.float32
    close(result.get(), function(probs, labels).astype(np.float64), np.float32)
    with pytest.raises(ValueError, match=r"\(N, k\)"):
        function(np.zeros(4), np.zeros(4))
