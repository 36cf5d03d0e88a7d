"""The nvcc build of the CUDA kernels through CMake, shared by the compile test
and the resource gate, so that a test run compiles each kernel file once.

The build is CMakeLists.txt's own (every architecture, warnings and spills as
errors) of the kernels directory the Python loader uses
(``FASTLOSS_KERNELS_DIR`` honoured), with ptxas's resource report switched on
(``FASTLOSS_RESOURCE_USAGE``) and this file as CMake's compiler launcher: it
keeps each compile's output in ``<object>.log``, because with ``-j2`` the two
compiles' reports would interleave line by line on the build's output.

Run as a script (by CMake only): ``kernel_build.py <compile command...>``.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOG_SUFFIX = ".log"


def find_nvcc() -> str | None:
    """nvcc from ``$CUDACXX``, ``PATH`` or CUDA's default prefix; None if absent."""
    candidates = [os.environ.get("CUDACXX"), shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"]
    return next((c for c in candidates if c and Path(c).is_file()), None)


def nvcc_version(nvcc: str) -> str:
    """``13.0.88`` from ``nvcc --version``."""
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"\bV(\d+(?:\.\d+)+)", out)
    return match.group(1) if match else out.strip().splitlines()[-1]


@dataclasses.dataclass
class Build:
    directory: Path
    returncode: int
    output: str  # configure and build, stdout and stderr

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def messages(self, limit: int = 20000) -> str:
        """The end of the build's output without ptxas's resource report: what
        to show when the build failed."""
        report = re.compile(r"^ptxas info\s*:|^\s+\d+ bytes stack frame")
        kept = [line for line in self.output.splitlines() if not report.search(line)]
        return "\n".join(kept)[-limit:]

    def object(self, stem: str) -> Path | None:
        """The object of ``<stem>.cu``, or None if it was not built."""
        found = sorted(self.directory.rglob(f"{stem}.cu.o"))
        return found[0] if found else None

    def logs(self) -> dict[str, str]:
        """The compiler's output per kernel file (``mse.cu``: text), including
        the compiles that failed."""
        suffix = ".cu.o" + LOG_SUFFIX
        return {
            log.name[: -len(suffix)] + ".cu": log.read_text()
            for log in sorted(self.directory.rglob("*" + suffix))
        }


def build_once(directory: Path, kernels: Path, nvcc: str, cmake: str) -> Build:
    """:func:`build` in ``directory`` unless a process of this test session (a
    pytest-xdist worker) has built there already: the first one builds, the others
    wait for it and read its result."""
    directory.mkdir(parents=True, exist_ok=True)
    result = directory / "build_result.json"
    with open(directory / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if result.exists():
            saved = json.loads(result.read_text())
            return Build(directory, saved["returncode"], saved["output"])
        done = build(directory, kernels, nvcc, cmake)
        result.write_text(json.dumps({"returncode": done.returncode, "output": done.output}))
        return done


def build(directory: Path, kernels: Path, nvcc: str, cmake: str, jobs: int = 2) -> Build:
    """Configures and builds CMakeLists.txt in ``directory`` for the sources in
    ``kernels``; never raises on a failed build (see ``Build.ok``)."""
    launcher = f"{sys.executable};{Path(__file__).resolve()}"
    steps = [
        [
            cmake,
            "-S",
            str(ROOT),
            "-B",
            str(directory),
            f"-DCMAKE_CUDA_COMPILER={nvcc}",
            f"-DCMAKE_CUDA_COMPILER_LAUNCHER={launcher}",
            f"-DFASTLOSS_KERNELS_DIR={kernels}",
            "-DFASTLOSS_RESOURCE_USAGE=ON",
        ],
        [cmake, "--build", str(directory), f"-j{jobs}"],
    ]
    output = []
    for step in steps:
        result = subprocess.run(step, capture_output=True, text=True)
        output += [" ".join(step), result.stdout, result.stderr]
        if result.returncode != 0:
            return Build(directory, result.returncode, "\n".join(output))
    return Build(directory, 0, "\n".join(output))


@dataclasses.dataclass(frozen=True)
class Resources:
    """One function on one architecture, as ``ptxas -v`` reports it."""

    registers: int | None  # None for a non-entry function (ptxas reports none)
    spill_stores: int
    spill_loads: int
    stack_frame: int
    shared_memory: int


_ENTRY = re.compile(r"Compiling entry function '(\w+)' for '(sm_\w+)'")
_PROPERTIES = re.compile(r"Function properties for (\w+)")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")
_SMEM = re.compile(r"(\d+) bytes smem")


def parse_resource_usage(text: str) -> dict[tuple[str, str], Resources]:
    """``{(function, arch): Resources}`` from nvcc ``--resource-usage`` output.

    ptxas prints, per architecture and entry::

        Compiling entry function 'NAME' for 'sm_90'
        Function properties for NAME
            0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
        Used 30 registers, used 1 barriers, 256 bytes smem, 400 bytes cmem[0]

    and after the entries of an architecture, a "Function properties" block for
    each non-inlined device function, which is recorded under its own name
    with ``registers=None``. "N bytes smem" is absent when it is zero.
    """
    found: dict[tuple[str, str], Resources] = {}
    entry = arch = function = None
    frame = None
    for line in text.splitlines():
        if match := _ENTRY.search(line):
            entry, arch = match.groups()
            function, frame = None, None
        elif match := _PROPERTIES.search(line):
            function = match.group(1)
        elif (match := _FRAME.search(line)) and function and arch:
            frame = tuple(int(v) for v in match.groups())
            if function != entry:
                found[(function, arch)] = Resources(None, frame[1], frame[2], frame[0], 0)
        elif (match := _USED.search(line)) and entry and frame is not None:
            smem = _SMEM.search(line)
            found[(entry, arch)] = Resources(
                registers=int(match.group(1)),
                spill_stores=frame[1],
                spill_loads=frame[2],
                stack_frame=frame[0],
                shared_memory=int(smem.group(1)) if smem else 0,
            )
            frame = None
    return found


def _output_path(command: list[str]) -> str | None:
    for i, arg in enumerate(command):
        if arg == "-o" and i + 1 < len(command):
            return command[i + 1]
        if arg.startswith(("-o=", "--output-file=")):
            return arg.split("=", 1)[1]
    return None


def _launch(command: list[str]) -> int:
    """Runs a compile command, passes its output on, and keeps a copy next to
    its object."""
    result = subprocess.run(command, capture_output=True, text=True)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    target = _output_path(command)
    if target is not None:
        Path(target + LOG_SUFFIX).write_text(result.stdout + result.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(_launch(sys.argv[1:]))
