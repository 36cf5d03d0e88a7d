"""Device arrays for the cuda backend: zero-copy views, device checks, availability, and the
memory of a call captured into a CUDA graph.

CuPy 14 has a bfloat16 dtype only when the ``ml_dtypes`` package is
installed (it then maps DLPack's bfloat16 to ``ml_dtypes.bfloat16``);
without it, bfloat16 tensors are refused with a message saying so.
"""

from __future__ import annotations

import contextlib
import functools

_DLPACK_CUDA_DEVICES = (2, 13)  # kDLCUDA, kDLCUDAManaged
_DLPACK_HOST_DEVICES = (1, 3)  # kDLCPU, kDLCUDAHost


@functools.cache
def available() -> tuple[bool, str]:
    """``(True, versions)`` when CuPy, a CUDA device and NVRTC are usable, else ``(False, why)``."""
    try:
        import cupy
    except ImportError:
        return False, "cupy not installed (pip install 'fastloss[cuda]')"
    except Exception as exc:  # a broken CUDA install surfaces here as anything
        return False, f"cupy cannot be imported: {exc}"
    try:
        if not cupy.is_available():
            return False, "no CUDA device"
    except Exception as exc:
        return False, f"no CUDA device ({exc})"
    try:
        from cupy_backends.cuda.libs import nvrtc

        major, minor = nvrtc.getVersion()
    except Exception as exc:
        return False, f"NVRTC cannot be loaded ({exc}); pip install 'nvidia-cuda-nvrtc>=13,<14'"
    try:
        device = cupy.cuda.Device()
        name = cupy.cuda.runtime.getDeviceProperties(device.id)["name"]
        name = name.decode() if isinstance(name, bytes) else name
    except Exception:
        name = "CUDA device"
    return True, f"cupy {cupy.__version__}, NVRTC {major}.{minor}, {name}"


# Python values a caller may pass for an array: on the host, like NumPy's.
_PYTHON_VALUES = (list, tuple, int, float)


def _host_error(x, name: str) -> TypeError:
    if isinstance(x, _PYTHON_VALUES):
        kind = f"a Python {type(x).__name__} on the host"
    else:
        kind = f"a host array ({type(x).__module__}.{type(x).__qualname__})"
    return TypeError(
        f"{name} is {kind} but backend='cuda' needs GPU memory: move it with "
        f"cupy.asarray({name}) (NumPy) or {name}.cuda() (PyTorch), or use a CPU backend"
    )


def _bfloat16_missing(name: str) -> TypeError:
    return TypeError(
        f"{name} is bfloat16, which CuPy supports only with the ml_dtypes package installed "
        "(pip install ml_dtypes)"
    )


def _has_ml_dtypes() -> bool:
    try:
        import ml_dtypes  # noqa: F401
    except ImportError:
        return False
    return True


def _from_torch(x, name: str):
    import cupy

    if x.device.type != "cuda":
        raise _host_error(x, name)
    if str(x.dtype) == "torch.bfloat16" and not _has_ml_dtypes():
        raise _bfloat16_missing(name)
    # detach() is a view: DLPack refuses tensors that require grad, and the
    # kernels never take part in autograd themselves.
    return cupy.from_dlpack(x.detach())


def as_device_array(x, name: str):
    """``x`` as a ``cupy.ndarray`` sharing its memory (never a copy).

    Accepts CuPy arrays, PyTorch CUDA tensors (bfloat16 included when
    ``ml_dtypes`` is installed), objects with ``__cuda_array_interface__`` and
    DLPack producers on a CUDA device. Host arrays (NumPy, CPU tensors, lists)
    raise TypeError saying how to move them; so does anything else.
    """
    import cupy

    if isinstance(x, cupy.ndarray):
        return x
    module = type(x).__module__.split(".")[0]
    if module == "torch":
        return _from_torch(x, name)
    if hasattr(x, "__cuda_array_interface__"):
        return cupy.asarray(x)
    if hasattr(x, "__dlpack__") and hasattr(x, "__dlpack_device__"):
        device_type = int(x.__dlpack_device__()[0])
        if device_type in _DLPACK_CUDA_DEVICES:
            if str(getattr(x, "dtype", "")) == "bfloat16" and not _has_ml_dtypes():
                raise _bfloat16_missing(name)
            return cupy.from_dlpack(x)
        if device_type in _DLPACK_HOST_DEVICES:
            raise _host_error(x, name)
        raise TypeError(f"{name} lives on DLPack device type {device_type}, not a CUDA device")
    if module == "numpy" or hasattr(x, "__array__") or hasattr(x, "__array_interface__"):
        raise _host_error(x, name)
    if isinstance(x, _PYTHON_VALUES):
        raise _host_error(x, name)
    raise TypeError(
        f"{name} must be a CuPy array or a CUDA array (__cuda_array_interface__ or DLPack); "
        f"got {type(x).__module__}.{type(x).__qualname__}"
    )


def check_same_device(*arrays) -> int:
    """The device id shared by all given arrays (``None`` entries are skipped).

    Raises ValueError when they live on different devices.
    """
    devices = {}
    for index, array in enumerate(arrays):
        if array is not None:
            devices.setdefault(array.device.id, index)
    if len(devices) > 1:
        listing = ", ".join(f"argument {i} on cuda:{d}" for d, i in sorted(devices.items()))
        raise ValueError(f"arrays must be on one CUDA device; got {listing}")
    return next(iter(devices), None)


# What calls made under CUDA graph capture allocated (device_scope), for the process's life.
_captured_memory: list = []


@contextlib.contextmanager
def device_scope(device):
    """``device`` current for the call; while CuPy's current stream captures a CUDA graph,
    every block the call allocates from a pool is also kept, for the life of the process.

    Captured kernels run at each replay on the addresses of the capture. Without this the
    call's temporaries (block partials, a mean's divisor, the copies it makes of inputs of
    another dtype or layout) would go back to CuPy's pool when it returns, and a replay after
    anything else allocated would write over memory handed out since. The graph's end is not
    visible here (CuPy's pool has no memory private to a graph, as PyTorch's has), so the
    memory stays: the gradient buffer too when the call allocates it (pass ``out=`` to keep
    it in a buffer of your own). A stream-ordered block (``cupy.cuda.malloc_async``) is not
    kept: its free is a node of the graph, and a graph that never frees what it allocates
    cannot be launched twice."""
    import cupy

    with device:
        if not _capturing(cupy):
            yield
            return
        allocate = cupy.cuda.get_allocator()

        def allocate_and_keep(size):
            memory = allocate(size)
            if not isinstance(getattr(memory, "mem", None), cupy.cuda.MemoryAsync):
                _captured_memory.append(memory)
            return memory

        with cupy.cuda.using_allocator(allocate_and_keep):
            yield


def _capturing(cupy) -> bool:
    """Whether CuPy's current stream captures a graph. A refused query counts as no: CUDA
    refuses it for the legacy stream while another stream captures, and the call's launch
    then meets the same refusal, with CUDA's own message; CuPy on HIP, which captures
    nothing, refuses it always."""
    try:
        return bool(cupy.cuda.get_current_stream().is_capturing())
    except RuntimeError:
        return False
