"""Shared fixtures: every available backend, per-dtype tolerances, host <-> backend moves,
and the one nvcc build of the CUDA kernels.

The cuda backend runs twice over: on a GPU where there is one (marked ``gpu``,
skipped with "no CUDA device" elsewhere), and everywhere on the host emulator
of ``tests/cuda_emulator`` (marked ``emulated``: ``python -m pytest -m
emulated`` runs just those).
"""

import collections
import contextlib
import os
import shutil

import kernel_build
import numpy as np
import pytest
from cuda_emulator import emulator

from fastloss import _registry
from fastloss.backends.cuda import _module

NO_GPU = "no CUDA device"

# The order in which pytest-xdist's workers take whole files (``--dist loadfile``): the
# longest first, so that the two workers of a 2-core machine finish together; last the
# resource gate, which reads the nvcc build, and the files that run snippets in fresh
# interpreters, which then load from Numba's cache the kernels the files before them
# compiled. The rest keep their collection order.
# test_plain_path.py comes after test_softmax_cross_entropy.py: started beside
# test_elementwise.py, the two compiled the same small-call kernels at once.
FIRST = ["test_kernels_compile.py",  # the nvcc build of every kernel: two minutes
         "test_elementwise.py", "test_softmax_cross_entropy.py", "test_plain_path.py",
         "test_numba_kernels.py", "test_cuda_sanitizers.py", "test_bench_report.py"]
LAST = ["test_kernel_resources.py", "test_examples.py", "test_readme.py"]


def pytest_configure(config):
    """Files in the order above, not pytest-xdist's default of the most tests first."""
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.path.name
        if name in FIRST:
            return FIRST.index(name)
        return len(FIRST) + 1 + LAST.index(name) if name in LAST else len(FIRST)

    items.sort(key=rank)  # stable: each file's tests keep their order


def pytest_terminal_summary(terminalreporter):
    """The skips once per reason, every GPU one as "no CUDA device" (``python -m
    fastloss info`` says why the cuda backend is unavailable); pytest's ``-rs``
    would repeat a reason per test file and line."""
    reasons = collections.Counter()
    for report in terminalreporter.stats.get("skipped", []):
        reason = str(report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        reasons[NO_GPU if NO_GPU in reason else reason] += 1
    if reasons:
        terminalreporter.section("skipped, by reason")
        for reason, count in reasons.most_common():
            terminalreporter.line(f"{count:6}  {reason}")


def _backend_param(name):
    marks = [pytest.mark.gpu] if name == "cuda" else []
    ok, reason = _registry.backend_status(name)
    if not ok:
        if name == "cuda" and not reason.startswith(NO_GPU):
            reason = f"{NO_GPU}: {reason}"
        marks.append(pytest.mark.skip(reason=reason))
    return pytest.param(name, id=name, marks=marks)


def _emulated_param():
    marks = [pytest.mark.emulated]
    if shutil.which("g++") is None:
        marks.append(pytest.mark.skip(reason="the CUDA emulator needs g++ (apt-get install g++)"))
    return pytest.param("cuda-emulated", id="cuda-emulated", marks=marks)


BACKENDS = [_backend_param(name) for name in _registry.BACKENDS] + [_emulated_param()]
# Where CUDA kernels run: a real GPU through CuPy, or the host emulator.
CUDA_DEVICES = [_backend_param("cuda"), _emulated_param()]


def _cuda_scope(name):
    """``(backend name, context)``; for "cuda-emulated" the context activates the emulator."""
    if name == "cuda-emulated":
        return "cuda", emulator.activate()
    return name, contextlib.nullcontext()

@pytest.fixture
def emulated():
    """The emulator's cupy, for the checks only the emulator can make (launches, traffic)."""
    if shutil.which("g++") is None:
        pytest.skip("the CUDA emulator needs g++ (apt-get install g++)")
    with emulator.activate() as module:
        yield module


# (rtol, atol) of a result of this dtype against a float64 reference.
TOLERANCE = {
    np.dtype(np.float64): (1e-10, 1e-12),
    np.dtype(np.float32): (2e-5, 1e-6),
    np.dtype(np.float16): (4e-3, 1e-3),
}


@pytest.fixture(params=BACKENDS)
def backend(request):
    name, scope = _cuda_scope(request.param)
    with scope:
        yield name


@pytest.fixture(params=CUDA_DEVICES)
def cupy(request):
    """The CuPy module on a GPU, or the emulator's stand-in over host memory."""
    _, scope = _cuda_scope(request.param)
    with scope as module:
        if module is None:
            import cupy as module
        yield module


@pytest.fixture(params=[np.float32, np.float64], ids=["float32", "float64"])
def dtype(request):
    return np.dtype(request.param)


def to_backend(x, backend):
    """A host array as the array type ``backend`` takes."""
    if backend == "cuda" and x is not None:
        import cupy

        return cupy.asarray(x)
    return x


def to_host(x):
    """Any result (NumPy, CuPy, scalar) as a NumPy value."""
    if type(x).__module__.split(".")[0] == "cupy":
        return x.get()
    return np.asarray(x)


def assert_close(actual, expected, dtype):
    rtol, atol = TOLERANCE[np.dtype(dtype)]
    np.testing.assert_allclose(to_host(actual).astype(np.float64), expected, rtol=rtol, atol=atol)


def confident_rows(rows, classes, dtype, seed=0):
    """``(logits, top, excess)``: rows whose max logit, 0, sits at class ``top[r]`` (and, in a
    third of the rows, at one or two more classes), the others 3 to 60 below it, so that a
    row's sum of exponentials is 1 + excess, excess from about 1e-26 to 0.5 where the max is
    alone (long double, from the logits as rounded; their shifts z - max are the logits
    themselves, exact). A sum taken whole keeps excess only to an ulp of 1."""
    rng = np.random.default_rng(seed)
    margin = rng.uniform(3, 60, (rows, 1))
    logits = (-margin - rng.exponential(3, (rows, classes))).astype(dtype)
    top = rng.integers(0, classes, rows)
    ties = rng.integers(0, classes, (rows, 2))
    alone = rng.random(rows) < 2 / 3
    ties[alone] = top[alone, None]
    for columns in (top[:, None], ties):
        np.put_along_axis(logits, columns, 0, axis=1)
    exps = np.exp(logits.astype(np.longdouble))
    at_max = logits == 0
    return logits, top, np.where(at_max, 0, exps).sum(axis=1) + (at_max.sum(axis=1) - 1)


def max_ulps(actual, exact, dtype):
    """The largest distance of ``actual`` from the long-double ``exact``, in ulps of the
    exact values rounded to ``dtype``."""
    ulp = np.spacing(np.abs(exact).astype(dtype)).astype(np.longdouble)
    return float((np.abs(to_host(actual).astype(np.longdouble) - exact) / ulp).max())


def assert_within_an_ulp(actual, expected, dtype):
    """``actual`` within one ulp of ``dtype`` of the float64 ``expected`` rounded to it: a half
    result computed in float32 and rounded (once, or twice through float32); half arithmetic
    is off by several."""
    want = np.asarray(expected).astype(dtype)
    ulps = (np.abs(to_host(actual).astype(np.float64) - want)
            / np.spacing(np.abs(want)).astype(np.float64))
    assert ulps.max(initial=0.0) <= 1, ulps.max()


@pytest.fixture(scope="session")
def nvcc_build(tmp_path_factory):
    """CMakeLists.txt's nvcc build of the kernels the loader finds (``FASTLOSS_KERNELS_DIR``
    honoured), with ptxas's resource report: one compile of each kernel file serves the entry
    name check and the resource gate. Skipped only where there is no nvcc."""
    nvcc = kernel_build.find_nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found (set CUDACXX or put nvcc on PATH)")
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.fail("nvcc is installed but cmake is not (pip install cmake)")
    # The session's directory, which pytest-xdist's worker processes share (each has
    # its own basetemp below it): one of them builds, the others read its build.
    session = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:
        session = session.parent
    return kernel_build.build_once(session / "nvcc_build", _module.kernels_dir(), nvcc, cmake)
