"""Softmax cross-entropy with integer labels: ``softmax_cross_entropy_with_grad`` against its
peers and the memory floor, also over the row width k at a fixed number of logits
(``CLASS_SWEEP``)."""

import numpy as np
from numba import njit

from fastloss.bench import bounds, peers

LOSS = "softmax_cross_entropy"
CLASS_SWEEP = (2, 10, 100, 1000, 32000, 128000)


def make(xp, rng, shape):
    rows, classes = shape
    return (rng.standard_normal(shape, dtype=peers.DTYPE),
            rng.integers(0, classes, size=rows, dtype=np.int64))


def op_bytes(op, shape, itemsize=4):
    rows, classes = shape
    block, labels = rows * classes * itemsize, rows * 8
    return block + labels if op == "forward" else 2 * block + labels


def reference(xp, logits, labels):
    """The summed loss of a block of rows, logits in float64."""
    row_max = logits.max(axis=1, keepdims=True)
    lse = row_max[:, 0] + xp.log(xp.exp(logits - row_max).sum(axis=1))
    return float((lse - logits[xp.arange(logits.shape[0]), labels]).sum())


# The expressions a user writes (NumPy on the CPU, CuPy on the GPU: same code, ``xp`` apart).


def _log_sum_exp(xp, logits):
    row_max = logits.max(axis=1, keepdims=True)
    return row_max + xp.log(xp.exp(logits - row_max).sum(axis=1, keepdims=True))


def expressions(loss, grad):
    """The forward, gradient and fused expressions of a cross-entropy whose loss and gradient
    are ``loss(xp, logits, target, lse)`` and ``grad(...)`` (``lse``: the rows' log-sum-exp,
    computed once a call)."""

    def fused(xp, logits, target):
        lse = _log_sum_exp(xp, logits)
        return loss(xp, logits, target, lse), grad(xp, logits, target, lse)

    return {"forward": lambda xp, logits, target: loss(xp, logits, target,
                                                       _log_sum_exp(xp, logits)),
            "gradient": lambda xp, logits, target: grad(xp, logits, target,
                                                        _log_sum_exp(xp, logits)),
            "fused": fused}


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


# The seeds' crysx_nn-style functions (crysx_nn/loss.py and activation.py) on the CPU ...


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


def _crysx(op: str):
    def prepare(inputs: peers.Inputs):
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
        return peers.synced(thunks[op], inputs.device)

    return prepare


def _crysx_peer(device: str):
    return peers.Peer("crysx-cupy" if device == "cuda" else "crysx", _crysx, devices=(device,))


def _liger(op: str):
    if op == "forward":
        return None

    def prepare(inputs: peers.Inputs):
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

        return peers.synced(run, inputs.device)

    return prepare


SPEC = peers.Spec(
    loss=LOSS, make=make, bytes=op_bytes, reference=reference, count=lambda shape: shape[0],
    expression={"forward": ce_expr_loss, "gradient": ce_expr_grad, "fused": ce_expr_with_grad},
    torch=lambda F, logits, labels: F.cross_entropy(logits, labels),
    sizes=("4x32000", "32x32000", "256x32000", "1024x32000"), quick_sizes=("1024x32000",),
    width=None, sweep=CLASS_SWEEP,
    peers=(_crysx_peer("cpu"), _crysx_peer("cuda"),
           peers.Peer("liger", _liger, devices=("cuda",), needs=("torch", "liger_kernel")),
           bounds.SOFTMAX_CROSS_ENTROPY),
    torch_drop_in=True,
)
