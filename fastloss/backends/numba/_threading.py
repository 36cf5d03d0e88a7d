"""Numba's threading layer: one that survives ``fork()`` and calls from several Python threads.

Numba's default layer on Linux is GNU OpenMP, whose runtime aborts a child
forked after the parent used it (``multiprocessing``'s "fork", PyTorch
DataLoader workers, gunicorn). Intel TBB is both fork-safe and thread-safe,
and fastloss depends on its wheel where PyPI has one (x86-64). The wheel puts
``libtbb`` in ``<prefix>/lib``, off the loader's path, so it is loaded here
before Numba looks for it.

Where TBB cannot load, or the process may run on one CPU only, the layer is
``workqueue``: fork-safe, but it aborts when two Python threads launch kernels at
once, so :func:`serialised` gives the threaded kernels a lock. On one CPU TBB starts
no worker thread, and a process that launched a threaded kernel from a second Python
thread, or forked after one, waited at exit forever (oneTBB issue 2056). A layer the
user chose (``NUMBA_THREADING_LAYER``, or ``numba.config.THREADING_LAYER`` set
before fastloss's first call) is kept, as is the one already running if Numba has
started its threads; a layer set later, before the first threaded call, still gets
the lock if it needs one.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.metadata
import os
import threading

import numba
from numba.np.ufunc import parallel as _numba_parallel

# Layers that take concurrent launches from several Python threads.
_THREAD_SAFE = ("tbb", "omp", "safe", "threadsafe")
_TBB_LIBRARIES = ("libtbb.so.12", "libtbb.12.dylib", "tbb12.dll")


def _load_tbb() -> bool:
    """Loads the tbb wheel's library for Numba's TBB layer; whether that layer can now load."""
    try:
        files = importlib.metadata.files("tbb") or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.name in _TBB_LIBRARIES:
            try:
                ctypes.CDLL(str(file.locate()), mode=ctypes.RTLD_GLOBAL)
            except OSError:
                continue
            break
    try:
        from numba.np.ufunc import tbbpool  # noqa: F401
    except ImportError:
        return False
    return True


def _one_cpu() -> bool:
    """Whether this process may run on one CPU only (its affinity, where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) == 1
    return os.cpu_count() == 1


def _choose() -> str:
    """Sets Numba's layer unless chosen or running already; returns the layer's name.
    TBB's library is loaded for a chosen layer too, which may be TBB."""
    if _numba_parallel._is_initialized:
        return numba.threading_layer()
    tbb = _load_tbb()
    if numba.config.THREADING_LAYER == "default":
        numba.config.THREADING_LAYER = "tbb" if tbb and not _one_cpu() else "workqueue"
    return numba.config.THREADING_LAYER


_choose()
_launch_lock = threading.Lock()


def _thread_safe() -> bool:
    """Whether the layer that runs the threaded kernels, or will at their first launch,
    takes launches from several Python threads at once."""
    if _numba_parallel._is_initialized:
        return numba.threading_layer() in _THREAD_SAFE
    return numba.config.THREADING_LAYER in _THREAD_SAFE


def serialised(kernel):
    """``kernel`` (a threaded Numba kernel), behind a lock while the layer is not
    thread-safe (decided at each launch: the layer may be set after the kernel is made)."""

    @functools.wraps(kernel.py_func)
    def launch(*args):
        if _thread_safe():
            return kernel(*args)
        with _launch_lock:
            return kernel(*args)

    return launch
