"""Arithmetic bounds: bench contenders that compute only the transcendental function an op cannot
avoid, once per element, with fastloss's own float32 vector math on Numba's threads.

A bound reads the op's input arrays (cross-entropy's: its logits; its labels, one per row, are not
read) and writes one array of their size, as the fused op does, in flat work items of as many
elements as the op's kernel's (cross-entropy's holds whole rows: at least one), and serially up to
the size where the op's kernel does. It computes nothing else, and its answer is not the loss
(nothing checks it as one). ``x exp-only`` near 1 says the op costs little beyond its
exponentials; whether that cost is arithmetic or memory, the bound's own ``x floor`` says.

- ``exp-only``: e**-|x| of every logit (softmax cross-entropy: one exponential per logit); for
  BCE with logits t e**-|x| (its softplus and sigmoid take e**-|x|, and a log1p besides).
- ``log-only``: t log x (binary cross-entropy of hard targets: one log per element, of x or of
  1 - x); for the KL divergence t (log t - x) (one log per target).

Fused and gradient ops only (a forward op writes no array); CPU only. Each bound of this module is
one loss's: ``peers=(bounds.<LOSS>,)`` in its spec.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from fastloss.backends.numba import _kernel_copies as copies
from fastloss.backends.numba import elementwise
from fastloss.backends.numba import softmax_cross_entropy as rows
from fastloss.backends.numba._vector_math import exp_nonpositive, log_nonnegative
from fastloss.bench import peers

# Numba's disk cache notices edits to this file only; the kernels' names carry a digest of the
# files whose code they inline, so that an edit of the vector math compiles them again.
_TAG = copies.source_tag("_vector_math.py", "softmax_cross_entropy.py")


@njit(inline="always")
def _exp_of_minus_abs(x, t):
    return exp_nonpositive(-abs(x))


@njit(inline="always")
def _target_exp(x, t):
    return t * _exp_of_minus_abs(x, t)


@njit(inline="always")
def _target_log(x, t):
    return t * log_nonnegative(x)


@njit(inline="always")
def _target_log_gap(x, t):
    return t * (log_nonnegative(t) - x)


def _block(x, t, out, start, stop):
    rows._wide_vectors_out_of_line()
    # Views indexed from 0, so that LLVM loads and stores them as vectors.
    xs, ts, outs = x[start:stop], t[start:stop], out[start:stop]
    for i in range(xs.size):
        outs[i] = element(xs[i], ts[i])  # noqa: F821 (in _compiled's copy)


def _kernel(x, t, out, block_elements):
    blocks = (x.size + block_elements - 1) // block_elements
    for block in prange(blocks):
        start = block * block_elements
        run_block(x, t, out, start, min(x.size, start + block_elements))  # noqa: F821


def _compiled(element):
    """The serial and threaded kernels ``(x, t, out, block_elements)`` writing ``element(x, t)``
    of every element (named after the element: the disk cache tells functions apart by name)."""
    name = f"{element.py_func.__name__.strip('_')}_{_TAG}"
    block = njit(cache=True, error_model="numpy")(
        copies.copy(_block, {**globals(), "element": element}, f"_block__{name}"))
    return copies.serial_and_parallel(_kernel, {**globals(), "run_block": block}, name)


def _bound(name: str, element, reads_target: bool, block_elements: int,
           serial_elements: int) -> peers.Peer:
    kernels = None

    def prepare(op):
        if op not in ("fused", "gradient"):
            return None

        def ready(inputs: peers.Inputs):
            nonlocal kernels
            kernels = kernels or _compiled(element)
            x = np.ascontiguousarray(inputs.first).reshape(-1)
            t = np.ascontiguousarray(inputs.second).reshape(-1) if reads_target else x
            out = np.empty_like(x)
            kernel = kernels[0] if x.size <= serial_elements else kernels[1]

            def run():
                kernel(x, t, out, block_elements)
                return out

            return run

        return ready

    return peers.Peer(name, prepare, devices=("cpu",), bound=True)


_ROWS = (rows.BLOCK_ELEMENTS, rows.SERIAL_ELEMENTS)
_ELEMENTWISE = (elementwise.BLOCK, elementwise.SERIAL_ELEMENTS)
SOFTMAX_CROSS_ENTROPY = _bound("exp-only", _exp_of_minus_abs, False, *_ROWS)
BINARY_CROSS_ENTROPY_WITH_LOGITS = _bound("exp-only", _target_exp, True, *_ELEMENTWISE)
BINARY_CROSS_ENTROPY = _bound("log-only", _target_log, True, *_ELEMENTWISE)
KL_DIV = _bound("log-only", _target_log_gap, True, *_ELEMENTWISE)
