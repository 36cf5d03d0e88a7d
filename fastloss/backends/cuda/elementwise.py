"""The launcher of every elementwise loss's kernels (``kernels/<loss>.cu`` over
``kernels/common/elementwise.cuh``); contract: ``fastloss.backends``.

Two launches per call: the fused pass, then the finishing kernel that writes
the loss in the input's dtype.
"""

from __future__ import annotations

import numpy as np

from fastloss.backends import repeated
from fastloss.backends.cuda import _module

THREADS = 256  # FL_ELEMENTWISE_THREADS
UNROLL = 2  # FL_ELEMENTWISE_UNROLL
# A constant, not the GPU's SM count: the element-to-block partition, hence
# the bits of the total, must be the same on every device.
MAX_BLOCKS = 1024


def blocks_for(size: int, itemsize: int) -> int:
    """Grid size for ``size`` elements: whole 16-byte packets, UNROLL per thread per step."""
    packets = -(-size // (16 // itemsize))
    return min(MAX_BLOCKS, -(-packets // (THREADS * UNROLL)))


def fused(loss: str):
    """The backend function of the elementwise loss whose kernels are ``kernels/<loss>.cu``."""

    def backend_function(x, target, grad_out, loss_out, divisor, weight=None, aux=None,
                         param=0.0):
        import cupy

        dtype = x.dtype
        entry = _module.entry(loss, dtype)
        assert x.ndim == 1, x.shape
        weight, aux = repeated(weight, x.size, cupy), repeated(aux, x.size, cupy)
        arrays = (("x", x), ("target", target), ("weight", weight), ("aux", aux),
                  ("grad_out", grad_out), ("loss_out", loss_out))
        for name, array in arrays:
            _module.expect(array, name, x.shape, dtype)

        size = x.size
        blocks = blocks_for(size, dtype.itemsize)
        with x.device:
            partials = cupy.empty(blocks, dtype=cupy.float64)
            if blocks:
                kernel = _module.get_function(loss, entry)
                pointers = (_module.pointer_or_null(array)
                            for array in (weight, aux, grad_out, loss_out))
                kernel((blocks,), (THREADS,), (
                    x, target, *pointers, partials, np.int64(size), np.float64(param),
                    np.float64(divisor),
                ))
            return _module.finish(loss, partials, blocks, divisor, dtype)

    return backend_function
