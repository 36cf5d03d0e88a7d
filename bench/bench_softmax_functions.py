"""fl.softmax, fl.log_softmax and their vector-Jacobian products (numba, ``out=``) against the
NumPy expression, PyTorch's kernels (``F.softmax``, ``aten._softmax_backward_data``, ...), the
memory floor, and, for ``softmax_backward``, the ``(N, k, k)`` Jacobian product of a crysx_nn
style loop.

    pytest bench/bench_softmax_functions.py --benchmark-group-by=group

Each group is one function at one shape; ``extra_info`` holds the bytes moved and GB/s. The
floor copies half the bytes the function must move (``np.copyto``, one thread).
"""

from __future__ import annotations

import numpy as np
import pytest

import fastloss as fl

SHAPES = [(4096, 32000)]
JACOBIAN_SHAPE = (512, 1000)  # the Jacobian product needs N * k * k floats
SMOKE_SHAPES = [(3, 37)]
FUNCTIONS = ("softmax", "log_softmax", "softmax_backward", "log_softmax_backward")
# Arrays each function reads and writes (one each per element).
ARRAYS = {"softmax": 2, "log_softmax": 2, "softmax_backward": 3, "log_softmax_backward": 3}


def _numpy(name):
    def softmax(z, g):
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def log_softmax(z, g):
        shifted = z - z.max(axis=1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))

    def softmax_backward(p, g):
        return p * (g - (p * g).sum(axis=1, keepdims=True))

    def log_softmax_backward(logp, g):
        return g - np.exp(logp) * g.sum(axis=1, keepdims=True)

    return locals()[name]


def _torch(name):
    torch = pytest.importorskip("torch")
    aten = torch.ops.aten
    calls = {
        "softmax": lambda z, g: torch.softmax(z, 1),
        "log_softmax": lambda z, g: torch.log_softmax(z, 1),
        "softmax_backward": lambda p, g: aten._softmax_backward_data(g, p, 1, p.dtype),
        "log_softmax_backward": lambda lp, g: aten._log_softmax_backward_data(g, lp, 1, lp.dtype),
    }
    return calls[name], torch.from_numpy


def _jacobian_product(p, g):
    """The crysx_nn-style VJP: the (N, k, k) softmax Jacobian, then a batched product."""
    jacobian = p[:, :, None] * (np.eye(p.shape[1], dtype=p.dtype) - p[:, None, :])
    return np.einsum("nij,ni->nj", jacobian, g)


def _params(config_small):
    shapes = SMOKE_SHAPES if config_small else SHAPES
    params = [(name, shape, contender) for shape in shapes for name in FUNCTIONS
              for contender in ("fastloss", "numpy", "torch", "floor")]
    jacobian = SMOKE_SHAPES[0] if config_small else JACOBIAN_SHAPE
    params += [("softmax_backward", jacobian, contender)
               for contender in ("fastloss", "jacobian")]
    return params


def pytest_generate_tests(metafunc):
    if "function_case" in metafunc.fixturenames:
        from conftest import small_shapes

        metafunc.parametrize("function_case", [
            pytest.param(case, id=f"{case[0]}-{case[1][0]}x{case[1][1]}-{case[2]}")
            for case in _params(small_shapes(metafunc.config))
        ])


def _inputs(name, shape):
    rng = np.random.default_rng(0)
    z = (rng.standard_normal(shape, dtype=np.float32) * 3).astype(np.float32)
    first = {"softmax": z, "log_softmax": z, "softmax_backward": fl.softmax(z),
             "log_softmax_backward": fl.log_softmax(z)}[name]
    return first, rng.standard_normal(shape, dtype=np.float32)


def test_softmax_function(benchmark, function_case):
    name, shape, contender = function_case
    first, g = _inputs(name, shape)
    nbytes = ARRAYS[name] * first.nbytes
    out = np.empty_like(first)
    if contender == "fastloss":
        function = getattr(fl, name)
        args = (first,) if name in ("softmax", "log_softmax") else (first, g)
        thunk = lambda: function(*args, out=out)  # noqa: E731
    elif contender == "numpy":
        expression = _numpy(name)
        thunk = lambda: expression(first, g)  # noqa: E731
    elif contender == "torch":
        call, tensor = _torch(name)
        first_t, g_t = tensor(first), tensor(g)
        thunk = lambda: call(first_t, g_t)  # noqa: E731
    elif contender == "jacobian":
        thunk = lambda: _jacobian_product(first, g)  # noqa: E731
    else:
        source = np.ones(nbytes // 2 // 4, np.float32)
        target = np.empty_like(source)
        thunk = lambda: np.copyto(target, source)  # noqa: E731
    benchmark.group = f"{name} {shape[0]}x{shape[1]}"
    benchmark.extra_info.update(contender=contender, bytes=nbytes)
    benchmark.pedantic(thunk, rounds=5, warmup_rounds=1, iterations=1)
