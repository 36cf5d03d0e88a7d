"""MSE on the GPU: the launcher of ``kernels/mse.cu`` (contract: ``fastloss.backends``).

Two launches per call: the fused pass, then the finishing kernel that writes
the loss in ``pred``'s dtype.
"""

from __future__ import annotations

import numpy as np

from fastloss.backends.cuda import _module

THREADS = 256  # FL_MSE_THREADS
UNROLL = 2  # FL_MSE_UNROLL
# A constant, not the GPU's SM count: the element-to-block partition, hence
# the bits of the total, must be the same on every device.
MAX_BLOCKS = 1024
_DTYPES = ("float16", "bfloat16", "float32", "float64")


def blocks_for(size: int, itemsize: int) -> int:
    """Grid size for ``size`` elements: whole 16-byte packets, UNROLL per thread per step."""
    packets = -(-size // (16 // itemsize))
    return min(MAX_BLOCKS, -(-packets // (THREADS * UNROLL)))


def mse(pred, target, grad_out, loss_out, divisor):
    import cupy

    dtype = pred.dtype
    assert dtype.name in _DTYPES, dtype
    assert pred.ndim == 1, pred.shape
    arrays = (("pred", pred), ("target", target), ("grad_out", grad_out), ("loss_out", loss_out))
    for name, array in arrays:
        _module.expect(array, name, pred.shape, dtype)

    size = pred.size
    blocks = blocks_for(size, dtype.itemsize)
    with pred.device:
        partials = cupy.empty(blocks, dtype=cupy.float64)
        if blocks:
            kernel = _module.get_function("mse", f"fl_mse_{dtype.name}")
            kernel(
                (blocks,),
                (THREADS,),
                (
                    pred,
                    target,
                    _module.pointer_or_null(grad_out),
                    _module.pointer_or_null(loss_out),
                    partials,
                    np.int64(size),
                    np.float64(divisor),
                ),
            )
        return _module.finish("mse", partials, blocks, divisor, dtype)
