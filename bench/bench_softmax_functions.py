"""fl.softmax, fl.log_softmax and their vector-Jacobian products (numba, ``out=``) against the
NumPy expression, PyTorch's kernels (``F.softmax``, ``aten._softmax_backward_data``, ...), the
memory floor, and, for ``softmax_backward``, the ``(N, k, k)`` Jacobian product of a crysx_nn
style loop.

    pytest bench/bench_softmax_functions.py --benchmark-group-by=group

Each group is one function at one shape; ``extra_info`` holds the bytes moved. The floor copies
half the bytes the function must move (``np.copyto``, one thread). Inputs, bytes, expressions
and PyTorch's calls are the functions' specs, ``fastloss.bench.specs.<function>``, which
``python -m fastloss bench --losses softmax,...`` runs too.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastloss as fl
from fastloss.bench import peers, report

SHAPES = [(4096, 32000)]
JACOBIAN_SHAPE = (512, 1000)  # the Jacobian product needs N * k * k floats
SMOKE_SHAPES = [(3, 37)]
FUNCTIONS = ("softmax", "log_softmax", "softmax_backward", "log_softmax_backward")


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


def test_softmax_function(benchmark, function_case):
    name, shape, contender = function_case
    spec = peers.spec(name)
    first, second = spec.make(np, np.random.default_rng(0), shape)
    args = (first,) if second is None else (first, second)
    nbytes = spec.bytes("call", shape, first.itemsize)
    out = np.empty_like(first)
    if contender == "fastloss":
        function = getattr(fl, name)
        thunk = lambda: function(*args, out=out)  # noqa: E731
    elif contender == "numpy":
        expression = spec.expression["call"]
        thunk = lambda: expression(np, first, second)  # noqa: E731
    elif contender == "torch":
        torch = pytest.importorskip("torch")
        import torch.nn.functional as F

        tensors = [None if array is None else torch.from_numpy(array) for array in (first, second)]
        thunk = lambda: spec.torch(F, *tensors)  # noqa: E731
    elif contender == "jacobian":
        thunk = lambda: _jacobian_product(first, second)  # noqa: E731
    else:
        source = np.ones(nbytes // 2 // 4, np.float32)
        target = np.empty_like(source)
        thunk = lambda: np.copyto(target, source)  # noqa: E731
    benchmark.group = f"{name} {shape[0]}x{shape[1]}"
    benchmark.extra_info.update(contender=contender, bytes=nbytes)
    result = benchmark.pedantic(thunk, rounds=5, warmup_rounds=1, iterations=1)
    if contender != "floor":  # the answer, against the function's float64 reference
        from conftest import RESULT_TOLERANCE

        error = report.array_error(peers.Inputs(name, "cpu", shape, np, first, second), result)
        assert error <= RESULT_TOLERANCE, f"{contender} {name}: off by {error:.3g}"
