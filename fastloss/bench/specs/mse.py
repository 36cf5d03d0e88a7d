"""Mean squared error: ``mse_with_grad`` and ``mse`` against the NumPy expression, PyTorch, the
seeds' crysx_nn-style functions and the memory floor."""

import numpy as np
from numba import njit, prange

from fastloss.bench import peers

LOSS = "mse"


def squared_error(xp, pred, target):
    return (pred - target) ** 2


def expression_grad(xp, pred, target):
    return 2 * (pred - target) / pred.size


# The seeds' crysx_nn-style functions (crysx_nn/loss.py), with their decorators and constants.


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


# ... and their CuPy twins.


def crysx_mse_loss_cupy(outi, out0):
    import cupy as cp

    return cp.sum((outi - out0) ** 2) / outi.shape[1]


def crysx_mse_loss_grad_cupy(outi, out0):
    return 2 * (outi - out0) / outi.shape[1]


def _crysx(variant: str):
    def for_op(op: str):
        if variant == "prange" and op == "gradient":  # both variants share one gradient
            return None

        def prepare(inputs: peers.Inputs):
            pred, target = inputs.first, inputs.second
            rows = pred.shape[0]
            if inputs.device == "cuda":
                loss_fn, grad_fn = crysx_mse_loss_cupy, crysx_mse_loss_grad_cupy
            elif variant == "fastmath":
                loss_fn, grad_fn = crysx_mse_loss_fastmath, crysx_mse_loss_grad
            else:
                loss_fn, grad_fn = crysx_mse_loss_prange, crysx_mse_loss_grad
            # crysx averages over a row's outputs only; the extra 1/rows is a scalar, free.
            thunks = {
                "forward": lambda: loss_fn(pred, target) / rows,
                "gradient": lambda: grad_fn(pred, target),
                "fused": lambda: (loss_fn(pred, target) / rows, grad_fn(pred, target)),
            }
            return peers.synced(thunks[op], inputs.device)

        return prepare

    return for_op


SPEC = peers.elementwise_spec(
    LOSS, peers.normal_pair, squared_error, expression_grad,
    lambda F, pred, target: F.mse_loss(pred, target),
    peers=(
        peers.Peer("crysx-fastmath", _crysx("fastmath"), devices=("cpu",)),
        peers.Peer("crysx-prange", _crysx("prange"), devices=("cpu",)),
        peers.Peer("crysx-cupy", _crysx("cupy"), devices=("cuda",)),
    ),
    torch_drop_in=True,
)
