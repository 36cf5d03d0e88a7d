"""Host memory posing as device memory: the few CuPy calls fastloss makes, on NumPy.

``ndarray`` is a NumPy subclass whose module is ``cupy``, so that fastloss's
dispatch sees a device array; its buffers come from ``posix_memalign`` with
CUDA's 256-byte alignment and their exact size, so that the sanitizer builds
put their red zones right at the end of each buffer. Everything else is
NumPy's own behaviour.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
import types
import weakref

import numpy as np

_ALIGNMENT = 256
_libc = ctypes.CDLL(None)
_libc.posix_memalign.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t,
                                 ctypes.c_size_t]
_libc.free.argtypes = [ctypes.c_void_p]


class Allocation:
    """``nbytes`` of memory from posix_memalign, freed with the last array that views it."""

    def __init__(self, nbytes: int):
        pointer = ctypes.c_void_p()
        # A zero-size allocation still gets a unique address (one byte that no
        # kernel may touch: the launch registers a buffer of size 0).
        if _libc.posix_memalign(ctypes.byref(pointer), _ALIGNMENT, max(nbytes, 1)) != 0:
            raise MemoryError(f"cannot allocate {nbytes} bytes")
        self.address = pointer.value
        self.nbytes = nbytes
        weakref.finalize(self, _libc.free, pointer.value)
        self.__array_interface__ = {
            "shape": (nbytes,), "typestr": "|u1", "data": (self.address, False), "version": 3,
        }


class Device:
    """``cupy.cuda.Device``: one device, id 0; a no-op context manager."""

    id = 0

    def __init__(self, device_id: int = 0):
        if device_id != 0:
            raise ValueError(f"the emulator has one device; got {device_id}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def synchronize(self) -> None:
        pass

    @property
    def mem_info(self) -> tuple[int, int]:
        return (8 << 30, 8 << 30)


class ndarray(np.ndarray):  # noqa: N801 - CuPy's name
    """A NumPy array in emulated device memory."""

    __module__ = "cupy"

    @property
    def device(self) -> Device:
        return Device()

    def get(self) -> np.ndarray:
        return np.array(self.view(np.ndarray))

    def astype(self, dtype, order="K", casting="unsafe", subok=True, copy=True):
        dtype = np.dtype(dtype)
        if not copy and dtype == self.dtype:
            return self
        result = empty(self.shape, dtype, order="F" if _fortran(self, order) else "C")
        np.copyto(result.view(np.ndarray), self.view(np.ndarray), casting=casting)
        return result

    def copy(self, order="C"):
        return self.astype(self.dtype, order=order, copy=True)


def _fortran(array: np.ndarray, order: str) -> bool:
    if order == "F":
        return True
    return order in ("K", "A") and array.flags.f_contiguous and not array.flags.c_contiguous


def allocation_span(array: np.ndarray) -> tuple[int, int]:
    """``[begin, end)`` of the memory block that ``array`` views."""
    root = array
    while isinstance(root, np.ndarray) and isinstance(root.base, np.ndarray):
        root = root.base
    if isinstance(root, np.ndarray) and isinstance(root.base, Allocation):
        return root.base.address, root.base.address + root.base.nbytes
    begin = root.__array_interface__["data"][0]
    return begin, begin + root.nbytes


def empty(shape, dtype=np.float64, order="C") -> ndarray:
    dtype = np.dtype(dtype)
    shape = (shape,) if np.isscalar(shape) else tuple(shape)
    count = int(np.prod(shape, dtype=np.int64))
    raw = np.asarray(Allocation(count * dtype.itemsize))
    flat = raw.view(dtype) if count else np.empty(0, dtype)
    return flat.reshape(shape, order=order).view(ndarray)


def zeros(shape, dtype=np.float64, order="C") -> ndarray:
    result = empty(shape, dtype, order)
    result.view(np.ndarray)[...] = 0
    return result


def asarray(obj, dtype=None, order=None) -> ndarray:
    if isinstance(obj, ndarray) and (dtype is None or np.dtype(dtype) == obj.dtype):
        return obj
    host = np.asarray(obj, dtype=dtype)
    fortran = order == "F" or (order in (None, "K", "A") and _fortran(host, "K"))
    result = empty(host.shape, host.dtype, order="F" if fortran else "C")
    np.copyto(result.view(np.ndarray), host)
    return result


def ascontiguousarray(obj, dtype=None) -> ndarray:
    array = asarray(obj, dtype)
    if array.flags.c_contiguous and array.ndim > 0:
        return array
    result = empty(array.shape, array.dtype)
    np.copyto(result.view(np.ndarray), array.view(np.ndarray))
    return result


def asnumpy(obj) -> np.ndarray:
    return np.array(np.asarray(obj).view(np.ndarray) if isinstance(obj, np.ndarray) else obj)


def module(raw_module_type) -> types.ModuleType:
    """A ``cupy`` module over this file's arrays; ``raw_module_type`` stands in for RawModule."""
    cupy = types.ModuleType("cupy")
    cupy.__version__ = "emulated"
    cupy.ndarray = ndarray
    cupy.empty, cupy.zeros, cupy.asarray = empty, zeros, asarray
    cupy.ascontiguousarray, cupy.asnumpy = ascontiguousarray, asnumpy
    cupy.may_share_memory = np.may_share_memory
    cupy.where = lambda c, a, b: asarray(np.where(np.asarray(c), a, b))
    cupy.is_available = lambda: True
    cupy.RawModule = raw_module_type
    for name in ("float16", "float32", "float64", "int32", "int64", "uint64", "bool_"):
        setattr(cupy, name, getattr(np, name))
    cuda = types.SimpleNamespace(
        Device=Device,
        Stream=_Stream,
        runtime=types.SimpleNamespace(getDeviceProperties=lambda i: {"name": "host emulator"}),
    )
    cupy.cuda = cuda
    return cupy


class _Stream:
    """Launches run synchronously on the host: every stream is already synchronised."""

    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def synchronize(self) -> None:
        pass


@contextlib.contextmanager
def installed(cupy: types.ModuleType):
    """``import cupy`` gives ``cupy`` inside the block."""
    previous = sys.modules.get("cupy")
    sys.modules["cupy"] = cupy
    try:
        yield cupy
    finally:
        if previous is None:
            sys.modules.pop("cupy", None)
        else:
            sys.modules["cupy"] = previous
