"""``python -m fastloss bench --against REV``: this checkout's kernels against git revision REV's.

On a shared machine a kernel's time wanders by tens of percent from run to run, more than most
changes to a kernel gain, so two runs of ``python -m fastloss bench`` cannot tell such a change
from noise. Here both versions run in one process, on one thread, their calls alternating, each
call timed by the CPU time of the calling thread (which other tenants' load hardly touches):

- REV's ``fastloss`` package is taken from git (``git archive``) into a temporary folder and
  imported as ``fastloss_against`` (every ``fastloss`` name in its sources renamed);
- both compile into a temporary Numba cache; Numba runs one thread (NUMBA_NUM_THREADS=1), so
  the calling thread's CPU time is all of a call's work;
- each version gets the same inputs and its own output buffer (``out=``), as in the bench.

The report gives each version's fastest and median call, ``this / REV`` (of the fastest calls;
below 1: this checkout is faster) and whether both gave the same bits (loss and output).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

AGAINST = "fastloss_against"


def package_at(revision: str, folder: Path) -> Path:
    """REV's ``fastloss`` package, renamed ``fastloss_against``, under ``folder``."""
    checkout = Path(__file__).resolve().parents[2]
    try:
        archive = subprocess.run(
            ["git", "-C", str(checkout), "archive", "--format=tar", revision, "fastloss"],
            check=True, capture_output=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", b"") or b""
        raise SystemExit(
            f"--against {revision}: needs a git checkout of fastloss that has that revision "
            f"({detail.decode(errors='replace').strip() or error})"
        ) from None
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    package = folder / AGAINST
    (folder / "fastloss").rename(package)
    for source in package.rglob("*.py"):
        source.write_text(re.sub(r"\bfastloss\b", AGAINST, source.read_text()))
    return package


def _same(a, b) -> bool:
    """Equal bits (NaN equal to NaN) for floats, arrays and tuples of them."""
    import numpy as np

    if isinstance(a, tuple):
        return isinstance(b, tuple) and len(a) == len(b) and all(map(_same, a, b))
    return bool(np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True))


def _thunk(peers, loss: str, op: str, backend: str, inputs):
    # Only fastloss's own contenders have a backend (REV's call their kind "fastloss_against").
    impl = next((impl for impl in peers.implementations(loss, op, "cpu")
                 if impl.backend == backend), None)
    if impl is None or impl.missing:
        raise SystemExit(f"{loss} {op} on {backend}: {impl.missing if impl else 'not there'}")
    return impl.prepare(inputs)


def _in_dtype(inputs, dtype: str):
    """``inputs`` with its floating arrays in ``dtype`` (integer labels stay as they are)."""
    def cast(array):
        return array if array is None or array.dtype.kind != "f" else array.astype(dtype)

    return dataclasses.replace(inputs, first=cast(inputs.first), second=cast(inputs.second))


def compare(loss: str, op: str, shape: tuple[int, int], backend: str, repeats: int,
            dtype: str = "float32") -> dict:
    import fastloss_against.bench.peers as their_peers

    from fastloss.bench import peers

    inputs = _in_dtype(peers.make_inputs(loss, shape, "cpu"), dtype)
    theirs = _in_dtype(their_peers.make_inputs(loss, shape, "cpu"), dtype)
    ours_call = _thunk(peers, loss, op, backend, inputs)
    their_call = _thunk(their_peers, loss, op, backend, theirs)
    same = _same(ours_call(), their_call())  # also the warm-up: compilation, first touch
    ours, their = [], []
    for _ in range(repeats):
        for call, times in ((ours_call, ours), (their_call, their)):
            start = time.thread_time()
            call()
            times.append(time.thread_time() - start)
    return {"loss": loss, "op": op, "shape": shape, "ours": ours, "theirs": their,
            "same": same}


def report_table(rows: list[dict], revision: str) -> str:
    from fastloss.bench.report import _seconds, _table

    header = ["loss", "op", "shape", "this min", "this median", f"{revision} min",
              f"{revision} median", f"this / {revision}", "same bits"]
    return _table(header, [
        [row["loss"], row["op"], f"{row['shape'][0]}x{row['shape'][1]}",
         _seconds(min(row["ours"])), _seconds(statistics.median(row["ours"])),
         _seconds(min(row["theirs"])), _seconds(statistics.median(row["theirs"])),
         f"{min(row['ours']) / min(row['theirs']):.2f}", "yes" if row["same"] else "no"]
        for row in rows
    ], indent="")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fastloss bench --against",
        description="Time this checkout's kernels against a git revision's, in one process, "
                    "on one thread, calls alternating; report both and whether bits agree.",
    )
    parser.add_argument("--against", required=True, metavar="REV",
                        help="a git revision of this checkout (main, HEAD~3, a tag, a hash)")
    parser.add_argument("--losses", default="softmax_cross_entropy",
                        help="comma-separated losses and softmax functions "
                             "(default: softmax_cross_entropy)")
    parser.add_argument("--op", default=None, choices=("forward", "gradient", "fused", "call"),
                        help="default: fused (call for a softmax function)")
    parser.add_argument("--backend", default="numba", choices=("numba", "numpy"))
    parser.add_argument("--sizes", nargs="+", default=["2621440"], metavar="SIZE",
                        help="ROWSxCOLS shapes or element counts (default: 2621440)")
    parser.add_argument("--classes", default="2,10,100,1000,32000", metavar="K,...",
                        help="row widths for element-count sizes (default: 2,10,100,1000,32000)")
    parser.add_argument("--repeats", type=int, default=20,
                        help="timed calls of each version (default: 20)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"),
                        help="the inputs' floating dtype (default: float32)")
    args = parser.parse_args(argv)
    from fastloss.bench import peers, report

    args.losses = [name for name in args.losses.split(",") if name]
    try:
        args.classes = [int(width) for width in args.classes.split(",") if width]
    except ValueError:
        parser.error(f"--classes: not whole numbers: {args.classes}")
    if not args.losses or not args.classes:
        parser.error("--losses and --classes must name at least one each")
    if min(args.classes) < 1:
        parser.error("--classes: row widths must be 1 or more")
    if args.repeats < 1:
        parser.error("--repeats: must be 1 or more")
    for loss in args.losses:
        try:
            ops = peers.spec(loss).ops
        except ValueError as exc:
            parser.error(f"--losses: {exc}")
        for size in args.sizes:
            for width in args.classes:
                try:
                    shape = peers.shape_for(loss, size, width)
                except ValueError as exc:
                    parser.error(f"--sizes: {exc}")
                error = report.memory_error(loss, shape)
                if error:
                    parser.error(f"--sizes: {size} gives {error}")
        if args.op is not None and args.op not in ops:
            parser.error(f"--op: {loss} has no {args.op!r}; its ops: {', '.join(ops)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    if "numba" in sys.modules:
        raise SystemExit("--against must set Numba's threads before Numba loads; run it as "
                         "python -m fastloss bench --against REV")
    with tempfile.TemporaryDirectory(prefix="fastloss-against-") as folder:
        os.environ["NUMBA_NUM_THREADS"] = "1"
        os.environ["NUMBA_CACHE_DIR"] = str(Path(folder) / "numba-cache")
        args = parse_args(argv)  # its checks load the bench specs, and with them Numba
        package_at(args.against, Path(folder))
        sys.path.insert(0, folder)
        from fastloss.bench import peers

        rows = []
        for loss in args.losses:
            op = args.op or ("call" if "call" in peers.spec(loss).ops else "fused")
            # A ROWSxCOLS size, or a loss with rows of its own width (the elementwise ones),
            # gives one shape whatever --classes says: each shape runs once.
            shapes = dict.fromkeys(peers.shape_for(loss, size, width)
                                   for size in args.sizes for width in args.classes)
            for shape in shapes:
                print(f"{loss} {op} {shape[0]}x{shape[1]} ...", file=sys.stderr, flush=True)
                rows.append(compare(loss, op, shape, args.backend, args.repeats, args.dtype))
    print(f"this checkout against {args.against}: one thread, CPU time of each call, "
          f"{args.repeats} calls each, alternating, {args.dtype}")
    print(report_table(rows, args.against))
    return 0


if __name__ == "__main__":
    sys.exit(main())
