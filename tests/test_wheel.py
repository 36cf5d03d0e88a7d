"""The wheel, installed in a fresh virtual environment, runs ``python -m fastloss bench``.

The source tree is copied first, so that building leaves nothing (``build/``, ``*.egg-info``)
in the checkout and nothing stale from an earlier build gets into the wheel. Installing the
wheel fetches NumPy and Numba through pip (its cache or index).
"""

import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__",
                                    ".*_cache", ".benchmarks", ".hypothesis", "*.whl")


def _pip(python, *args: str, cwd: Path) -> None:
    completed = subprocess.run([str(python), "-m", "pip", "--disable-pip-version-check", *args],
                               capture_output=True, text=True, timeout=300, cwd=cwd)
    assert completed.returncode == 0, completed.stderr[-4000:]


@pytest.fixture(scope="module")
def installed_python(tmp_path_factory) -> Path:
    """The python of a fresh virtual environment holding only the wheel and its dependencies."""
    work = tmp_path_factory.mktemp("wheel")
    source, wheels = work / "source", work / "wheels"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    _pip(sys.executable, "wheel", "--no-deps", "--quiet", "-w", str(wheels), str(source), cwd=work)
    (wheel,) = wheels.glob("fastloss-*.whl")
    venv.create(work / "venv", with_pip=True)
    python = work / "venv" / "bin" / "python"
    _pip(python, "install", "--quiet", "-c", str(ROOT / "constraints.txt"), str(wheel), cwd=work)
    return python


def _run(python: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), "-m", "fastloss", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


@pytest.mark.slow
def test_installed_wheel_runs_the_bench_report(installed_python, tmp_path):
    completed = _run(installed_python, tmp_path, "bench", "--quick", "--losses", "mse",
                     "--sizes", "64x10", "--repeats", "3", "--budget", "0", "--quiet")

    assert completed.returncode == 0, completed.stderr
    assert "Traceback" not in completed.stderr
    rows = [line.split()[:4] for line in completed.stdout.splitlines()]
    for backend in ("numpy", "numba"):
        assert ["mse", backend, "fused", "64x10"] in rows, completed.stdout


@pytest.mark.slow
def test_installed_wheel_has_the_package_version(installed_python, tmp_path):
    from fastloss import __version__

    completed = _run(installed_python, tmp_path, "--version")
    assert completed.returncode == 0, completed.stderr
    assert __version__ in completed.stdout
