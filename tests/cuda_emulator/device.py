"""Host memory posing as device memory: the few CuPy calls fastloss makes, on NumPy.

``ndarray`` is a NumPy subclass whose module is ``cupy``, so that fastloss's
dispatch sees a device array; its buffers come from ``posix_memalign`` with
CUDA's 256-byte alignment and their exact size, so that the sanitizer builds
put their red zones right at the end of each buffer, through the current
allocator (``cupy.cuda.using_allocator``). Everything else is NumPy's own
behaviour.

Streams capture as CuPy's do (``begin_capture``, ``end_capture``, ``Graph.launch``),
for kernel launches only: the emulator's ``Kernel`` records a launch made while the
current stream captures, and a replay refuses to run on memory freed since. Other
operations (copies, conversions) run at once, as if captured and replayed first. A
read of device values on the host (``get``, ``float``, ``bool``, ...) while the stream
captures raises, as the synchronisation would fail the capture on a GPU.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
import threading
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


class MemoryAsync:
    """``cupy.cuda.MemoryAsync``: the ``mem`` of a stream-ordered block (``malloc_async``)."""


class _StreamOrdered(Allocation):
    """A block of ``malloc_async``: an :class:`Allocation` whose ``mem`` says how it was
    allocated (the emulator frees it as any other)."""

    def __init__(self, nbytes: int):
        super().__init__(nbytes)
        self.mem = MemoryAsync()


def malloc_async(nbytes: int) -> Allocation:
    """``cupy.cuda.malloc_async``."""
    return _StreamOrdered(nbytes)


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
        _read_on_the_host("get()")
        return np.array(self.view(np.ndarray))

    # CuPy's other reads of device values on the host, each a synchronisation.
    def item(self, *args):
        _read_on_the_host("item()")
        return super().item(*args)

    def tolist(self):
        _read_on_the_host("tolist()")
        return super().tolist()

    def __float__(self):
        _read_on_the_host("float()")
        return super().__float__()

    def __int__(self):
        _read_on_the_host("int()")
        return super().__int__()

    def __bool__(self):
        _read_on_the_host("bool()")
        return super().__bool__()

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


def _root(array: np.ndarray):
    while isinstance(array, np.ndarray) and isinstance(array.base, np.ndarray):
        array = array.base
    return array


def allocation_of(array: np.ndarray) -> Allocation | None:
    """The :class:`Allocation` that ``array`` views (None for host memory)."""
    root = _root(array)
    return root.base if isinstance(root, np.ndarray) and isinstance(root.base, Allocation) else None


def allocation_span(array: np.ndarray) -> tuple[int, int]:
    """``[begin, end)`` of the memory block that ``array`` views."""
    allocation = allocation_of(array)
    if allocation is not None:
        return allocation.address, allocation.address + allocation.nbytes
    root = _root(array)
    begin = root.__array_interface__["data"][0]
    return begin, begin + root.nbytes


_thread = threading.local()  # as CuPy's, the current allocator and stream are per thread


def _stack(name: str) -> list:
    """This thread's stack ``name`` (``using_allocator``'s allocators, ``with stream:``'s
    streams), innermost last."""
    if not hasattr(_thread, name):
        setattr(_thread, name, [])
    return getattr(_thread, name)


def get_allocator():
    """``cupy.cuda.get_allocator``: a function of a byte count to an :class:`Allocation`."""
    allocators = _stack("allocators")
    return allocators[-1] if allocators else Allocation


@contextlib.contextmanager
def using_allocator(allocator):
    """``cupy.cuda.using_allocator`` (None, CuPy's raw allocator, is not emulated)."""
    _stack("allocators").append(allocator)
    try:
        yield
    finally:
        _stack("allocators").pop()


def empty(shape, dtype=np.float64, order="C") -> ndarray:
    dtype = np.dtype(dtype)
    shape = (shape,) if np.isscalar(shape) else tuple(shape)
    count = int(np.prod(shape, dtype=np.int64))
    raw = np.asarray(get_allocator()(count * dtype.itemsize))
    flat = raw.view(dtype) if count else np.empty(0, dtype)
    return flat.reshape(shape, order=order).view(ndarray)


def zeros(shape, dtype=np.float64, order="C") -> ndarray:
    result = empty(shape, dtype, order)
    result.view(np.ndarray)[...] = 0
    return result


def zeros_like(array) -> ndarray:
    return zeros(array.shape, array.dtype, "F" if _fortran(array, "K") else "C")


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
    if isinstance(obj, ndarray):
        _read_on_the_host("asnumpy()")
    return np.array(np.asarray(obj).view(np.ndarray) if isinstance(obj, np.ndarray) else obj)


def module(raw_module_type) -> types.ModuleType:
    """A ``cupy`` module over this file's arrays; ``raw_module_type`` stands in for RawModule."""
    cupy = types.ModuleType("cupy")
    cupy.__version__ = "emulated"
    cupy.ndarray = ndarray
    cupy.empty, cupy.zeros, cupy.zeros_like, cupy.asarray = empty, zeros, zeros_like, asarray
    cupy.ascontiguousarray, cupy.asnumpy = ascontiguousarray, asnumpy
    cupy.may_share_memory = np.may_share_memory
    cupy.where = lambda c, a, b: asarray(np.where(np.asarray(c), a, b))
    cupy.is_available = lambda: True
    cupy.RawModule = raw_module_type
    for name in ("float16", "float32", "float64", "int32", "int64", "uint64", "bool_"):
        setattr(cupy, name, getattr(np, name))
    cuda = types.SimpleNamespace(
        Device=Device,
        Stream=Stream,
        get_current_stream=current_stream,
        get_allocator=get_allocator,
        using_allocator=using_allocator,
        malloc_async=malloc_async,
        MemoryAsync=MemoryAsync,
        runtime=types.SimpleNamespace(getDeviceProperties=lambda i: {"name": "host emulator"}),
    )
    cupy.cuda = cuda
    return cupy


class Graph:
    """``cupy.cuda.graph.Graph``: the launches a stream captured, run again by :meth:`launch`."""

    def __init__(self):
        self.launches: list = []  # callables, each replaying one captured launch

    def launch(self, stream=None) -> None:
        for replay in self.launches:
            replay()


class Stream:
    """``cupy.cuda.Stream``. Launches run synchronously on the host, so every stream is
    already synchronised; between ``begin_capture`` and ``end_capture`` they are recorded
    into a :class:`Graph` instead (see the module's text)."""

    def __init__(self, *args, **kwargs):
        self.graph: Graph | None = None

    def __enter__(self):
        _stack("streams").append(self)
        return self

    def __exit__(self, *exc):
        _stack("streams").pop()
        return False

    def synchronize(self) -> None:
        pass

    def is_capturing(self) -> bool:
        return self.graph is not None

    def begin_capture(self, mode=None) -> None:
        if self.graph is not None:
            raise RuntimeError("the stream is capturing already")
        self.graph = Graph()

    def end_capture(self) -> Graph:
        if self.graph is None:
            raise RuntimeError("the stream is not capturing")
        graph, self.graph = self.graph, None
        return graph


_null_stream = Stream()


def current_stream(device_id: int = -1) -> Stream:
    """``cupy.cuda.get_current_stream``."""
    streams = _stack("streams")
    return streams[-1] if streams else _null_stream


def _read_on_the_host(what: str) -> None:
    """Refuses a host read of device memory while the current stream captures: on a GPU it
    synchronises, which ends the capture in an error."""
    if current_stream().is_capturing():
        raise RuntimeError(f"{what} of a device array while the stream captures a graph: a "
                           "host synchronisation, which fails a CUDA graph capture")


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
