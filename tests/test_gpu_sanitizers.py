"""Every CUDA kernel entry under NVIDIA's compute-sanitizer, on a GPU.

``tests/gpu_sanitize.py`` calls each entry over shapes that cross the launch modes; here
it runs under memcheck (out-of-bounds and misaligned accesses, on exact cudaMalloc
bounds), racecheck (shared-memory hazards) and synccheck (divergent or invalid barriers).
The host emulator's ASan and TSan runs (test_cuda_sanitizers.py) check the same kernels
on every machine; these run only where there is a GPU and the CUDA toolkit's
compute-sanitizer. The driver itself runs on the emulator everywhere.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fastloss import _registry

DRIVER = Path(__file__).resolve().parent / "gpu_sanitize.py"


@pytest.mark.gpu
@pytest.mark.parametrize("tool", ["memcheck", "racecheck", "synccheck"])
def test_every_entry_is_clean_under_compute_sanitizer(tool):
    ok, reason = _registry.backend_status("cuda")
    if not ok:
        pytest.skip(f"no CUDA device: {reason}")
    sanitizer = shutil.which("compute-sanitizer")
    if sanitizer is None:
        pytest.skip("compute-sanitizer is not on PATH (it comes with the CUDA toolkit)")
    shapes = [] if tool == "memcheck" else ["small"]
    result = subprocess.run(
        [sanitizer, "--tool", tool, "--error-exitcode", "9", "--print-limit", "10",
         sys.executable, str(DRIVER), *shapes],
        capture_output=True, text=True, timeout=600)
    report = (result.stdout + result.stderr)[-8000:]
    assert result.returncode == 0, f"compute-sanitizer {tool} (exit {result.returncode}):\n{report}"
    assert " 0 failed" in result.stdout, report


@pytest.mark.emulated
def test_the_driver_runs_every_call_on_the_emulator(emulated, capsys):
    """The driver itself, on the host emulator (no sanitizer): every call of the small set
    runs, so that a GPU session's sanitizer run is not spent on a broken driver."""
    import gpu_sanitize  # its main() imports cupy: here, the emulator's

    assert gpu_sanitize.main(gpu_sanitize.SMALL_SHAPES, plain_allocations=False) == 0
    assert capsys.readouterr().out.strip().endswith(" 0 failed")
