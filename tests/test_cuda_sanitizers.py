"""The emulated CUDA matrix under AddressSanitizer + UndefinedBehaviorSanitizer and ThreadSanitizer.

Each run is a fresh Python process with the sanitizer runtime preloaded,
running ``python -m cuda_emulator.cases`` (small shapes of the same cases as
test_cuda_emulator.py) on the matching build of ``kernels/``. Buffers have
their exact sizes, so an access one element past the end is a heap overflow;
under ThreadSanitizer the threads of a block are fibers ordered only by
barriers and shuffles, so a missing barrier is a data race.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cuda_emulator import build

from fastloss.backends.cuda import _module

pytestmark = [
    pytest.mark.emulated,
    pytest.mark.skipif(build.shutil.which("g++") is None, reason="the CUDA emulator needs g++"),
]

TESTS = Path(__file__).resolve().parent


@pytest.mark.parametrize("variant", ["asan", "tsan"])
def test_kernels_are_clean_under_sanitizers(variant):
    environment = build.sanitizer_environment(variant)
    missing = [p for p in environment["LD_PRELOAD"].split() if not os.path.isabs(p)]
    if missing:
        pytest.skip(f"the compiler has no sanitizer runtime {missing}")
    for path in sorted(_module.kernels_dir().glob("*.cu")):
        build.build(path.stem, variant)  # here, not under the preloaded runtime
    env = {**os.environ, **environment, "FASTLOSS_EMULATOR_VARIANT": variant,
           "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "cuda_emulator.cases"], env=env,
                            capture_output=True, text=True, timeout=600)
    report = (result.stdout + result.stderr)[-8000:]
    assert result.returncode == 0, f"{variant} run failed (exit {result.returncode}):\n{report}"
    assert result.stdout.strip().endswith("0 failed"), report
