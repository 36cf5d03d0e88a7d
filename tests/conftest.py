"""Shared fixtures: every available backend, per-dtype tolerances, host <-> backend moves."""

import numpy as np
import pytest

from fastloss import _registry


def _backend_param(name):
    marks = [pytest.mark.gpu] if name == "cuda" else []
    ok, reason = _registry.backend_status(name)
    if not ok:
        if name == "cuda" and not reason.startswith("no CUDA device"):
            reason = f"no CUDA device: {reason}"
        marks.append(pytest.mark.skip(reason=reason))
    return pytest.param(name, id=name, marks=marks)


BACKENDS = [_backend_param(name) for name in _registry.BACKENDS]

# (rtol, atol) of a result of this dtype against a float64 reference.
TOLERANCE = {
    np.dtype(np.float64): (1e-10, 1e-12),
    np.dtype(np.float32): (2e-5, 1e-6),
    np.dtype(np.float16): (4e-3, 1e-3),
}


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture(params=[np.float32, np.float64], ids=["float32", "float64"])
def dtype(request):
    return np.dtype(request.param)


def to_backend(x, backend):
    """A host array as the array type ``backend`` takes."""
    if backend == "cuda" and x is not None:
        import cupy

        return cupy.asarray(x)
    return x


def to_host(x):
    """Any result (NumPy, CuPy, scalar) as a NumPy value."""
    if type(x).__module__.split(".")[0] == "cupy":
        return x.get()
    return np.asarray(x)


def assert_close(actual, expected, dtype):
    rtol, atol = TOLERANCE[np.dtype(dtype)]
    np.testing.assert_allclose(to_host(actual).astype(np.float64), expected, rtol=rtol, atol=atol)
