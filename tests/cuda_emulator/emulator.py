"""Runs fastloss's cuda backend on the CPU: its launchers, the real ``kernels/``, host memory.

:func:`activate` swaps two things under the cuda backend: ``import cupy``
gives the NumPy-backed stand-in of :mod:`device`, and ``RawModule`` compiles
``kernels/<name>.cu`` with g++ (:mod:`build`) instead of NVRTC. Everything
else (``fastloss.mse(..., backend="cuda")``, the launchers' geometry and
argument packing, ``finish``, ``mean_divisor``, ``check_labels``, ``out=``)
runs as it would on a GPU.

Every launch checks its arguments against the entry's ``extern "C"``
signature, type by type: a Python int or float, a NumPy scalar of another
width, an array of the wrong dtype or a wrong argument count raises
:class:`LaunchError`. So does anything the runtime finds inside the kernel:
a divergent barrier or warp operation, a deadlock, an access outside the
launch's buffers or misaligned, a shared-memory race. A launch made while the
current stream captures is recorded into its graph (see :mod:`device`); a
replay on memory freed since the capture raises :class:`LaunchError` too.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import weakref
from dataclasses import dataclass, field

import numpy as np

from . import build, device

_ERROR_SIZE = 2048
# Loads and stores one launch may make before it is declared a runaway loop.
ACCESS_LIMIT = 2_000_000_000


class LaunchError(AssertionError):
    """A launch that would be wrong, undefined or stuck on a GPU."""


_CTYPES = {
    "int64": ctypes.c_longlong, "uint64": ctypes.c_ulonglong, "int32": ctypes.c_int,
    "uint32": ctypes.c_uint, "float64": ctypes.c_double, "float32": ctypes.c_float,
    "bool": ctypes.c_bool,
}


_TRAFFIC = ("loaded", "stored", "read", "written")


@dataclass
class Launch:
    """One emulated launch: entry, geometry, and the global traffic of each pointer argument.

    ``loaded``/``stored``: bytes moved by the kernel's load and store
    instructions (a value read twice counts twice). ``read``/``written``: the
    32-byte sectors each warp access touches, as the memory system sees them
    (a warp's 32 lanes reading one value cost one sector; lanes reading every
    fourth float cost four times the bytes they use).
    """

    entry: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    args: dict[str, object]
    loaded: dict[str, int] = field(default_factory=dict)
    stored: dict[str, int] = field(default_factory=dict)
    read: dict[str, int] = field(default_factory=dict)
    written: dict[str, int] = field(default_factory=dict)


class Recorder:
    """Collects the launches made while it is active (see :func:`recording`)."""

    def __init__(self, count_traffic: bool):
        self.count_traffic = count_traffic
        self.launches: list[Launch] = []


_recorders: list[Recorder] = []


@contextlib.contextmanager
def recording(count_traffic: bool = False):
    """Yields a :class:`Recorder` of every launch in the block (with traffic when asked)."""
    recorder = Recorder(count_traffic)
    _recorders.append(recorder)
    try:
        yield recorder
    finally:
        _recorders.remove(recorder)


def _dim3(value) -> tuple[int, int, int]:
    values = tuple(int(v) for v in (value if isinstance(value, tuple) else (value,)))
    if not 1 <= len(values) <= 3 or any(v < 1 for v in values):
        raise LaunchError(f"grid and block dimensions must be 1 to 3 positive ints; got {value}")
    return values + (1,) * (3 - len(values))


class Kernel:
    """One ``extern "C"`` entry, callable as CuPy's ``RawKernel``: ``kernel(grid, block, args)``."""

    def __init__(self, library: ctypes.CDLL, entry: build.Entry, trampoline: int):
        self.library = library
        self.entry = entry
        self.trampoline = trampoline

    def _pack(self, args) -> tuple[list, list[tuple[str, np.ndarray]]]:
        params = self.entry.params
        if not isinstance(args, tuple):
            raise LaunchError(f"{self.entry.name}: args must be a tuple, got {type(args).__name__}")
        if len(args) != len(params):
            raise LaunchError(
                f"{self.entry.name} takes {len(params)} arguments, the launcher passed {len(args)}"
            )
        storage, arrays = [], []
        for index, (param, arg) in enumerate(zip(params, args, strict=True)):
            where = f"{self.entry.name} argument {index} ({param.ctype} {param.name})"
            if param.pointer:
                if isinstance(arg, np.uint64) and int(arg) == 0:
                    storage.append(ctypes.c_void_p(0))
                    continue
                if not isinstance(arg, device.ndarray):
                    raise LaunchError(f"{where}: got {type(arg).__name__}, not a device array")
                if arg.dtype.name != param.dtype:
                    raise LaunchError(f"{where}: got an array of {arg.dtype}, not {param.dtype}")
                storage.append(ctypes.c_void_p(arg.__array_interface__["data"][0]))
                arrays.append((param.name, arg))
                continue
            if not isinstance(arg, np.generic):
                raise LaunchError(
                    f"{where}: got a Python {type(arg).__name__}; pass np.{param.dtype} so "
                    "that its width is the kernel's"
                )
            if arg.dtype.name != param.dtype:
                raise LaunchError(f"{where}: got np.{arg.dtype.name}, not np.{param.dtype}")
            storage.append(_CTYPES[param.dtype](arg.item()))
        return storage, arrays

    def __call__(self, grid, block, args, *, shared_mem: int = 0, stream=None):
        grid, block = _dim3(grid), _dim3(block)
        if shared_mem:
            raise LaunchError("dynamic shared memory is not emulated")
        storage, arrays = self._pack(args)
        spans = [device.allocation_span(array) for _, array in arrays]
        capturing = device.current_stream()
        if capturing.is_capturing():
            # A graph holds addresses, not arrays: what the call frees, a replay must not use.
            memory = [(name, weakref.ref(allocation)) for name, array in arrays
                      if (allocation := device.allocation_of(array)) is not None]
            capturing.graph.launches.append(
                lambda: self._replay(grid, block, storage, spans, memory))
            return
        counts = self._run(grid, block, storage, spans, any(r.count_traffic for r in _recorders))
        if _recorders:
            launch = Launch(self.entry.name, grid, block,
                            {p.name: a for p, a in zip(self.entry.params, args, strict=True)})
            if counts is not None:
                for index, (name, _) in enumerate(arrays):
                    for column, kind in enumerate(_TRAFFIC):
                        table = getattr(launch, kind)
                        table[name] = table.get(name, 0) + counts[4 * index + column]
            for recorder in _recorders:
                recorder.launches.append(launch)

    def _run(self, grid, block, storage, spans, count: bool):
        """Runs the launch; its traffic counts (4 per span) when ``count``, else None."""
        pointers = (ctypes.c_void_p * len(storage))(
            *[ctypes.cast(ctypes.pointer(s), ctypes.c_void_p) for s in storage]
        )
        flat = (ctypes.c_ulonglong * (2 * len(spans)))(*[x for span in spans for x in span])
        counts = (ctypes.c_ulonglong * (4 * len(spans)))() if count else None
        error = ctypes.create_string_buffer(_ERROR_SIZE)
        status = self.library.fl_emu_launch(
            self.trampoline, pointers, (ctypes.c_uint * 3)(*grid), (ctypes.c_uint * 3)(*block),
            flat, len(spans), counts, ACCESS_LIMIT, error, _ERROR_SIZE,
        )
        if status != 0:
            raise LaunchError(f"{self.entry.name}<<<{grid}, {block}>>>: {error.value.decode()}")
        return counts

    def _replay(self, grid, block, storage, spans, memory) -> None:
        """A captured launch, run by its graph (not seen by recorders)."""
        for name, allocation in memory:
            if allocation() is None:
                raise LaunchError(
                    f"{self.entry.name}: a graph replay would use {name}, whose memory was "
                    "freed after the capture (another allocation may own it by now)"
                )
        self._run(grid, block, storage, spans, False)


class Module:
    """``cupy.RawModule`` for a kernel file, built for the host."""

    def __init__(self, code: str, options=(), backend: str = "nvrtc"):
        built = build.build(_file_name(code), variant())
        self.library = ctypes.CDLL(str(built.library))
        self.library.fl_emu_launch.restype = ctypes.c_int
        self.library.fl_emu_launch.argtypes = [
            ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
            ctypes.c_int, ctypes.c_void_p, ctypes.c_ulonglong, ctypes.c_char_p, ctypes.c_int,
        ]
        table = (_EntryRecord * (len(built.entries) + 1)).in_dll(self.library, "fl_emu_entries")
        addresses = {record.name.decode(): record.call for record in table if record.name}
        self.kernels = {e.name: Kernel(self.library, e, addresses[e.name]) for e in built.entries}

    def get_function(self, name: str) -> Kernel:
        if name not in self.kernels:
            raise LaunchError(f'no extern "C" entry {name!r}; the file has {sorted(self.kernels)}')
        return self.kernels[name]


class _EntryRecord(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("call", ctypes.c_void_p)]


def _file_name(code: str) -> str:
    """Which ``kernels/*.cu`` a RawModule's source text is (the launchers pass the text)."""
    from fastloss.backends.cuda import _module

    for path in sorted(_module.kernels_dir().glob("*.cu")):
        if path.read_text(encoding="utf-8") == code:
            return path.stem
    head = re.sub(r"\s+", " ", (code or "")[:80])
    raise LaunchError(f"RawModule source is not one of kernels/*.cu: {head!r}...")


def variant() -> str:
    """The build in use: FASTLOSS_EMULATOR_VARIANT, default "checked" (see :mod:`build`)."""
    return os.environ.get("FASTLOSS_EMULATOR_VARIANT", "checked")


@contextlib.contextmanager
def activate():
    """Within the block, ``backend="cuda"`` runs on the emulator."""
    from fastloss import _registry
    from fastloss.backends.cuda import _arrays, _module

    def clear_caches():
        _module._raw_module.cache_clear()
        _module._kernel.cache_clear()
        _registry.backend_status.cache_clear()

    saved = _arrays.available
    clear_caches()
    _arrays.available = lambda: (True, f"host emulator ({variant()} build of kernels/)")
    try:
        with device.installed(device.module(Module)) as cupy:
            yield cupy
    finally:
        _arrays.available = saved
        clear_caches()
