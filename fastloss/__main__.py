"""``python -m fastloss info`` (backends, devices, versions) and ``python -m fastloss bench``."""

from __future__ import annotations

import argparse
import importlib
import platform
import sys

from fastloss import __version__, _registry

_PEERS = ("numpy", "numba", "llvmlite", "cupy", "torch")


def info() -> int:
    print(f"fastloss {__version__}  Python {platform.python_version()}  {platform.machine()}")
    print("backends:")
    for name in _registry.BACKENDS:
        ok, detail = _registry.backend_status(name)
        print(f"  {name:6} {'available' if ok else 'unavailable':12} {detail}")
    print("libraries:")
    for name in _PEERS:
        try:
            version = getattr(importlib.import_module(name), "__version__", "?")
        except ImportError:
            version = "not installed"
        print(f"  {name:9} {version}")
    return 0


def bench(argv: list[str]) -> int:
    """Run ``fastloss.bench.report`` on ``argv`` (``--dask``: ``fastloss.bench.dask_report``;
    ``--against REV``: ``fastloss.bench.against``)."""
    if any(arg == "--against" or arg.startswith("--against=") for arg in argv):
        from fastloss.bench import against

        return against.main(argv)
    if "--dask" in argv:
        from fastloss.bench import dask_report

        return dask_report.main([arg for arg in argv if arg != "--dask"])
    from fastloss.bench import report

    return report.main(argv)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastloss")
    parser.add_argument("--version", action="version", version=f"fastloss {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="backends, availability and versions")
    # bench's own options (--help included) belong to fastloss.bench.report.
    commands.add_parser("bench", help="time every loss and backend against peers", add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.command == "info":
        if rest:
            parser.error(f"info takes no arguments; got {' '.join(rest)}")
        return info()
    return bench(rest)


if __name__ == "__main__":
    sys.exit(main())
