"""Host builds of ``kernels/*.cu``: g++ with the emulator runtime, one shared library per file.

The sources are compiled as they are, except that each inline-PTX ``cvt``
becomes a call of the prelude's PTX interpreter with the instruction's text
(any other inline PTX is a build error). Each ``extern "C"`` entry is found
in the preprocessed source with its exact parameter types, and gets a
trampoline that unpacks an argument array, so that the launcher's arguments
can be checked type by type against the real signature. Builds are cached
under ``build/cuda_emulator`` by a digest of the kernel sources (from
``FASTLOSS_KERNELS_DIR`` when set), the emulator sources, the variant and the
compiler; the runtime, which does not depend on the kernels, is compiled once
per variant and linked into every library of it.

Variants:
- ``checked``: the kernel file is instrumented (``-fsanitize=thread`` code
  generation) and its loads and stores land in the runtime, which checks
  bounds, alignment and shared-memory races and counts global traffic;
- ``asan``: AddressSanitizer + UndefinedBehaviorSanitizer (needs
  ``LD_PRELOAD`` of libasan, see :func:`sanitizer_environment`);
- ``tsan``: ThreadSanitizer, fibers announced, barriers as release/acquire.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fastloss.backends.cuda import _module

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PRELUDE = HERE / "cuda_host.h"
RUNTIME = HERE / "runtime.cpp"
CACHE = ROOT / "build" / "cuda_emulator"

# -fno-gnu-unique: a template's static (a kernel's __shared__ array) must stay private to
# its file's library, not be merged across every library loaded in the process.
# -g1 (line tables): enough for a sanitizer's stack trace to name file and line, at
# half the compile time of -g under AddressSanitizer.
_COMMON = ["-std=c++17", "-fPIC", "-g1", "-fno-strict-aliasing", "-ffp-contract=off",
           "-fno-math-errno", "-fno-gnu-unique", "-Wall", "-Wno-unused-function"]
# AddressSanitizer at -O0: every access stays instrumented, the build takes half the time of
# -O1's and the small matrix runs as fast. ThreadSanitizer stays at -O1: at -O0 the locals
# live on the fibers' stacks, which the next fibers reuse: it reports that reuse as a race.
VARIANTS = {
    "checked": dict(
        kernel=["-O2", "-fsanitize=thread", "--param=tsan-instrument-func-entry-exit=0"],
        runtime=["-O2", "-DFL_EMU_HOOKS=1"], link=[],
    ),
    "asan": dict(
        kernel=["-O0", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                "-fno-omit-frame-pointer"],
        runtime=["-O0", "-DFL_EMU_ASAN=1"], link=["-fsanitize=address,undefined"],
    ),
    "tsan": dict(
        kernel=["-O1", "-fsanitize=thread"],
        runtime=["-O1", "-DFL_EMU_TSAN=1"], link=["-fsanitize=thread"],
    ),
}

# C parameter types of the kernels -> what the launcher must pass.
_POINTEE_DTYPES = {
    "fl::half_t": "float16", "fl::bfloat16_t": "bfloat16", "float": "float32",
    "double": "float64", "long long": "int64", "int": "int32", "unsigned int": "uint32",
    "unsigned long long": "uint64", "char": "int8", "unsigned char": "uint8",
}
_SCALAR_DTYPES = {
    "long long": "int64", "unsigned long long": "uint64", "int": "int32",
    "unsigned int": "uint32", "double": "float64", "float": "float32", "bool": "bool",
}


class BuildError(RuntimeError):
    """The host compiler rejected a kernel file or the runtime."""


# asm("cvt... %0, %1;" : "=h"(out) : "f"(in)); one output, one input operand.
_ASM = re.compile(
    r'asm\s*(?:volatile\s*)?\(\s*"(?P<text>[^"]*)"\s*:\s*"=\w"\s*\((?P<out>[^()]+)\)\s*:'
    r'\s*"\w"\s*\((?P<in>[^()]+)\)\s*\)\s*;'
)


def _interpret_ptx(text: str, where: str) -> str:
    """``text`` with every inline-PTX cvt replaced by a call of ``fl_host::ptx_cvt``."""

    def call(match: re.Match) -> str:
        instruction = match["text"]
        if not instruction.lstrip().startswith("cvt."):
            raise BuildError(f"{where}: inline PTX {instruction!r} has no host equivalent")
        out, value, literal = match["out"].strip(), match["in"].strip(), json.dumps(instruction)
        return (f"{{ constexpr fl_host::PtxCvt fl_cvt = fl_host::parse_cvt({literal}); "
                f'static_assert(fl_cvt.valid, "unsupported PTX cvt"); '
                f"{out} = fl_host::ptx_cvt<decltype({out})>(fl_cvt, {value}); }}")

    rewritten = _ASM.sub(call, text)
    if re.search(r"\basm\s*(volatile\s*)?\(", rewritten):
        raise BuildError(f"{where}: inline PTX the host build cannot interpret")
    return rewritten


def _host_sources(kernels: Path, into: Path) -> Path:
    """A copy of ``kernels`` with its inline PTX interpreted (line numbers kept)."""
    if into.exists():
        shutil.rmtree(into)
    for path in _module.kernel_files(kernels):
        target = into / path.relative_to(kernels)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(_interpret_ptx(path.read_text(encoding="utf-8"), str(path)))
    return into


@dataclass(frozen=True)
class Param:
    """One kernel parameter: its C type, name, and the dtype it takes (pointee for pointers)."""

    ctype: str
    name: str
    pointer: bool
    dtype: str


@dataclass(frozen=True)
class Entry:
    name: str
    params: tuple[Param, ...]


def compiler() -> str:
    found = os.environ.get("CXX") or shutil.which("g++")
    if not found:
        raise BuildError("g++ not found (apt-get install g++)")
    return found


def _run(args: list[str], what: str) -> str:
    result = subprocess.run(args, capture_output=True, text=True)
    if result.returncode != 0:
        raise BuildError(f"{what} failed:\n{' '.join(args)}\n{result.stderr[-6000:]}")
    return result.stdout


def _parse_param(text: str) -> Param:
    text = " ".join(text.replace("*", " * ").split())
    match = re.fullmatch(r"(.*?)\s*(\*?)\s*([A-Za-z_]\w*)", text)
    if not match:
        raise BuildError(f"cannot parse kernel parameter {text!r}")
    ctype, star, name = match.groups()
    base = " ".join(word for word in ctype.split() if word not in ("const", "volatile"))
    base = base.replace("__restrict", "").strip()
    pointer = star == "*"
    table = _POINTEE_DTYPES if pointer else _SCALAR_DTYPES
    if base not in table:
        raise BuildError(f"kernel parameter {text!r}: type {base!r} is not supported")
    full = f"{ctype} *" if pointer else ctype
    return Param(ctype=full, name=name, pointer=pointer, dtype=table[base])


def parse_entries(preprocessed: str) -> list[Entry]:
    """The ``extern "C"`` kernels of a preprocessed file, in source order."""
    entries = []
    pattern = re.compile(r'extern\s+"C"\s+void\s+(\w+)\s*\(([^)]*)\)\s*\{')
    for match in pattern.finditer(preprocessed):
        name, params = match.groups()
        parsed = tuple(_parse_param(p) for p in params.split(",") if p.strip())
        entries.append(Entry(name, parsed))
    return entries


def _trampolines(source: Path, entries: list[Entry]) -> str:
    lines = [f'#include "{source}"', "", "typedef void (*fl_emu_trampoline)(void**);",
             "struct fl_emu_entry { const char* name; fl_emu_trampoline call; };", ""]
    for entry in entries:
        unpacked = ", ".join(
            f"*reinterpret_cast<{p.ctype}*>(args[{i}])" for i, p in enumerate(entry.params)
        )
        # Not instrumented: the argument array is launcher memory, not device memory.
        lines.append(f"__attribute__((no_sanitize_thread, no_sanitize_address)) static void "
                     f"fl_emu_call_{entry.name}(void** args) {{ {entry.name}({unpacked}); }}")
    lines.append('extern "C" const fl_emu_entry fl_emu_entries[] = {')
    lines += [f'    {{"{e.name}", fl_emu_call_{e.name}}},' for e in entries]
    lines += ["    {nullptr, nullptr},", "};", ""]
    return "\n".join(lines)


@functools.cache
def _compiler_version(cxx: str) -> str:
    return _run([cxx, "--version"], "g++ --version")


def _digest(variant: str, *parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    digest.update(Path(__file__).read_bytes())
    digest.update(variant.encode())
    digest.update(_compiler_version(compiler()).encode())
    return digest.hexdigest()[:16]


def _runtime_object(variant: str) -> Path:
    """The emulator runtime compiled for ``variant``, once: it does not depend on the
    kernels, so every kernel library of the variant links the same object."""
    cxx = compiler()
    runtime = CACHE / f"runtime-{variant}-{_digest(variant, RUNTIME.read_bytes())}.o"
    if not runtime.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=CACHE) as scratch:
            staged = Path(scratch) / runtime.name
            _run([cxx, *_COMMON, *VARIANTS[variant]["runtime"], "-c", str(RUNTIME),
                  "-o", str(staged)], "compile the emulator runtime")
            staged.replace(runtime)  # atomic: a concurrent build sees all of it or none
    return runtime


@dataclass(frozen=True)
class Built:
    library: Path
    entries: tuple[Entry, ...]


def build(name: str, variant: str = "checked") -> Built:
    """The host library of ``kernels/<name>.cu`` for ``variant``, compiled once and cached."""
    kernels = _module.kernels_dir()
    # The runtime too: the library links it, so an edit of it must make a new library.
    digest = _digest(variant, _module.directory_digest(kernels).encode(), PRELUDE.read_bytes(),
                     RUNTIME.read_bytes())
    out_dir = CACHE / f"{variant}-{digest}"
    library = out_dir / f"{name}.so"
    signature_file = out_dir / f"{name}.entries"
    if library.is_file() and signature_file.is_file():
        return Built(library, tuple(_load_entries(signature_file)))
    out_dir.mkdir(parents=True, exist_ok=True)
    # One process at a time builds a library (pytest-xdist runs several): the copy
    # of the sources below is rewritten by each build.
    with open(out_dir / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if library.is_file() and signature_file.is_file():  # built while this one waited
            return Built(library, tuple(_load_entries(signature_file)))
        return _build_library(name, variant, kernels, out_dir, library, signature_file)


def _build_library(name, variant, kernels, out_dir, library, signature_file) -> Built:
    flags = VARIANTS[variant]
    # Kept beside the library: sanitizer reports and debuggers point into it.
    sources = _host_sources(kernels, out_dir / f"{name}-sources")
    source = sources / f"{name}.cu"
    cxx = compiler()
    base = [cxx, *_COMMON, f"-I{sources}", "-include", str(PRELUDE)]
    with tempfile.TemporaryDirectory(dir=out_dir) as scratch:
        scratch = Path(scratch)
        preprocessed = _run([*base, "-E", "-P", "-x", "c++", str(source)], f"preprocess {name}.cu")
        entries = parse_entries(preprocessed)
        if not entries:
            raise BuildError(f'{name}.cu has no extern "C" entries')
        wrapper = scratch / f"{name}_entries.cpp"
        wrapper.write_text(_trampolines(source, entries))
        runtime = _runtime_object(variant)
        kernel = scratch / f"{name}.o"
        _run([*base, *flags["kernel"], "-c", str(wrapper), "-o", str(kernel)],
             f"compile {name}.cu for the host")
        staged = scratch / library.name
        _run([cxx, "-shared", *flags["link"], str(kernel), str(runtime), "-o", str(staged)],
             f"link {name}.so")
        # Entries first, each file whole (replace is atomic): a process that finds the
        # library without taking the lock also finds its complete entry list.
        staged_entries = scratch / signature_file.name
        _save_entries(staged_entries, entries)
        staged_entries.replace(signature_file)
        staged.replace(library)
    return Built(library, tuple(entries))


def _save_entries(path: Path, entries: list[Entry]) -> None:
    lines = [
        "\t".join([e.name] + [f"{p.ctype}|{p.name}|{int(p.pointer)}|{p.dtype}" for p in e.params])
        for e in entries
    ]
    path.write_text("\n".join(lines) + "\n")


def _load_entries(path: Path) -> list[Entry]:
    entries = []
    for line in path.read_text().splitlines():
        name, *params = line.split("\t")
        parsed = []
        for text in params:
            ctype, pname, pointer, dtype = text.split("|")
            parsed.append(Param(ctype, pname, pointer == "1", dtype))
        entries.append(Entry(name, tuple(parsed)))
    return entries


def sanitizer_environment(variant: str) -> dict[str, str]:
    """Environment for a Python process that loads ``variant``'s libraries."""
    if variant == "checked":
        return {}
    cxx = compiler()

    def runtime_library(name: str) -> str:
        return _run([cxx, f"-print-file-name={name}"], "locate the sanitizer runtime").strip()

    if variant == "asan":
        preload = [runtime_library("libasan.so"), runtime_library("libubsan.so")]
        return {
            "LD_PRELOAD": " ".join(preload),
            "ASAN_OPTIONS": "detect_leaks=0:halt_on_error=1:abort_on_error=0:exitcode=86",
            "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1:exitcode=86",
        }
    return {
        "LD_PRELOAD": runtime_library("libtsan.so"),
        "TSAN_OPTIONS": "halt_on_error=1:exitcode=86:report_signal_unsafe=0",
    }
