"""Softmax, log-softmax and their VJPs on the GPU: the launcher of ``kernels/softmax.cu``.

Contract (called by the front inside the inputs' device scope): every array is
``(N, k)``, C-contiguous, of one dtype (float16, bfloat16, float32 or float64),
k >= 1; ``out`` may be one of the inputs. Each function writes ``out`` and
returns None; one launch per call, none when N == 0. Halves and float32
compute elements in float32 and row sums in float64; float64 in float64.
A row of up to 4096 classes is read once; a longer one twice. The same
inputs give the same bits, run after run.
"""

from __future__ import annotations

import numpy as np

from fastloss.backends.cuda import _module

# The row geometry of cross-entropy: both kernels tile rows with common/rows.cuh.
from fastloss.backends.cuda.softmax_cross_entropy import launch_shape


def _launch(function: str, inputs: tuple, out) -> None:
    first = inputs[0]
    dtype = first.dtype
    entry = _module.entry(function, dtype)
    assert first.ndim == 2 and first.shape[1] >= 1, first.shape
    for index, array in enumerate((*inputs, out)):
        _module.expect(array, f"argument {index}", first.shape, dtype)
    rows, classes = first.shape
    blocks, threads, row_lanes = launch_shape(rows, classes)
    if blocks:
        kernel = _module.get_function("softmax", entry)
        args = (*inputs, out, np.int64(rows), np.int64(classes), np.int32(row_lanes))
        kernel((blocks,), (threads,), args)


def softmax(z, out) -> None:
    """``out[i] = exp(z[i] - max z[i]) / sum(exp(z[i] - max z[i]))``."""
    _launch("softmax", (z,), out)


def log_softmax(z, out) -> None:
    """``out[i] = z[i] - max z[i] - log(sum(exp(z[i] - max z[i])))``."""
    _launch("log_softmax", (z,), out)


def softmax_backward(p, g, out) -> None:
    """``out[i] = p[i] * (g[i] - sum(p[i] * g[i]))``, ``p`` a softmax."""
    _launch("softmax_backward", (p, g), out)


def log_softmax_backward(logp, g, out) -> None:
    """``out[i] = g[i] - exp(logp[i]) * sum(g[i])``, ``logp`` a log-softmax."""
    _launch("log_softmax_backward", (logp, g), out)
