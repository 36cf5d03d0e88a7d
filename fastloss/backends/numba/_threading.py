"""Numba's threading layer: one that survives ``fork()`` and calls from several Python threads.

Numba's default layer on Linux is GNU OpenMP, whose runtime aborts a child
forked after the parent used it (``multiprocessing``'s "fork", PyTorch
DataLoader workers, gunicorn). Intel TBB is both fork-safe and thread-safe,
and fastloss depends on its wheel where PyPI has one (x86-64). The wheel puts
``libtbb`` in ``<prefix>/lib``, off the loader's path, so it is loaded here
before Numba looks for it.

Where TBB cannot load, or the process may run on one CPU only (affinity or cgroup
quota), the layer is ``workqueue``: fork-safe, but it aborts when two Python threads
launch kernels at once, so :func:`serialised` gives the threaded kernels a lock (made
anew in a forked child). On one CPU TBB starts no worker thread, and a process that
launched a threaded kernel from a second Python thread, or forked after one, waited at
exit forever (oneTBB issue 2056). A layer the user chose (``NUMBA_THREADING_LAYER``, or
``numba.config.THREADING_LAYER`` set before fastloss's first call) is kept, as is the
one already running if Numba has started its threads; a layer set later, before the
first threaded call, still gets the lock if it needs one.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.metadata
import math
import os
import threading
from pathlib import Path

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


def _quota_cpus(root: Path = Path("/sys/fs/cgroup"),
                own: Path = Path("/proc/self/cgroup")) -> float:
    """The CPUs that the CPU quotas of this process's cgroups allow (cgroup v2 ``cpu.max``,
    v1 ``cpu.cfs_quota_us`` over ``cpu.cfs_period_us``), the least from its own cgroup up to
    the root; inf where none is set or none can be read."""
    try:
        lines = own.read_text().splitlines()
    except OSError:
        return math.inf
    least = math.inf
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            mount, names = root, ("cpu.max",)
        elif "cpu" in controllers.split(","):
            mount, names = root / controllers, ("cpu.cfs_quota_us", "cpu.cfs_period_us")
        else:
            continue
        folder = mount / path.lstrip("/")
        for level in (folder, *folder.parents):
            if not level.is_relative_to(mount):
                break
            try:
                quota, period = " ".join((level / name).read_text() for name in names).split()
                if quota not in ("max", "-1"):
                    least = min(least, int(quota) / int(period))
            except (OSError, ValueError):
                continue
    return least


def _one_cpu() -> bool:
    """Whether this process may run on one CPU only: its affinity (where the OS has one) or
    its cgroups' CPU quota (below 2 CPUs, as in ``docker run --cpus=1``), which TBB heeds."""
    if hasattr(os, "sched_getaffinity"):
        cpus = len(os.sched_getaffinity(0))
    else:
        cpus = os.cpu_count() or 1
    return cpus == 1 or _quota_cpus() < 2


def _choose() -> None:
    """Sets Numba's layer unless chosen or running already. TBB's library is loaded for a
    chosen layer too, which may be TBB."""
    if _numba_parallel._is_initialized:
        return
    tbb = _load_tbb()
    if numba.config.THREADING_LAYER == "default":
        numba.config.THREADING_LAYER = "tbb" if tbb and not _one_cpu() else "workqueue"


def _new_launch_lock() -> None:
    """A fresh lock: a child forked while another thread held the lock would otherwise wait
    for it forever."""
    global _launch_lock
    _launch_lock = threading.Lock()


_choose()
_new_launch_lock()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_launch_lock)


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
