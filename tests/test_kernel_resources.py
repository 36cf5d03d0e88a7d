"""ptxas's registers, spills, stack frame and shared memory for every ``extern "C"``
entry of ``kernels/*.cu`` on every architecture CMakeLists.txt builds, against the
committed baseline ``tests/kernel_resources.json``.

Read from the session's nvcc build (conftest.py ``nvcc_build``: CMakeLists.txt with
``FASTLOSS_RESOURCE_USAGE=ON``, the kernels directory the loader finds, so
``FASTLOSS_KERNELS_DIR`` is honoured); no compile of its own.

- A spill fails, whatever the baseline says (CMakeLists.txt makes it a build error
  too; the report of the failed build still names the entry and the bytes).
- An entry or architecture missing from the baseline, or extra to it, fails.
- Any change in registers, spills, stack frame or shared memory fails: registers
  decide how many blocks fit on an SM, so a kernel change that moves them updates the
  baseline on purpose, in the same commit. Regenerate it with

      python tests/test_kernel_resources.py --update

  which builds the kernels the same way (``FASTLOSS_KERNELS_DIR`` honoured) and
  rewrites the file. The counts also depend on the nvcc release; the file names the
  one it came from.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

import kernel_build
import pytest

BASELINE = Path(__file__).with_name("kernel_resources.json")
UPDATE_COMMAND = "python tests/test_kernel_resources.py --update"
FIELDS = ("registers", "spill_stores", "spill_loads", "stack_frame", "shared_memory")
ABOUT = (
    'ptxas -v per extern "C" entry (or non-inlined device function, registers null) and '
    "architecture, from CMakeLists.txt's nvcc build. Per thread: registers, spill_stores, "
    "spill_loads, stack_frame (bytes); per block: shared_memory (bytes, static). "
    f"Checked by tests/test_kernel_resources.py; regenerate with: {UPDATE_COMMAND}"
)


def measure(logs: dict[str, str]) -> dict[tuple[str, str], dict]:
    """``{(entry, arch): record}`` from the compiler output of each kernel file."""
    records = {}
    for file, text in logs.items():
        for (entry, arch), usage in kernel_build.parse_resource_usage(text).items():
            records[(entry, arch)] = {"entry": entry, "arch": arch, "file": file} | {
                field: getattr(usage, field) for field in FIELDS
            }
    return records


def _order(record: dict):
    arch_number = int(re.sub(r"\D", "", record["arch"]) or 0)
    return record["file"], record["entry"], arch_number, record["arch"]


def write_baseline(records: dict[tuple[str, str], dict], nvcc_version: str, path=BASELINE):
    """One record per line, sorted by file, entry and architecture."""
    lines = [json.dumps(r, separators=(", ", ": ")) for r in sorted(records.values(), key=_order)]
    head = {"about": ABOUT, "nvcc": nvcc_version}
    text = json.dumps(head, indent=2)[:-2] + ',\n  "records": [\n    '
    path.write_text(text + ",\n    ".join(lines) + "\n  ]\n}\n")


def read_baseline(path=BASELINE) -> tuple[dict[tuple[str, str], dict], str]:
    data = json.loads(path.read_text())
    return {(r["entry"], r["arch"]): r for r in data["records"]}, data["nvcc"]


def _spills(records: dict[tuple[str, str], dict]) -> list[str]:
    return [
        f"  {entry} {arch}: {r['spill_stores']} bytes spill stores, {r['spill_loads']} bytes "
        f"spill loads, {r['stack_frame']} bytes stack frame ({r['file']})"
        for (entry, arch), r in sorted(records.items())
        if r["spill_stores"] or r["spill_loads"]
    ]


@pytest.fixture(scope="module")
def measured(nvcc_build):
    records = measure(nvcc_build.logs())
    assert records, f"the nvcc build reported no entries\n{nvcc_build.messages()}"
    return records


@pytest.fixture(scope="module")
def baseline():
    return read_baseline()


def _complete(nvcc_build, measured):
    """The measurement, once the build has succeeded (a failed compile stops
    nvcc before its later architectures, so the report is partial)."""
    spills = _spills(measured)
    assert nvcc_build.ok, (
        "the nvcc build failed"
        + (" on spills:\n" + "\n".join(spills) if spills else "")
        + f"\n{nvcc_build.messages()}"
    )
    return measured


def test_no_spills(measured):
    spills = _spills(measured)
    assert not spills, "registers spilled to local memory:\n" + "\n".join(spills)


def test_every_kernel_file_reported(measured):
    from fastloss.backends.cuda import _module

    files = sorted(p.name for p in _module.kernels_dir().glob("*.cu"))
    assert sorted({r["file"] for r in measured.values()}) == files


def test_entries_match_baseline(nvcc_build, measured, baseline):
    complete = _complete(nvcc_build, measured)
    expected, nvcc_version = baseline
    missing = sorted(expected.keys() - complete.keys())
    extra = sorted(complete.keys() - expected.keys())
    problems = [f"  missing: {entry} {arch}" for entry, arch in missing]
    problems += [f"  not in the baseline: {entry} {arch}" for entry, arch in extra]
    assert not problems, (
        f"entries differ from {BASELINE.name} (nvcc {nvcc_version}):\n"
        + "\n".join(problems)
        + f"\nif intended, regenerate it: {UPDATE_COMMAND}"
    )


def test_resources_match_baseline(nvcc_build, measured, baseline):
    complete = _complete(nvcc_build, measured)
    expected, nvcc_version = baseline
    changes = []
    for key in sorted(expected.keys() & complete.keys()):
        old, new = expected[key], complete[key]
        for field in ("file", *FIELDS):
            if old.get(field) != new[field]:
                changes.append(f"  {key[0]} {key[1]}: {field} {old.get(field)} -> {new[field]}")
    if not changes:
        return
    current = kernel_build.nvcc_version(kernel_build.find_nvcc())
    compiler = (
        f"baseline from nvcc {nvcc_version}, this build used nvcc {current}"
        if current != nvcc_version
        else f"nvcc {current}"
    )
    pytest.fail(
        f"kernel resources differ from {BASELINE.name} ({compiler}):\n"
        + "\n".join(changes)
        + f"\nif intended, check the occupancy and regenerate it: {UPDATE_COMMAND}"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--update", action="store_true", help=f"rewrite {BASELINE}")
    args = parser.parse_args(argv)
    if not args.update:
        parser.print_help()
        return 2
    # This checkout's package (hence its kernels/), not an installed copy.
    sys.path.insert(0, str(kernel_build.ROOT))
    from fastloss.backends.cuda import _module

    nvcc, cmake = kernel_build.find_nvcc(), shutil.which("cmake")
    if nvcc is None or cmake is None:
        print(f"needs nvcc and cmake (nvcc: {nvcc}, cmake: {cmake})", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as directory:
        build = kernel_build.build(Path(directory), _module.kernels_dir(), nvcc, cmake)
        records = measure(build.logs())
    spills = _spills(records)
    if not build.ok or spills:
        print(build.messages(), file=sys.stderr)
        print("\n".join(["no baseline written: the build failed", *spills]), file=sys.stderr)
        return 1
    write_baseline(records, kernel_build.nvcc_version(nvcc))
    print(f"wrote {len(records)} records to {BASELINE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
