"""Which backend computes what: the loss table, the backend objects, availability and "auto".

Backends are imported lazily and cached, so importing fastloss imports
neither numba nor cupy; "auto" looks only at ``type(x).__module__`` and the
CUDA array interface, never at a framework it does not need.

A loss is registered once, in ``LOSSES``; each backend then holds its
function in ``fastloss.backends.<backend>.<loss>`` under the loss's name.
"""

from __future__ import annotations

import functools
import importlib
import sys

import numpy as np

from fastloss._backend import Backend, CudaBackend, HostBackend

BACKENDS = ("numpy", "numba", "cuda")

# Every loss, by family. Elementwise losses share the front of
# ``fastloss.losses._elementwise`` and, per backend, one fused elementwise
# kernel over a per-loss functor.
ELEMENTWISE = (
    "mse", "l1", "smooth_l1", "huber", "binary_cross_entropy_with_logits",
    "binary_cross_entropy", "hinge", "kl_div",
)
ROWWISE = ("softmax_cross_entropy", "nll", "softmax_entropy", "multi_margin")
LOSSES = ELEMENTWISE + ROWWISE
# Functions of rows that are not losses, all in each backend's ``softmax`` module.
SOFTMAX_FUNCTIONS = ("softmax", "log_softmax", "softmax_backward", "log_softmax_backward")

_KERNELS = {
    (loss, backend): f"fastloss.backends.{backend}.{loss}:{loss}"
    for loss in LOSSES for backend in BACKENDS
} | {
    (name, backend): f"fastloss.backends.{backend}.softmax:{name}"
    for name in SOFTMAX_FUNCTIONS for backend in BACKENDS
}
# Hooks: helpers a front asks its backend for, apart from the kernels. On the
# CPU backends "label_summary" checks class indices in one pass and gives a
# "mean"'s divisor; on cuda "mean_divisor" computes that divisor on the device
# (no synchronisation), and the kernels turn invalid labels into NaN rows.
_HOOKS = {
    ("label_summary", backend): f"fastloss.backends.{backend}.softmax_cross_entropy:label_summary"
    for backend in ("numpy", "numba")
} | {("mean_divisor", "cuda"): "fastloss.backends.cuda.softmax_cross_entropy:mean_divisor"}


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


def is_device_array(x) -> bool:
    """True for CuPy arrays and anything exposing the CUDA array interface."""
    return type(x).__module__.split(".")[0] == "cupy" or hasattr(x, "__cuda_array_interface__")


def is_dask_array(x) -> bool:
    """True for dask arrays, recognised by type without importing dask."""
    return type(x).__module__.startswith("dask.array")


def _dask_loaded() -> bool:
    """Whether dask.array is imported: until it is, no argument can be a dask
    array, and a call skips looking at each one (a tenth of a tiny call)."""
    return "dask.array" in sys.modules


def any_dask_array(*arrays) -> bool:
    """True when one of ``arrays`` is a dask array."""
    return _dask_loaded() and any(map(is_dask_array, arrays))


def routes_dask(front):
    """``front``, the internal front of a loss or function over rows (positional
    arguments, arrays also by keyword), but a call with a dask array among its
    arguments goes to ``fastloss.dask``'s function of the same name and arguments
    (lazy, chunk by chunk) before anything else happens. A wrapper of the
    internal front, not of the public functions: their keyword arguments would
    be packed and unpacked once more on every call (a tenth of a tiny call)."""
    name = front.__name__

    @functools.wraps(front)
    def dispatch(*args, **arrays):
        if _dask_loaded() and (
            any(map(is_dask_array, args)) or any(map(is_dask_array, arrays.values()))
        ):
            return getattr(importlib.import_module("fastloss.dask"), name)(*args, **arrays)
        return front(*args, **arrays)

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
            backend = _host_default()
    if backend not in BACKENDS:
        raise ValueError(
            f"backend must be one of 'auto', {', '.join(map(repr, BACKENDS))}; got {backend!r}"
        )
    ok, reason = backend_status(backend)
    if not ok:
        raise ValueError(f"backend={backend!r} is not available: {reason}")
    return backend


def backend(name: str, *arrays) -> Backend:
    """The backend object for ``name`` ("auto" included) and the caller's arrays,
    resolved as :func:`resolve` does."""
    if type(name) is str and name == "auto":
        # The common call, NumPy arrays only, without resolve's general checks.
        for x in arrays:
            if x is not None and type(x) is not np.ndarray:
                break
        else:
            return _OBJECTS[_host_default()]
    return _OBJECTS[resolve(name, *arrays)]


@functools.cache
def _host_default() -> str:
    return "numba" if backend_status("numba")[0] else "numpy"


def host_backend(name) -> Backend | None:
    """The CPU backend object that ``name`` means for host arrays, when it is one
    that can run ("auto", "numpy", "numba"); None for anything else, which then
    goes through :func:`resolve` and its errors."""
    return _runnable_host(name) if type(name) is str else None


@functools.cache
def _runnable_host(name: str) -> Backend | None:
    # Per name: "numpy" (or "cuda", or a bad name) must not import numba to find out.
    if name == "auto":
        return _OBJECTS[_host_default()]
    if (name == "numba" or name == "numpy") and backend_status(name)[0]:
        return _OBJECTS[name]
    return None


def _load(spec: str):
    module_name, function_name = spec.split(":")
    return getattr(importlib.import_module(module_name), function_name)


@functools.cache
def kernel(loss: str, backend: str):
    """The fused kernel of ``loss`` on ``backend``, imported once."""
    return _load(_KERNELS[(loss, backend)])


@functools.cache
def hook(name: str, backend: str):
    """The helper ``name`` of ``backend`` (see ``_HOOKS``), imported once."""
    return _load(_HOOKS[(name, backend)])


_OBJECTS = {name: HostBackend(name, kernel, hook) for name in ("numpy", "numba")}
_OBJECTS["cuda"] = CudaBackend("cuda", kernel, hook)
