"""Finds ``kernels/`` and compiles each kernel file with NVRTC once per process.

A source checkout has the kernels at the repository root, next to the
``fastloss`` package. A wheel installs them as data files under
``<prefix>/share/fastloss/kernels`` (pyproject's ``data-files``), which is
found by walking up from the installed package. CuPy's on-disk cache keys on
the source text and the options but not on ``#include``d headers, so a hash of
every file under ``kernels/`` goes into the options: editing a header
recompiles.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
import sysconfig
import threading
from pathlib import Path

from fastloss._backend import DEVICE_DTYPE_NAMES
from fastloss._validate import dtype_name

_PACKAGE_DIR = Path(__file__).resolve().parents[2]  # .../fastloss
_ENV_DIR = "FASTLOSS_KERNELS_DIR"
_DATA_SUBDIR = Path("share", "fastloss", "kernels")
_KERNEL_SUFFIXES = (".cu", ".cuh")
_lock = threading.Lock()


def _candidates() -> list[Path]:
    found = []
    if os.environ.get(_ENV_DIR):
        found.append(Path(os.environ[_ENV_DIR]))
    checkout = _PACKAGE_DIR.parent
    if (checkout / "pyproject.toml").is_file():
        found.append(checkout / "kernels")
    # site-packages -> pythonX.Y -> lib -> prefix (POSIX), Lib -> prefix
    # (Windows), or the --target directory itself.
    found += [ancestor / _DATA_SUBDIR for ancestor in _PACKAGE_DIR.parents]
    found += [Path(sysconfig.get_path("data")) / _DATA_SUBDIR, Path(sys.prefix) / _DATA_SUBDIR]
    return found


def kernels_dir() -> Path:
    """The directory holding ``mse.cu``, ``softmax_cross_entropy.cu`` and ``common/``.

    ``$FASTLOSS_KERNELS_DIR`` wins when set; then a source checkout's
    ``kernels/``; then the installed data files.
    """
    candidates = _candidates()
    for candidate in candidates:
        if (candidate / "common" / "reduce.cuh").is_file() and (candidate / "mse.cu").is_file():
            return candidate
    raise FileNotFoundError(
        "fastloss CUDA kernels not found; looked in "
        + ", ".join(str(c) for c in candidates)
        + " (reinstall fastloss, or set FASTLOSS_KERNELS_DIR)"
    )


def kernel_files(directory: Path | None = None) -> list[Path]:
    """Every kernel source and header under ``directory``, in a stable order."""
    directory = directory or kernels_dir()
    return sorted(
        (p for p in directory.rglob("*") if p.is_file() and p.suffix in _KERNEL_SUFFIXES),
        key=lambda p: p.relative_to(directory).as_posix(),
    )


@functools.cache
def kernels_hash() -> str:
    """A short digest of the names and contents of all kernel files."""
    return directory_digest(kernels_dir())


def directory_digest(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in kernel_files(directory):
        digest.update(path.relative_to(directory).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def compile_options() -> tuple[str, ...]:
    """NVRTC options shared by the runtime build and the compile tests.

    No fast-math: the kernels' reductions rely on exact IEEE rounding. CuPy
    appends ``-ftz=true`` itself (and the last ``-ftz`` wins), so float32
    arithmetic flushes subnormals to zero; the half/bfloat16 conversions are
    written in PTX without ``.ftz`` and are not affected.
    """
    return (
        "-std=c++17",
        f"-I{kernels_dir()}",
        f"-DFL_KERNELS_HASH=0x{kernels_hash()}",
    )


def kernel_source(name: str) -> str:
    """The text of ``kernels/<name>.cu``."""
    return (kernels_dir() / f"{name}.cu").read_text(encoding="utf-8")


@functools.cache
def _raw_module(name: str):
    import cupy

    return cupy.RawModule(code=kernel_source(name), options=compile_options(), backend="nvrtc")


def get_function(name: str, entry: str):
    """The ``extern "C"`` kernel ``entry`` of ``kernels/<name>.cu`` as a CuPy RawKernel.

    The module is compiled on first use (per device, by CuPy) and served from
    CuPy's kernel cache afterwards.
    """
    with _lock:
        return _kernel(name, entry)


@functools.cache
def _kernel(name: str, entry: str):
    return _raw_module(name).get_function(entry)


# Launch constants shared with the kernels (FL_SUM_THREADS in kernels/common/reduce.cuh).
SUM_THREADS = 256


def null_pointer():
    """A NULL for an optional pointer argument (CuPy packs it as 8 zero bytes)."""
    import numpy as np

    return np.uint64(0)


def pointer_or_null(array):
    return null_pointer() if array is None else array


def expect(array, name: str, shape, dtype) -> None:
    """The front's guarantees for an optional kernel argument: shape, dtype,
    C order. A failure here is a bug in fastloss, not in the caller."""
    if array is not None:
        assert array.shape == shape and array.dtype == dtype, (name, array.shape, array.dtype)
        assert array.flags.c_contiguous, (name, "not C-contiguous")


def divisor_args(divisor):
    """``(host value, device pointer)`` kernel arguments for a divisor: a Python
    number, or a 0-d float64 device array that the kernel reads itself."""
    import cupy
    import numpy as np

    if isinstance(divisor, cupy.ndarray):
        assert divisor.shape == () and divisor.dtype == np.float64, (divisor.shape, divisor.dtype)
        return np.float64(0.0), divisor
    return np.float64(divisor), null_pointer()


def entry(function: str, dtype) -> str:
    """The name of ``function``'s instance for ``dtype``, ``fl_<function>_<dtype>`` (asserting
    that the kernels are instantiated for it)."""
    name = dtype_name(dtype)
    assert name in DEVICE_DTYPE_NAMES, dtype
    return f"fl_{function}_{name}"


def finish(name: str, partials, count: int, divisor, dtype):
    """The loss ``sum(partials[:count]) / divisor`` as a new 0-d array of ``dtype``.

    The partials are summed in a fixed order in float64 and the quotient
    rounded once, by one kernel on the current stream; no host synchronisation.
    """
    import cupy
    import numpy as np

    loss = cupy.empty((), dtype=dtype)
    get_function(name, entry(f"{name}_finish", dtype))(
        (1,), (SUM_THREADS,), (partials, np.int64(count), *divisor_args(divisor), loss)
    )
    return loss
