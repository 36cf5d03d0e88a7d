"""Every CUDA kernel compiles, with no GPU: NVRTC to PTX, and nvcc through CMake.

The entry names checked here are the ones the launchers in
``fastloss/backends/cuda`` look up at run time. The nvcc build is the session's
``nvcc_build`` (conftest.py), which test_kernel_resources.py reads too.
"""

import re
import shutil
import subprocess

import pytest

from fastloss import _registry
from fastloss.backends.cuda import _module

DTYPES = ("float16", "bfloat16", "float32", "float64")
ENTRIES = {
    loss: [f"fl_{loss}_{d}" for d in DTYPES] + [f"fl_{loss}_finish_{d}" for d in DTYPES]
    for loss in _registry.ELEMENTWISE
} | {
    "softmax_cross_entropy": [f"fl_softmax_cross_entropy_{d}" for d in DTYPES]
    + [f"fl_softmax_cross_entropy_probs_{d}" for d in DTYPES]
    + [f"fl_softmax_cross_entropy_finish_{d}" for d in DTYPES]
    + ["fl_softmax_cross_entropy_mean_divisor"],
    "nll": [f"fl_nll_{d}" for d in DTYPES] + [f"fl_nll_finish_{d}" for d in DTYPES],
    "multi_margin": [f"fl_multi_margin_{d}" for d in DTYPES]
    + [f"fl_multi_margin_finish_{d}" for d in DTYPES],
    "softmax_entropy": [f"fl_softmax_entropy_{d}" for d in DTYPES]
    + [f"fl_softmax_entropy_finish_{d}" for d in DTYPES],
    "softmax": [
        f"fl_{function}_{d}"
        for function in ("softmax", "log_softmax", "softmax_backward", "log_softmax_backward")
        for d in DTYPES
    ],
}
# NVRTC, the compiler the launchers use at run time, for the architecture of the newest
# SASS in CMakeLists.txt; the nvcc build below covers every architecture from the oldest.
ARCHS = ("compute_90",)


def _nvrtc():
    try:
        from cupy_backends.cuda.libs import nvrtc

        nvrtc.getVersion()
    except Exception as exc:  # ImportError, or the shared library cannot be loaded
        pytest.skip(f"NVRTC not installed: {exc}")
    return nvrtc


def _ptx(name: str, arch: str) -> str:
    nvrtc = _nvrtc()
    program = nvrtc.createProgram(_module.kernel_source(name), f"{name}.cu", [], [])
    # -ftz=true as CuPy adds it to every RawModule compile.
    options = [*_module.compile_options(), f"--gpu-architecture={arch}", "-ftz=true"]
    try:
        nvrtc.compileProgram(program, options)
        ptx = nvrtc.getPTX(program)
    except Exception as exc:
        log = nvrtc.getProgramLog(program)
        pytest.fail(f"{name}.cu does not compile for {arch}:\n{log}\n{exc}")
    finally:
        nvrtc.destroyProgram(program)
    return ptx.decode() if isinstance(ptx, bytes) else ptx


def test_every_kernel_file_has_a_test_entry():
    names = sorted(p.stem for p in _module.kernels_dir().glob("*.cu"))
    assert names == sorted(ENTRIES)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_nvrtc_compiles_and_exports_entries(name, arch):
    entries = set(re.findall(r"\.visible\s+\.entry\s+(\w+)\s*\(", _ptx(name, arch)))
    missing = set(ENTRIES[name]) - entries
    assert not missing, f'{name}.cu lacks extern "C" entries {sorted(missing)}'


def test_kernels_hash_covers_headers(tmp_path):
    copy = tmp_path / "kernels"
    shutil.copytree(_module.kernels_dir(), copy)
    before = _module.directory_digest(copy)
    header = copy / "common" / "reduce.cuh"
    header.write_text(header.read_text() + "\n// edited\n")
    assert _module.directory_digest(copy) != before


def test_compile_options_carry_include_dir_and_hash():
    options = _module.compile_options()
    assert f"-I{_module.kernels_dir()}" in options
    assert f"-DFL_KERNELS_HASH=0x{_module.kernels_hash()}" in options
    assert not any("fast-math" in option or "fast_math" in option for option in options)


def test_kernels_dir_found_from_environment(tmp_path, monkeypatch):
    copy = tmp_path / "kernels"
    shutil.copytree(_module.kernels_dir(), copy)
    monkeypatch.setenv("FASTLOSS_KERNELS_DIR", str(copy))
    assert _module.kernels_dir() == copy


def test_cmake_build_with_nvcc(nvcc_build):
    assert nvcc_build.ok, nvcc_build.messages()
    nm = shutil.which("nm")
    if nm is None:
        return
    for name, entries in ENTRIES.items():
        obj = nvcc_build.object(name)
        assert obj is not None, f"no object for {name}.cu"
        symbols = subprocess.run([nm, str(obj)], capture_output=True, text=True, check=True).stdout
        exported = set(re.findall(r"\sT\s+(\w+)$", symbols, flags=re.M))
        missing = set(entries) - exported
        assert not missing, f"{name}.cu.o lacks unmangled entries {sorted(missing)}"
