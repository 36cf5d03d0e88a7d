"""crysx_nn's loss conventions, computed by fastloss's fused kernels.

Drop-in ``errorFunc`` / ``gradErrorFunc`` for crysx_nn's
``nn_optimize(inputs, outputs, ..., errorFunc=MSE_loss, gradErrorFunc=MSE_loss_grad)``.
NumPy arrays go to the numba backend, CuPy arrays to the cuda backend; the
``*_cupy`` names are the same functions, for code that picks crysx_nn's
CuPy variants by name.

Conventions (those of ``crysx_nn.loss``): positional ``(predictions,
targets)``, both ``(N, k)`` (N samples, k output nodes); the loss is summed
over the samples, and ``nn_optimize`` itself divides the loss and the
gradient by the batch size. Against PyTorch's default ``reduction="mean"``:

- ``MSE_loss(p, t) = sum((p - t)**2) / k = N * F.mse_loss(p, t)``
- ``MSE_loss_grad(p, t) = 2 * (p - t) / k = N * d F.mse_loss / dp``
  (not divided by the batch size)
- ``MAE_loss(p, t) = sum(|p - t|) / k = N * F.l1_loss(p, t)``, and its
  gradient ``sign(p - t) / k``
- ``BCE_loss(p, t) = N * F.binary_cross_entropy(p, t)`` for probabilities
  ``p``, and its gradient ``(p - t) / (p (1 - p)) / k``
- ``Softmax_CCE_loss(z, t) = -sum(t * log_softmax(z)) = N * F.cross_entropy(z, t)``
- ``Softmax_CCE_loss_grad(z, t) = softmax(z) - t = N * d F.cross_entropy / dz``

The softmax cross-entropy pair takes *logits* ``z``, not probabilities:
crysx_nn's ``CCE_loss(p, t)`` takes ``p = Softmax(z)`` and its gradient
``-t / p`` is then multiplied by the ``(N, k, k)`` softmax Jacobian in
``back_propagation``. The fused pair replaces all three: give the output
layer the ``'Identity'`` activation (so that ``a[nLayers]`` holds the
logits) and pass ``errorFunc=Softmax_CCE_loss,
gradErrorFunc=Softmax_CCE_loss_grad``. ``softmax(z) - t`` is what the
Jacobian product computes (for target rows summing to 1), without the
``N * k * k`` Jacobian, without ``log`` of a clipped probability, and
stable for any logits. ``t`` is one-hot or probability rows of ``z``'s
dtype, or ``(N,)`` integer class indices.

Bad input raises fastloss's ValueError / TypeError; the arrays must be 2-D.
"""

from __future__ import annotations

import fastloss
from fastloss import _validate as v
from fastloss._backend import refuse_masked
from fastloss.losses import binary_cross_entropy, l1, mse
from fastloss.losses._elementwise import evaluate

# The elementwise losses whose sum over the batch, per output node, crysx_nn takes.
_SPECS = {module.SPEC.name: module.SPEC for module in (mse, l1, binary_cross_entropy)}

__all__ = [
    "MSE_loss",
    "MSE_loss_grad",
    "MAE_loss",
    "MAE_loss_grad",
    "BCE_loss",
    "BCE_loss_grad",
    "Softmax_CCE_loss",
    "Softmax_CCE_loss_grad",
    "CCE_loss",
    "CCE_loss_grad",
    "softmax_backward",
    "MSE_loss_cupy",
    "MSE_loss_grad_cupy",
    "MAE_loss_cupy",
    "MAE_loss_grad_cupy",
    "BCE_loss_cupy",
    "BCE_loss_grad_cupy",
    "Softmax_CCE_loss_cupy",
    "Softmax_CCE_loss_grad_cupy",
    "CCE_loss_cupy",
    "CCE_loss_grad_cupy",
]


def _output_nodes(predictions, name: str) -> int:
    shape = getattr(predictions, "shape", None)
    if shape is None:
        raise TypeError(
            f"{name} must be a 2-D (N, k) array (NumPy or CuPy); got {type(predictions).__name__}"
        )
    if len(shape) != 2:
        raise ValueError(
            f"{name} must be a 2-D (N, k) array (N samples, k output nodes); "
            f"got shape {shape}"
        )
    return shape[1]


def _per_node(name: str, predictions, targets, want_grad: bool):
    """``(loss, grad or None)`` of fastloss's elementwise ``name`` summed over all elements and
    averaged over the output nodes, the gradient not divided by the batch size. The kernel
    divides by k itself: the loss is rounded once (a float16 sum past 65504 whose quotient
    fits stays finite) and the gradient costs no second pass."""
    nodes = _output_nodes(predictions, "predictions")
    return evaluate(_SPECS[name], predictions, targets, "sum", "auto", None, want_grad,
                    divisor=nodes)


def _per_node_loss(name: str, predictions, targets):
    return _per_node(name, predictions, targets, False)[0]


def _per_node_grad(name: str, predictions, targets):
    return _per_node(name, predictions, targets, True)[1]


def MSE_loss(predictions, targets):  # noqa: N802 - crysx_nn's name
    """``sum((predictions - targets)**2) / k``: summed over samples, averaged over output nodes.

    ``predictions``, ``targets``: ``(N, k)`` float arrays of one dtype
    (NumPy or CuPy). Returns a scalar of their dtype (a 0-d CuPy array for
    CuPy input). PyTorch's mean is this divided by ``N``.
    """
    return _per_node_loss("mse", predictions, targets)


def MSE_loss_grad(predictions, targets):  # noqa: N802 - crysx_nn's name
    """``2 * (predictions - targets) / k``, the gradient of :func:`MSE_loss`.

    Not divided by the batch size (``nn_optimize`` does that). Returns an
    ``(N, k)`` array of the predictions' type and dtype.
    """
    return _per_node_grad("mse", predictions, targets)


def MAE_loss(predictions, targets):  # noqa: N802 - crysx_nn's name
    """``sum(|predictions - targets|) / k``: crysx_nn's MAE (PyTorch's ``l1_loss`` times N).

    Arguments and result as :func:`MSE_loss`.
    """
    return _per_node_loss("l1", predictions, targets)


def MAE_loss_grad(predictions, targets):  # noqa: N802 - crysx_nn's name
    """``sign(predictions - targets) / k``, the gradient of :func:`MAE_loss`.

    0 where predictions == targets (PyTorch's subgradient; crysx_nn's
    ``np.where(p >= t, 1, -1)`` gives +1 there). Not divided by the batch size.
    """
    return _per_node_grad("l1", predictions, targets)


def BCE_loss(predictions, targets):  # noqa: N802 - crysx_nn's name
    """``-sum(t log p + (1 - t) log(1 - p)) / k``: crysx_nn's BCE of probabilities.

    ``predictions``: ``(N, k)`` probabilities (e.g. a Sigmoid output layer),
    ``targets``: ``(N, k)`` of their dtype. Each log is clamped at -100 as in
    PyTorch (crysx_nn clips p to [1e-7, 1 - 1e-7] instead, so the two differ
    only for p within 1e-7 of 0 or 1). Probabilities or targets outside [0, 1]
    are a ValueError (NaN for CuPy arrays). PyTorch's mean is this divided by ``N``.
    """
    return _per_node_loss("binary_cross_entropy", predictions, targets)


def BCE_loss_grad(predictions, targets):  # noqa: N802 - crysx_nn's name
    """``(p - t) / (p (1 - p)) / k``, the gradient of :func:`BCE_loss`.

    The denominator is floored at 1e-12 as in PyTorch (crysx_nn's
    ``nan_to_num`` of ``t / p`` instead). Not divided by the batch size.
    """
    return _per_node_grad("binary_cross_entropy", predictions, targets)


def Softmax_CCE_loss(logits, targets):  # noqa: N802 - crysx_nn's naming
    """``-sum(targets * log_softmax(logits))``: crysx_nn's ``CCE_loss(Softmax(logits), targets)``.

    ``logits``: ``(N, k)`` float array (NumPy or CuPy). ``targets``: ``(N,
    k)`` one-hot or probability rows of the logits' dtype, or ``(N,)``
    integer class indices. Summed over samples (PyTorch's ``"sum"``).
    Returns a scalar of the logits' dtype (0-d CuPy array for CuPy input).
    """
    _output_nodes(logits, "logits")
    return fastloss.softmax_cross_entropy(logits, targets, reduction="sum")


def Softmax_CCE_loss_grad(logits, targets):  # noqa: N802 - crysx_nn's naming
    """``softmax(logits) - targets``: the gradient of :func:`Softmax_CCE_loss` w.r.t. the logits.

    Replaces crysx_nn's ``CCE_loss_grad`` times the ``(N, k, k)`` softmax
    Jacobian (use the ``'Identity'`` activation on the output layer). Not
    divided by the batch size. Returns an ``(N, k)`` array of the logits'
    type and dtype.
    """
    _output_nodes(logits, "logits")
    return fastloss.softmax_cross_entropy_grad(logits, targets, reduction="sum")



def _array_module(array):
    if type(array).__module__.split(".")[0] == "cupy":
        import cupy

        return cupy
    import numpy

    return numpy


def _clipped_rows(predictions, targets, epsilon):
    """``(xp, clipped, targets)``: the predictions clipped to [epsilon, 1 - epsilon], as
    crysx_nn's categorical cross-entropy and its gradient both take them, and the targets,
    plain arrays of module ``xp``, after checking the arguments: floating-point predictions
    and real-valued targets (one-hot rows may be integers) of one 2-D shape (its expressions
    would broadcast anything else into a wrong number), and 0 <= epsilon < 1/2. A subclass
    (``np.matrix``, whose ``*`` is a matrix product) is viewed as a plain array; a masked
    array is a TypeError."""
    _output_nodes(predictions, "predictions")
    xp = _array_module(predictions)
    arrays = []
    for name, array, kinds, what in (("predictions", predictions, "f", "floating-point"),
                                     ("targets", targets, "biuf", "real-valued")):
        if not isinstance(array, xp.ndarray) or array.dtype.kind not in kinds:
            raise TypeError(
                f"{name} must be a {what} {xp.__name__} array; got "
                + (f"dtype {array.dtype}" if isinstance(array, xp.ndarray)
                   else type(array).__name__)
            )
        refuse_masked(array, name)
        arrays.append(xp.asarray(array))
    predictions, targets = arrays
    if targets.shape != predictions.shape:
        raise ValueError(
            f"targets must be one-hot or probability rows of the predictions' shape "
            f"{predictions.shape}; got {targets.shape}"
        )
    if v.check_real(epsilon, "epsilon", minimum=0.0) >= 0.5:
        raise ValueError(f"epsilon must be below 1/2, where the clip's bounds cross; got {epsilon}")
    return xp, xp.clip(predictions, epsilon, 1.0 - epsilon), targets


def CCE_loss(predictions, targets, epsilon=1e-7):  # noqa: N802 - crysx_nn's name
    """crysx_nn's categorical cross-entropy of probabilities, as its NumPy function computes
    it: ``-sum(targets * log(clip(predictions, epsilon, 1 - epsilon) + epsilon))``, summed
    over samples.

    Array expressions of the input's library (NumPy or CuPy), not a fused kernel: for a
    softmax output layer, :func:`Softmax_CCE_loss` on the logits is exact, stable and one
    pass.
    """
    xp, clipped, targets = _clipped_rows(predictions, targets, epsilon)
    return -xp.sum(targets * xp.log(clipped + epsilon))


def CCE_loss_grad(predictions, targets, epsilon=1e-7):  # noqa: N802 - crysx_nn's name
    """crysx_nn's gradient of :func:`CCE_loss` with respect to the probabilities, as its NumPy
    function computes it: ``-nan_to_num(targets / clip(predictions, epsilon, 1 - epsilon))``
    in the targets' dtype (the predictions' for integer one-hot rows, which crysx_nn's
    division refuses).

    crysx_nn multiplies it by the ``(N, k, k)`` softmax Jacobian; :func:`softmax_backward`
    forms that product without the Jacobian.
    """
    xp, clipped, targets = _clipped_rows(predictions, targets, epsilon)
    dtype = targets.dtype if targets.dtype.kind == "f" else clipped.dtype
    # In native byte order, as NumPy's division gives it (a ufunc's dtype= takes no other).
    return -xp.nan_to_num(xp.divide(targets, clipped, dtype=dtype.newbyteorder("=")))


def softmax_backward(probs, grad_probs):
    """The drop-in for crysx_nn's ``einsum('ijk,ik->ij', Softmax_grad(z), grad_probs)``:
    ``probs * (grad_probs - sum(probs * grad_probs))`` per row (``probs = softmax(z)``), one
    fused pass with no ``(N, k, k)`` Jacobian (:func:`fastloss.softmax_backward`)."""
    return fastloss.softmax_backward(probs, grad_probs)


# crysx_nn names its CuPy variants separately; here the array type decides. (Its CuPy
# CCE pair differs from its NumPy one: no epsilon in the log, no clip in the gradient; these
# compute the NumPy pair's formulas on either library's arrays.)
MSE_loss_cupy = MSE_loss
MSE_loss_grad_cupy = MSE_loss_grad
MAE_loss_cupy = MAE_loss
MAE_loss_grad_cupy = MAE_loss_grad
BCE_loss_cupy = BCE_loss
BCE_loss_grad_cupy = BCE_loss_grad
Softmax_CCE_loss_cupy = Softmax_CCE_loss
Softmax_CCE_loss_grad_cupy = Softmax_CCE_loss_grad
CCE_loss_cupy = CCE_loss
CCE_loss_grad_cupy = CCE_loss_grad
