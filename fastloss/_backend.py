"""Backend objects: what a front needs to know about where a loss runs.

One object per backend, resolved once per call by ``fastloss._registry.backend``.
It carries the array module, how the caller's arrays become that module's
arrays (never a hidden host <-> device copy), the device scope, the dtypes a
kernel computes in, how a loss comes back to the caller, and the backend's
kernels and hooks. The fronts never compare backend names.
"""

from __future__ import annotations

import contextlib

import numpy as np

from fastloss._validate import dtype_name

_HOST_NAMES = ("float16", "float32", "float64")
# The dtypes of the cuda backend: its kernels have an instance for each (cuda._module.entry).
DEVICE_DTYPE_NAMES = ("float16", "bfloat16", "float32", "float64")
_HALF_NAMES = DEVICE_DTYPE_NAMES[:2]
_HOST_DTYPES = frozenset(np.dtype(name) for name in _HOST_NAMES)
_FLOAT32 = np.dtype(np.float32)
_FLOAT16 = np.dtype(np.float16)
_FLOAT64 = np.dtype(np.float64)
_NO_SCOPE = contextlib.nullcontext()
# A unit of a float dtype times a Python float is that float rounded once to
# the dtype (NumPy 2 keeps a scalar's dtype against a Python float), at a
# fifth of the cost of dtype.type(value); NumPy 1 promotes to float64.
_UNITS = {dtype: dtype.type(1) for dtype in (_FLOAT32, _FLOAT64)}
_UNIT_ROUNDS = type(_UNITS[_FLOAT32] * 1.5) is np.float32
_FLOAT32_MAX = float(np.finfo(np.float32).max)


class _Loaded(dict):
    """``loaded[name]``: ``load(name, backend)``, called on first use; later
    look-ups are a plain dict's (they run on every call)."""

    def __init__(self, load, backend: str):
        super().__init__()
        self._load = load
        self._backend = backend

    def __missing__(self, name: str):
        value = self[name] = self._load(name, self._backend)
        return value


class Backend:
    """The interface; see :class:`HostBackend` and :class:`CudaBackend`.

    ``host``: arrays live in host memory, so a check of their values is cheap
    and may raise; on a device it would synchronise, and kernels turn invalid
    values into NaN instead.
    """

    name: str
    host: bool
    kernels: _Loaded
    hooks: _Loaded

    def __init__(self, name: str, kernels, hooks):
        self.name = name
        # kernels[loss]: the fused kernel registered as ``loss`` for this backend;
        # hooks[name]: its helper ``name`` (``fastloss._registry._HOOKS``).
        self.kernels = _Loaded(kernels, name)
        self.hooks = _Loaded(hooks, name)
        # small_calls[loss]: its kernel's common case checked and run in one call
        # (``small_call``, numba's), or None.
        self.small_calls = _Loaded(
            lambda loss, backend: getattr(self.kernels[loss], "small_call", None), name)

    def __repr__(self) -> str:
        return f"<fastloss backend {self.name!r}>"

    def _dtype_error(self, x, name: str, names) -> TypeError:
        return TypeError(
            f"{name} must be a floating-point array ({', '.join(names)}); got dtype {x.dtype}"
        )

    def check_out(self, out, name: str, like):
        """``out`` as an array of this backend with ``like``'s shape and dtype (or None)."""
        if out is None:
            return None
        out = self.writable(out, name)
        if out.shape != like.shape:
            raise ValueError(
                f"{name} must have shape {like.shape} (that of the input); got {out.shape}"
            )
        if out.dtype != like.dtype:
            raise TypeError(
                f"{name} must have dtype {like.dtype} (that of the input); got {out.dtype}"
            )
        if _shares_elements(out):
            raise ValueError(
                f"{name} must not overlap itself; got a view whose elements share memory "
                f"(strides {out.strides}, as of broadcasting or as_strided)"
            )
        return out


# Up to this many elements, a view that _may_share_elements cannot clear is decided exactly.
_EXACT_OVERLAP_ELEMENTS = 1 << 22


def _shares_elements(array) -> bool:
    """Whether two elements of ``array`` are the same memory, or may be (a view past
    ``_EXACT_OVERLAP_ELEMENTS`` that the strides alone cannot clear, such as columns
    interleaved by ``as_strided``): from the byte offsets of its elements otherwise."""
    if not _may_share_elements(array):
        return False
    if array.size > _EXACT_OVERLAP_ELEMENTS:
        return True
    offsets = np.zeros((), np.int64)
    for stride, size in zip(array.strides, array.shape, strict=True):
        offsets = offsets[..., None] + np.arange(size, dtype=np.int64) * stride
    offsets = np.sort(offsets, axis=None)
    return bool((np.diff(offsets) < array.itemsize).any())


def _may_share_elements(array) -> bool:
    """Whether two elements of ``array`` may be the same memory: False when, taking the axes
    by stride, each one's stride clears all that the smaller ones span (as every layout
    that slicing and transposing a fresh array give). A write into such an array would
    leave one of the values written to a shared element."""
    span = array.itemsize
    axes = zip(array.strides, array.shape, strict=True)
    for stride, size in sorted((abs(stride), size) for stride, size in axes if size > 1):
        if stride < span:
            return array.size > 0
        span += stride * (size - 1)
    return False


def refuse_masked(x, name: str) -> None:
    """TypeError for a masked array, whose mask the kernels would ignore."""
    if isinstance(x, np.ma.MaskedArray):
        raise TypeError(
            f"{name} is a masked array, whose mask fastloss would ignore: give a plain "
            f"ndarray (for example {name}.filled(value))"
        )


class HostBackend(Backend):
    """numpy and numba: NumPy arrays, float16 computed in float32, NumPy scalar results."""

    host = True
    xp = np

    def asarray(self, x, name: str):
        """``x`` as a NumPy array without copying array inputs; device arrays are a TypeError."""
        if type(x) is np.ndarray:
            return x
        if type(x).__module__.split(".")[0] == "cupy" or hasattr(x, "__cuda_array_interface__"):
            raise TypeError(
                f"{name} is a {type(x).__module__}.{type(x).__name__} in GPU memory, but "
                f"backend={self.name!r} runs on the CPU: use backend='cuda' (or 'auto'), or "
                f"move it to the host with cupy.asnumpy({name}) / {name}.cpu()"
            )
        refuse_masked(x, name)
        try:
            return np.asarray(x)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(f"{name} must be an array, got {type(x).__name__}: {exc}") from exc

    def writable(self, out, name: str):
        """``out`` as a plain ndarray over the caller's memory (a subclass such as
        ``np.memmap`` or ``np.matrix`` is viewed as one: its own indexing would not write
        where the kernels write); anything but an ndarray would be a new array that the
        caller never sees."""
        if not isinstance(out, np.ndarray):
            raise TypeError(
                f"{name} must be a NumPy array to write into; got {type(out).__name__}"
            )
        refuse_masked(out, name)
        if not out.flags.writeable:
            raise ValueError(f"{name} must be writeable")
        return out if type(out) is np.ndarray else out.view(np.ndarray)

    def check_float(self, x, name: str) -> None:
        dtype = x.dtype
        if dtype not in _HOST_DTYPES and dtype.newbyteorder("=") not in _HOST_DTYPES:
            raise self._dtype_error(x, name, _HOST_NAMES)

    def compute_dtype(self, dtype, *others):
        """The dtype the kernel computes an input of ``dtype`` in (``others``: the dtypes of
        the other arrays it reads, converted to it): native byte order; float16 (either
        byte order) is computed in float32 and rounded once."""
        native = dtype if dtype.isnative else dtype.newbyteorder("=")
        return _FLOAT32 if native == _FLOAT16 else native

    def scope(self, array):
        return _NO_SCOPE

    def same_device(self, *arrays) -> None:
        pass

    def result(self, loss, dtype):
        """A backend's float64 loss (a Python float or NumPy float64) as a
        NumPy scalar of the caller's ``dtype``, rounded once."""
        if (_UNIT_ROUNDS and type(loss) is float and dtype in _UNITS
                and -_FLOAT32_MAX <= loss <= _FLOAT32_MAX):
            return _UNITS[dtype] * loss
        # Past the dtype's range: inf, as in PyTorch; below its smallest subnormal: 0.
        with np.errstate(over="ignore", under="ignore"):
            return dtype.type(loss)


class CudaBackend(Backend):
    """cuda: CuPy arrays (any CUDA array, viewed), halves native, 0-d device results."""

    host = False

    @property
    def xp(self):
        import cupy  # the current module: the host emulator swaps it in tests

        return cupy

    def asarray(self, x, name: str):
        from fastloss.backends.cuda._arrays import as_device_array

        return as_device_array(x, name)

    def writable(self, out, name: str):
        return self.asarray(out, name)

    def check_float(self, x, name: str) -> None:
        if dtype_name(x.dtype) not in DEVICE_DTYPE_NAMES:
            raise self._dtype_error(x, name, DEVICE_DTYPE_NAMES)

    def compute_dtype(self, dtype, *others):
        """``dtype``: the kernels read halves natively. A half input whose other arrays
        (``others``' dtypes: a target, weights, of any real dtype) are of another dtype is
        computed by the float32 kernels, as the CPU computes float16: converted to the half
        dtype, a float32 target (or an integer weight past 2048) would lose all but 11
        (float16) or 8 (bfloat16) bits first."""
        if dtype_name(dtype) in _HALF_NAMES and any(other != dtype for other in others):
            return _FLOAT32
        return dtype

    def scope(self, array):
        """The input's GPU: allocations and launches happen there; under CUDA graph capture
        the call's memory is kept for the graph's replays (``cuda._arrays.device_scope``)."""
        from fastloss.backends.cuda._arrays import device_scope

        return device_scope(array.device)

    def same_device(self, *arrays) -> None:
        """Arrays on different GPUs are a ValueError."""
        from fastloss.backends.cuda._arrays import check_same_device

        check_same_device(*arrays)

    def result(self, loss, dtype):
        """A 0-d device array written by the last kernel, of ``dtype`` but where a half input
        was computed in float32 (:meth:`compute_dtype`): then rounded to ``dtype`` from
        float32, where the half kernels round the float64 total once."""
        return loss if loss.dtype == dtype else loss.astype(dtype)
