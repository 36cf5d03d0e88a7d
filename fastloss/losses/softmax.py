"""Softmax and log-softmax over the class axis (last) of ``(N, k)`` arrays, and their
vector-Jacobian products, each one fused pass over memory with no ``(N, k, k)`` Jacobian."""

from __future__ import annotations

import numpy as np

from fastloss import _registry
from fastloss import _validate as v
from fastloss.losses import _tail


@_registry.routes_dask
def _row_function(name, out, backend, **arrays):
    """``name``'s kernel over ``arrays`` (its inputs by argument name, the first leading):
    checks, conversion to the compute dtype, then ``out`` or a new array."""
    host = _registry.host_backend(backend)
    if host is not None:
        # The common case on a backend with a small call (g: the second input, or the
        # first again): checked and run in one compiled call, None for other arrays.
        small_call = host.small_calls[name]
        inputs = tuple(arrays.values())
        x, g = inputs[0], inputs[-1]
        if small_call is not None and v.typed_floats(x, g, out) and x.ndim == 2:
            buffer = np.empty_like(x) if out is None else out
            if small_call(x, g, buffer):
                return buffer
    backend = _registry.backend(backend, *arrays.values(), out)
    lead = next(iter(arrays))
    x = backend.asarray(arrays[lead], lead)
    with backend.scope(x):
        inputs = check_rows({**arrays, lead: x}, backend, backend.asarray)
        out = backend.check_out(out, "out", x)
        backend.same_device(*inputs, out)
        xp, dtype = backend.xp, x.dtype
        work = backend.compute_dtype(dtype)  # check_rows: every input has x's dtype
        inputs = [xp.ascontiguousarray(y, dtype=work) for y in inputs]
        buffer, writes_out = _tail.grad_buffer(xp, x.shape, work, dtype, out, True,
                                               inputs=inputs)
        if x.size:
            backend.kernels[name](*inputs, buffer)
        return _tail.output(buffer, writes_out, out, dtype)


def check_rows(arrays: dict, backend, convert=None) -> list:
    """The arrays (argument name -> array), each but the first passed through ``convert(y,
    name)`` when given, just before its checks: TypeError or ValueError unless the first is
    a float array of ``backend``'s dtypes, 2-D (N, k), and the others are of its shape and
    dtype (in either byte order: the kernels read copies in the native one). Dask's functions
    check their lazy arrays with it too."""
    (lead, x), *others = arrays.items()
    backend.check_float(x, lead)
    if x.ndim != 2:
        raise ValueError(f"{lead} must be 2-D (N, k) with the class axis last; got shape {x.shape}")
    checked = [x]
    for other, y in others:
        if convert is not None:
            y = convert(y, other)
        checked.append(y)
        backend.check_float(y, other)
        if y.shape != x.shape:
            raise ValueError(f"{other} must have the shape of {lead} {x.shape}; got {y.shape}")
        if y.dtype.newbyteorder("=") != x.dtype.newbyteorder("="):
            raise TypeError(f"{other} must have the dtype of {lead} {x.dtype}; got {y.dtype}")
    return checked


def softmax(z, *, out=None, backend: str = "auto"):
    """``exp(z - max) / sum(exp(z - max))`` along each row of ``(N, k)`` ``z``."""
    return _row_function("softmax", out, backend, z=z)


def log_softmax(z, *, out=None, backend: str = "auto"):
    """``z - max - log(sum(exp(z - max)))`` along each row of ``(N, k)`` ``z``."""
    return _row_function("log_softmax", out, backend, z=z)


def softmax_backward(p, grad_p, *, out=None, backend: str = "auto"):
    """The gradient with respect to ``z`` from ``p = softmax(z)`` and ``grad_p``, the
    gradient with respect to ``p``: ``p * (grad_p - sum(p * grad_p))`` per row."""
    return _row_function("softmax_backward", out, backend, p=p, grad_p=grad_p)


def log_softmax_backward(logp, grad_logp, *, out=None, backend: str = "auto"):
    """The gradient with respect to ``z`` from ``logp = log_softmax(z)`` and ``grad_logp``:
    ``grad_logp - exp(logp) * sum(grad_logp)`` per row."""
    return _row_function("log_softmax_backward", out, backend, logp=logp, grad_logp=grad_logp)


_CONTRACT = """
    Inputs: ``(N, k)`` floating-point arrays of one shape and dtype, class axis last (any
    layout); float16 is computed in float32 (on CUDA also bfloat16), float64 in float64,
    with float64 row sums on the CPU. ``out``: optional array of the input's shape and dtype
    that receives the result; it may be an input itself, and one that overlaps an input any
    other way gets the values of a separate one (through a buffer).
    Returns an array of the input's shape and dtype (C order when ``out`` is not given).
    Stable for entries of any magnitude; a row of NaN, or of all ``-inf``, gives a NaN row,
    as PyTorch does. ``backend``: "auto", "numpy", "numba" or "cuda". Raises ValueError for
    shapes, TypeError for dtypes and array types.
"""
for _function in (softmax, log_softmax, softmax_backward, log_softmax_backward):
    _function.__doc__ += _CONTRACT
