"""What the benchmarks run: fastloss's backends, the peers it is measured against, the memory floor.

Every contender is an ``Impl``: ``prepare(inputs)`` does the untimed set-up (tensor views, one-hot
targets, output buffers) and returns a thunk that computes one op and, on a GPU, waits for it.
An op is ``"forward"`` (the loss), ``"gradient"`` (d loss / d input) or ``"fused"`` (both).
Every loss is the mean over elements (MSE) or rows (cross-entropy), PyTorch's default, so that
the losses of all contenders can be checked against one float64 reference.

The peers are written out from their formulas:

- ``numpy-expr`` / ``cupy-expr``: the expressions a user writes.
- ``crysx-fastmath``, ``crysx-prange``, ``crysx`` and ``crysx-cupy``: the seeds' crysx_nn-style
  functions (crysx_nn/loss.py and activation.py), with their decorators and constants.
- ``torch``: ``torch.nn.functional`` forward and autograd backward, on the CPU or the GPU.
- ``liger``: Liger-Kernel's Triton cross-entropy (GPU only).
- ``floor``: a copy of half the bytes the op must move, i.e. reading and writing exactly those
  bytes once, the least an op that reads its inputs and writes its output once can take.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit, prange

LOSSES = ("mse", "softmax_cross_entropy")
OPS = ("forward", "gradient", "fused")
DEVICES = ("cpu", "cuda")
DTYPE = np.float32
PEER_NAMES = ("numpy-expr", "cupy-expr", "crysx-fastmath", "crysx-prange", "crysx", "crysx-cupy",
              "torch", "liger")
DEFAULT_CLASSES = 32000
MSE_COLUMNS = 1024
# Losses whose cost per element depends on the row width: the widths swept at
# a fixed number of elements (rows of fewer elements leave vector lanes idle
# and pay a row's set-up more often).
CLASS_SWEEP = {"softmax_cross_entropy": (2, 10, 100, 1000, 32000, 128000)}
SWEEP_ELEMENTS = 2_621_440

FASTLOSS_FUNCTIONS = {
    "mse": {"forward": "mse", "gradient": "mse_grad", "fused": "mse_with_grad"},
    "softmax_cross_entropy": {
        "forward": "softmax_cross_entropy",
        "gradient": "softmax_cross_entropy_grad",
        "fused": "softmax_cross_entropy_with_grad",
    },
}


# ---------------------------------------------------------------------------------------------
# Inputs, sizes and the bytes an op must move


@dataclass
class Inputs:
    """``first``: predictions or logits, ``second``: targets or int64 labels, ``xp``: numpy/cupy."""

    loss: str
    device: str
    shape: tuple[int, int]
    xp: Any
    first: Any
    second: Any


def array_module(device: str):
    if device == "cuda":
        import cupy

        return cupy
    return np


def make_inputs(loss: str, shape: tuple[int, int], device: str, seed: int = 0) -> Inputs:
    xp = array_module(device)
    rng = xp.random.default_rng(seed)
    rows, cols = shape
    first = rng.standard_normal(shape, dtype=DTYPE)
    if loss == "mse":
        second = rng.standard_normal(shape, dtype=DTYPE)
    else:
        second = rng.integers(0, cols, size=rows, dtype=np.int64)
    return Inputs(loss, device, (rows, cols), xp, first, second)


def shape_for(loss: str, size: str | int, classes: int = DEFAULT_CLASSES) -> tuple[int, int]:
    """``"ROWSxCOLS"`` as given; an element count as ``(rows, cols)`` with cols a row's width.

    MSE rows are 1024 wide (the seeds' ``(N, k)`` layout), cross-entropy rows ``classes`` wide;
    a count is rounded to whole rows, and one below a row's width is a single shorter row.
    """
    text = str(size).lower().replace("_", "")
    if "x" in text:
        rows, cols = (int(part) for part in text.split("x"))
    else:
        elements = int(float(text))
        width = MSE_COLUMNS if loss == "mse" else classes
        cols = min(width, elements)
        rows = max(1, round(elements / cols)) if cols > 0 else 0
    if rows < 1 or cols < 1:
        raise ValueError(f"size {size!r} gives an empty {loss} input")
    return rows, cols


def sweep_shapes(loss: str, elements: int = SWEEP_ELEMENTS,
                 classes: tuple[int, ...] | None = None) -> list[tuple[int, int]]:
    """``(rows, k)`` for each swept row width k of ``loss`` (none for a loss
    without a sweep), with at least ``elements`` elements."""
    widths = CLASS_SWEEP.get(loss, ()) if classes is None else classes
    return [(-(-elements // width), width) for width in widths]


def shape_label(shape: tuple[int, int]) -> str:
    return f"{shape[0]}x{shape[1]}"


def op_bytes(loss: str, op: str, shape: tuple[int, int], itemsize: int = 4) -> int:
    """The bytes an op cannot avoid moving: each input read once, the gradient written once."""
    rows, cols = shape
    block = rows * cols * itemsize
    if loss == "mse":
        return 2 * block if op == "forward" else 3 * block
    labels = rows * 8
    return block + labels if op == "forward" else 2 * block + labels


def sync(device: str) -> None:
    if device == "cuda":
        import cupy

        cupy.cuda.runtime.deviceSynchronize()


def _synced(thunk: Callable[[], Any], device: str) -> Callable[[], Any]:
    if device == "cpu":
        return thunk

    def run():
        result = thunk()
        sync(device)
        return result

    return run


def loss_value(result, op: str) -> float | None:
    """The loss of an op's result as a Python float (``None`` for a gradient-only op)."""
    if op == "gradient":
        return None
    loss = result[0] if op == "fused" else result
    return float(loss)


# ---------------------------------------------------------------------------------------------
# The expressions a user writes (NumPy on the CPU, CuPy on the GPU: same code, ``xp`` apart)


def mse_expr_loss(xp, pred, target):
    return xp.mean((pred - target) ** 2)


def mse_expr_grad(xp, pred, target):
    return 2 * (pred - target) / pred.size


def mse_expr_with_grad(xp, pred, target):
    return mse_expr_loss(xp, pred, target), mse_expr_grad(xp, pred, target)


def _log_sum_exp(xp, logits):
    row_max = logits.max(axis=1, keepdims=True)
    return row_max + xp.log(xp.exp(logits - row_max).sum(axis=1, keepdims=True))


def ce_expr_loss(xp, logits, labels):
    picked = xp.take_along_axis(logits, labels[:, None], axis=1)
    return -xp.mean(picked - _log_sum_exp(xp, logits))


def _ce_expr_grad_from(xp, logits, labels, lse):
    # Subtracting the one-hot in place at the labels: a user who builds np.eye(k)[labels] instead
    # pays for a second (N, k) array.
    grad = xp.exp(logits - lse)
    grad[xp.arange(labels.shape[0]), labels] -= 1
    grad /= labels.shape[0]
    return grad


def ce_expr_grad(xp, logits, labels):
    return _ce_expr_grad_from(xp, logits, labels, _log_sum_exp(xp, logits))


def ce_expr_with_grad(xp, logits, labels):
    lse = _log_sum_exp(xp, logits)
    picked = xp.take_along_axis(logits, labels[:, None], axis=1)
    return -xp.mean(picked - lse), _ce_expr_grad_from(xp, logits, labels, lse)


# ---------------------------------------------------------------------------------------------
# The seeds' crysx_nn-style functions, on the CPU (Numba) ...


@njit(cache=True, fastmath=True)
def crysx_mse_loss_fastmath(outi, out0):
    # Numba's np.sum keeps a float32 running total for float32 input; fastmath spreads it over SIMD
    # lanes, which slows the growth of the error with size but does not stop it.
    return np.sum((outi - out0) ** 2) / outi.shape[1]


@njit(cache=True, fastmath=False, parallel=True)
def crysx_mse_loss_prange(outi, out0):
    loss = 0.0
    for i in prange(outi.shape[0]):
        for j in range(outi.shape[1]):
            loss = loss + (outi[i, j] - out0[i, j]) ** 2
    return loss / outi.shape[1]


@njit(cache=True, fastmath=True)
def crysx_mse_loss_grad(outi, out0):
    return 2 * (outi - out0) / outi.shape[1]


@njit(cache=True, fastmath=True)
def crysx_softmax(x):
    # One max over the whole batch, not per row: crysx's choice, kept as written.
    e_x = np.exp(x - np.max(x))
    return e_x / e_x.sum(axis=1).reshape((-1, 1))


@njit(cache=True, fastmath=False)
def crysx_cce_loss(predictions, targets, epsilon=1e-12):
    predictions = np.clip(predictions, epsilon, 1.0 - epsilon)
    return -np.sum(targets * np.log(predictions + 1e-9))


def crysx_cce_loss_grad(predictions, targets):
    return -np.nan_to_num(np.divide(targets, predictions, dtype=targets.dtype))


def softmax_backward(xp, probs, grad_probs):
    # crysx contracts the (N, k, k) softmax Jacobian with d loss / d probs; at k = 32000 that
    # tensor cannot exist, so its product is formed directly: p * (g - sum(p * g)).
    inner = (probs * grad_probs).sum(axis=1, keepdims=True)
    return probs * (grad_probs - inner)


# ... and on the GPU (their CuPy twins; the constants differ from the CPU ones in crysx too)


def crysx_mse_loss_cupy(outi, out0):
    import cupy as cp

    return cp.sum((outi - out0) ** 2) / outi.shape[1]


def crysx_mse_loss_grad_cupy(outi, out0):
    return 2 * (outi - out0) / outi.shape[1]


def crysx_softmax_cupy(x):
    import cupy as cp

    e_x = cp.exp(x - cp.max(x))
    return e_x / e_x.sum(axis=1).reshape((-1, 1))


def crysx_cce_loss_cupy(predictions, targets, epsilon=1e-7):
    import cupy as cp

    predictions = cp.clip(predictions, epsilon, 1.0 - epsilon)
    return -cp.sum(targets * cp.log(predictions))


def crysx_cce_loss_grad_cupy(predictions, targets):
    import cupy as cp

    return -cp.divide(targets, predictions)


# ---------------------------------------------------------------------------------------------
# The catalogue


@dataclass(frozen=True)
class Impl:
    """One contender for one (loss, op, device); ``missing`` says why it cannot run here."""

    name: str
    kind: str  # "fastloss", "peer" or "floor"
    loss: str
    op: str
    device: str
    prepare: Callable[[Inputs], Callable[[], Any]]
    missing: str | None = None
    backend: str | None = None


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def backend_status() -> dict[str, tuple[bool, str]]:
    """``{backend: (available, reason)}`` for fastloss's concrete backends."""
    from fastloss import _registry

    return {name: tuple(_registry.backend_status(name)) for name in _registry.BACKENDS}


def torch_missing(device: str) -> str | None:
    if not installed("torch"):
        return "torch not installed"
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            return "torch has no CUDA device"
    return None


def backend_device(backend: str) -> str:
    return "cuda" if backend == "cuda" else "cpu"


def cuda_missing() -> str | None:
    """``None`` when GPU cases can run: fastloss's cuda backend is available."""
    ok, reason = backend_status().get("cuda", (False, "fastloss has no cuda backend"))
    return None if ok else f"no CUDA device: {reason}"


def _fastloss(backend: str, loss: str, op: str):
    def prepare(inputs: Inputs):
        import fastloss

        function = getattr(fastloss, FASTLOSS_FUNCTIONS[loss][op])
        first, second = inputs.first, inputs.second
        if op == "forward":
            return _synced(lambda: function(first, second, backend=backend), inputs.device)
        grad_out = inputs.xp.empty_like(first)
        return _synced(
            lambda: function(first, second, backend=backend, out=grad_out), inputs.device
        )

    return prepare


def _expression(loss: str, op: str):
    table = {
        "mse": {"forward": mse_expr_loss, "gradient": mse_expr_grad, "fused": mse_expr_with_grad},
        "softmax_cross_entropy": {
            "forward": ce_expr_loss,
            "gradient": ce_expr_grad,
            "fused": ce_expr_with_grad,
        },
    }
    formula = table[loss][op]

    def prepare(inputs: Inputs):
        xp, first, second = inputs.xp, inputs.first, inputs.second
        return _synced(lambda: formula(xp, first, second), inputs.device)

    return prepare


def _crysx_mse(op: str, variant: str):
    def prepare(inputs: Inputs):
        pred, target = inputs.first, inputs.second
        rows = pred.shape[0]
        if inputs.device == "cuda":
            loss_fn, grad_fn = crysx_mse_loss_cupy, crysx_mse_loss_grad_cupy
        elif variant == "fastmath":
            loss_fn, grad_fn = crysx_mse_loss_fastmath, crysx_mse_loss_grad
        else:
            loss_fn, grad_fn = crysx_mse_loss_prange, crysx_mse_loss_grad
        # crysx averages over a row's outputs only; the extra 1/rows is a scalar, free.
        if op == "forward":
            thunk = lambda: loss_fn(pred, target) / rows  # noqa: E731
        elif op == "gradient":
            thunk = lambda: grad_fn(pred, target)  # noqa: E731
        else:
            thunk = lambda: (loss_fn(pred, target) / rows, grad_fn(pred, target))  # noqa: E731
        return _synced(thunk, inputs.device)

    return prepare


def _crysx_ce(op: str):
    def prepare(inputs: Inputs):
        xp, logits, labels = inputs.xp, inputs.first, inputs.second
        rows = logits.shape[0]
        # crysx takes one-hot targets; building them is the caller's job, so it is not timed.
        onehot = xp.zeros(logits.shape, dtype=logits.dtype)
        onehot[xp.arange(rows), labels] = 1
        on_gpu = inputs.device == "cuda"
        softmax = crysx_softmax_cupy if on_gpu else crysx_softmax
        cce = crysx_cce_loss_cupy if on_gpu else crysx_cce_loss
        cce_grad = crysx_cce_loss_grad_cupy if on_gpu else crysx_cce_loss_grad

        def forward():
            return cce(softmax(logits), onehot) / rows

        def gradient():
            probs = softmax(logits)
            return softmax_backward(xp, probs, cce_grad(probs, onehot))

        def fused():
            probs = softmax(logits)
            return cce(probs, onehot) / rows, softmax_backward(xp, probs, cce_grad(probs, onehot))

        thunks = {"forward": forward, "gradient": gradient, "fused": fused}
        return _synced(thunks[op], inputs.device)

    return prepare


def _torch(loss: str, op: str):
    def prepare(inputs: Inputs):
        import torch
        import torch.nn.functional as F

        functional = F.mse_loss if loss == "mse" else F.cross_entropy
        first = torch.as_tensor(inputs.first)
        second = torch.as_tensor(inputs.second)
        if op == "forward":
            return _synced(lambda: functional(first, second), inputs.device)
        leaf = first.detach().requires_grad_()

        def backward():
            # A training step's zero_grad(set_to_none=True): each step allocates a fresh gradient.
            leaf.grad = None
            value = functional(leaf, second)
            value.backward()
            return leaf.grad if op == "gradient" else (value.detach(), leaf.grad)

        return _synced(backward, inputs.device)

    return prepare


def _liger(op: str):
    def prepare(inputs: Inputs):
        import torch
        from liger_kernel.ops.cross_entropy import LigerCrossEntropyFunction

        # Liger writes the gradient over its input during the forward pass: it gets its own copy,
        # and from the second call on it reads the previous gradient (same cost, other values).
        logits = torch.as_tensor(inputs.first).clone().requires_grad_()
        labels = torch.as_tensor(inputs.second)

        def apply():
            try:
                return LigerCrossEntropyFunction.apply(logits, labels)
            except TypeError:  # releases before ignore_index had a default
                return LigerCrossEntropyFunction.apply(logits, labels, -100)

        def run():
            logits.grad = None
            value = apply()
            value = value[0] if isinstance(value, tuple) else value
            value.backward()
            return logits.grad if op == "gradient" else (value.detach(), logits.grad)

        return _synced(run, inputs.device)

    return prepare


def floor_elements(loss: str, op: str, shape: tuple[int, int]) -> int:
    """Elements of the float32 array whose copy moves exactly the op's bytes (read + write)."""
    return max(1, op_bytes(loss, op, shape) // (2 * np.dtype(DTYPE).itemsize))


def _floor(loss: str, op: str):
    def prepare(inputs: Inputs):
        xp = inputs.xp
        count = floor_elements(loss, op, inputs.shape)
        source = xp.ones(count, dtype=DTYPE)
        destination = xp.zeros(count, dtype=DTYPE)
        return _synced(lambda: xp.copyto(destination, source), inputs.device)

    return prepare


def implementations(loss: str, op: str, device: str) -> list[Impl]:
    """Every contender for (loss, op, device), the unavailable ones with their reason."""
    impls = []
    for backend, (ok, reason) in backend_status().items():
        if backend_device(backend) == device:
            missing = None if ok else (f"no CUDA device: {reason}" if device == "cuda" else reason)
            impls.append(
                Impl(f"fastloss[{backend}]", "fastloss", loss, op, device,
                     _fastloss(backend, loss, op), missing, backend)
            )
    gpu_missing = cuda_missing() if device == "cuda" else None
    no_torch = None if gpu_missing else torch_missing(device)  # spares importing torch for nothing

    def peer(name, prepare, missing=None):
        impls.append(Impl(name, "peer", loss, op, device, prepare, gpu_missing or missing))

    peer("cupy-expr" if device == "cuda" else "numpy-expr", _expression(loss, op))
    if loss == "mse":
        if device == "cuda":
            peer("crysx-cupy", _crysx_mse(op, "cupy"))
        else:
            peer("crysx-fastmath", _crysx_mse(op, "fastmath"))
            if op != "gradient":  # both variants share one gradient function
                peer("crysx-prange", _crysx_mse(op, "prange"))
    else:
        peer("crysx-cupy" if device == "cuda" else "crysx", _crysx_ce(op))
    peer("torch", _torch(loss, op), no_torch)
    if device == "cuda" and loss == "softmax_cross_entropy" and op != "forward":
        peer("liger", _liger(op), no_torch or (None if installed("liger_kernel") else
                                               "liger_kernel not installed"))
    impls.append(Impl("floor", "floor", loss, op, device, _floor(loss, op), gpu_missing))
    return impls
