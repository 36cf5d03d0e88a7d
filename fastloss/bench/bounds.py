"""Arithmetic bounds: bench contenders that compute only the transcendental function an op cannot
avoid, once per element, with fastloss's own float32 vector math on Numba's threads.

A bound reads the op's inputs and writes one array of their shape, as the fused op does, so it
moves at most the op's bytes; it computes nothing else, and its answer is not the loss (it is not
checked against the reference). Where fastloss's time is near its bound's, the op is bound by that
arithmetic at fastloss's accuracy, not by memory, and no faster memory access can help it:

- ``exp-only``: e**-|x| of every element. Softmax cross-entropy takes one exponential per logit.
- ``log-only``: t log x of every element (t log t for the KL divergence, whose log is of its
  target). Binary cross-entropy of hard targets takes one log per element (of x or of 1 - x);
  the KL divergence one per target.

Fused and gradient ops only (a forward op writes no array); CPU only.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from fastloss.backends.numba import _kernel_copies as copies
from fastloss.backends.numba._vector_math import exp_nonpositive, log_nonnegative
from fastloss.backends.numba.softmax_cross_entropy import _wide_vectors_out_of_line
from fastloss.bench import peers

# Elements per parallel work item; up to SERIAL_ELEMENTS a call runs on one thread, as
# fastloss's kernels do, for which starting threads costs more than it saves.
BLOCK = 1 << 16
SERIAL_ELEMENTS = 1 << 17


@njit(inline="always")
def _exp_of_minus_abs(x, t):
    return exp_nonpositive(-abs(x))


@njit(inline="always")
def _target_log(x, t):
    return t * log_nonnegative(x)


@njit(inline="always")
def _target_xlogx(x, t):
    return t * log_nonnegative(t)


def _block(x, t, out, start, stop):
    _wide_vectors_out_of_line()
    # Views indexed from 0, so that LLVM loads and stores them as vectors.
    xs, ts, outs = x[start:stop], t[start:stop], out[start:stop]
    for i in range(xs.size):
        outs[i] = element(xs[i], ts[i])  # noqa: F821 (in _compiled's copy)


def _kernel(x, t, out):
    blocks = (x.size + BLOCK - 1) // BLOCK
    for block in prange(blocks):
        run_block(x, t, out, block * BLOCK, min(x.size, (block + 1) * BLOCK))  # noqa: F821


def _compiled(element):
    """The serial and threaded kernels ``(x, t, out)`` writing ``element(x, t)`` of every
    element (named after the element: Numba's disk cache tells functions apart by name)."""
    name = element.py_func.__name__
    block = njit(cache=True, error_model="numpy")(
        copies.copy(_block, {**globals(), "element": element}, f"_block_{name}"))
    return copies.serial_and_parallel(_kernel, {**globals(), "run_block": block}, name)


def _bound(name: str, element, reads_target: bool) -> peers.Peer:
    kernels = None

    def prepare(op):
        if op not in ("fused", "gradient"):
            return None

        def ready(inputs: peers.Inputs):
            nonlocal kernels
            kernels = kernels or _compiled(element)
            x = np.ascontiguousarray(inputs.first).reshape(-1)
            kernel = kernels[0] if x.size <= SERIAL_ELEMENTS else kernels[1]
            t = np.ascontiguousarray(inputs.second).reshape(-1) if reads_target else x
            out = np.empty_like(x)

            def run():
                kernel(x, t, out)
                return out

            return run

        return ready

    return peers.Peer(name, prepare, devices=("cpu",), bound=True)


EXP_ONLY = _bound("exp-only", _exp_of_minus_abs, reads_target=False)
LOG_ONLY = _bound("log-only", _target_log, reads_target=True)
# The KL divergence's log is of its target: t log t.
TARGET_LOG_ONLY = _bound("log-only", _target_xlogx, reads_target=True)
