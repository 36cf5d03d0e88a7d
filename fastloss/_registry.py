"""Which backend computes what: the kernel table, availability and "auto".

Backends are imported lazily and cached, so importing fastloss imports
neither numba nor cupy; "auto" looks only at ``type(x).__module__`` and the
CUDA array interface, never at a framework it does not need.
"""

from __future__ import annotations

import functools
import importlib

BACKENDS = ("numpy", "numba", "cuda")

_KERNELS = {
    ("mse", "numpy"): "fastloss.backends.numpy.mse:mse",
    ("mse", "numba"): "fastloss.backends.numba.mse:mse",
    ("mse", "cuda"): "fastloss.backends.cuda.mse:mse",
    ("softmax_cross_entropy", "numpy"):
        "fastloss.backends.numpy.softmax_cross_entropy:softmax_cross_entropy",
    ("softmax_cross_entropy", "numba"):
        "fastloss.backends.numba.softmax_cross_entropy:softmax_cross_entropy",
    ("softmax_cross_entropy", "cuda"):
        "fastloss.backends.cuda.softmax_cross_entropy:softmax_cross_entropy",
}


# Per CPU backend: a one-pass check of class indices and the divisor of their
# "mean" (cuda checks labels in its kernels; see fastloss.losses).
_LABEL_SUMMARIES = {
    backend: f"fastloss.backends.{backend}.softmax_cross_entropy:label_summary"
    for backend in ("numpy", "numba")
}


def _version(module_name: str) -> str:
    return getattr(importlib.import_module(module_name), "__version__", "?")


def _probe(backend: str) -> tuple[bool, str]:
    if backend == "numpy":
        return True, f"numpy {_version('numpy')}"
    if backend == "numba":
        try:
            return True, f"numba {_version('numba')}"
        except ImportError as exc:
            return False, f"numba is not installed ({exc}); pip install numba"
    try:
        from fastloss.backends.cuda._arrays import available
    except ImportError as exc:
        return False, f"the cuda backend cannot be imported: {exc}"
    return available()


@functools.cache
def backend_status(backend: str) -> tuple[bool, str]:
    """``(available, detail)``: versions when available, else the reason why not."""
    return _probe(backend)


def available_backends() -> list[str]:
    """The names of the backends that can run here, in preference order."""
    return [name for name in BACKENDS if backend_status(name)[0]]


def is_device_array(x) -> bool:
    """True for CuPy arrays and anything exposing the CUDA array interface."""
    return type(x).__module__.split(".")[0] == "cupy" or hasattr(x, "__cuda_array_interface__")


def is_dask_array(x) -> bool:
    """True for dask arrays, recognised by type without importing dask."""
    return type(x).__module__.startswith("dask.array")


def routes_dask(function):
    """``function``, but a call with a dask array argument goes to ``fastloss.dask``'s
    function of the same name (lazy, chunk by chunk) before anything else happens."""
    name = function.__name__

    @functools.wraps(function)
    def dispatch(*args, **kwargs):
        if any(map(is_dask_array, args)) or any(map(is_dask_array, kwargs.values())):
            return getattr(importlib.import_module("fastloss.dask"), name)(*args, **kwargs)
        return function(*args, **kwargs)

    return dispatch


def resolve(backend: str, *arrays) -> str:
    """The concrete backend name for ``backend`` and the caller's arrays.

    Raises ValueError for an unknown name or an unavailable backend (with the
    reason), TypeError for a name that is not a string.
    """
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string, got {type(backend).__name__}")
    if backend == "auto":
        if any(is_device_array(x) for x in arrays if x is not None):
            backend = "cuda"
        else:
            backend = "numba" if backend_status("numba")[0] else "numpy"
    if backend not in BACKENDS:
        raise ValueError(
            f"backend must be one of 'auto', {', '.join(map(repr, BACKENDS))}; got {backend!r}"
        )
    ok, reason = backend_status(backend)
    if not ok:
        raise ValueError(f"backend={backend!r} is not available: {reason}")
    return backend


def _load(spec: str):
    module_name, function_name = spec.split(":")
    return getattr(importlib.import_module(module_name), function_name)


@functools.cache
def kernel(loss: str, backend: str):
    """The fused kernel function of ``loss`` on ``backend``, imported once."""
    return _load(_KERNELS[(loss, backend)])


@functools.cache
def label_summary(backend: str):
    """``label_summary(labels, weight, classes, ignore_index) -> (first, kept)``
    of a CPU backend, imported once (see the backends' softmax_cross_entropy)."""
    return _load(_LABEL_SUMMARIES[backend])


_HOST_BACKENDS: dict[str, str | None] = {}


def host_backend(backend) -> str | None:
    """The CPU backend that ``backend`` means for host arrays, when it is one
    that can run ("auto", "numpy", "numba"); None for anything else, which
    then goes through :func:`resolve` and its errors."""
    if type(backend) is not str:
        return None
    try:
        return _HOST_BACKENDS[backend]
    except KeyError:
        name = backend
        if name == "auto":
            name = "numba" if backend_status("numba")[0] else "numpy"
        runs = name in ("numpy", "numba") and backend_status(name)[0]
        # Remembered for the names the API knows only: the table stays small.
        if backend in ("auto", *BACKENDS):
            _HOST_BACKENDS[backend] = name if runs else None
        return name if runs else None
