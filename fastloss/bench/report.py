"""``python -m fastloss bench``: fastloss against its peers and the memory floor, in one run.

For each loss, op (forward, gradient, fused), size and device, every contender of ``peers`` is
warmed up once (JIT and NVRTC compilation, first-touch page faults), then timed with
``time.perf_counter`` until it has ``--repeats`` samples and has used ``--budget`` seconds; the
median is reported with its spread (interquartile range / median; over ``NOISY_SPREAD`` the row
is flagged noisy). Alongside: effective bandwidth (bytes the op must move / median time), the
ratio to the memory floor (median / time of a copy that moves those bytes, measured in the same
run on the same device), fastloss's speed-up over each peer, and the relative error of the loss
against a float64 reference. Results go to the terminal, and with ``--json`` / ``--plot`` to a
file each.

The softmax functions (``softmax``, ``log_softmax``, ``softmax_backward``,
``log_softmax_backward``) are rows too, chosen by name with ``--losses`` like a loss, with one op,
``call`` (the function, its output into ``out=``); their relative error is max |output - ref| /
max |ref| over the output array, ref computed in float64 from the same float32 inputs. They run
by default and in ``--quick``, whose ops are ``fused`` and ``call``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import math
import os
import platform
import statistics
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fastloss.bench import peers

SCHEMA = "fastloss-bench/2"
# A row whose interquartile range exceeds this share of its median is flagged noisy.
NOISY_SPREAD = 0.10
# The kinds of contender a fastloss row is compared with, column by column.
COMPARED = ("peer", "bound")
# Every loss also runs LATENCY_SIZES, and its row-width sweep (its spec's sweep).
# Shapes where a call's fixed cost (argument checks, dispatch, thread start)
# is most of its time; at most TINY_ELEMENTS elements go in the latency table.
LATENCY_SIZES = ["64x10", "256x128"]
TINY_ELEMENTS = 1 << 15
QUICK_PEERS = ("numpy-expr", "cupy-expr")
QUICK_OPS = ("fused", "call")
OP_TITLES = {"forward": "loss", "gradient": "gradient", "fused": "loss and gradient",
             "call": "output into out="}
FULL_HEADER = ["shape", "implementation", "time", "spread", "GB/s", "x floor", "fastloss x",
               "rel err"]
QUICK_HEADER = ["loss", "backend", "op", "shape", "time", "spread", "GB/s", "x floor", "vs NumPy",
                "rel err"]
SUMMARY_HEADER = ["op", "shape", "backend", "time", "spread", "floor", "x floor"]
REFERENCE_CHUNK = 1 << 22  # elements made float64 at a time: bounds the reference's memory


# ---------------------------------------------------------------------------------------------
# Measuring


def time_thunk(thunk: Callable[[], Any], *, repeats: int, budget: float,
               max_repeats: int = 200) -> tuple[Any, list[float]]:
    """The warm-up call's result and at least ``repeats`` timings (more while within ``budget``)."""
    result = thunk()
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < max(1, repeats) or (
        len(times) < max_repeats and time.perf_counter() - started < budget
    ):
        begin = time.perf_counter()
        thunk()
        times.append(time.perf_counter() - begin)
    return result, times


def _reference_blocks(inputs: peers.Inputs):
    """``(rows, reference)`` per block of rows: the spec's float64 reference of the block
    (``first``, and ``second`` when it holds floats, made float64), the rows a slice."""
    spec = peers.spec(inputs.loss)
    xp, (rows, cols) = inputs.xp, inputs.shape
    step = max(1, REFERENCE_CHUNK // cols)
    for start in range(0, rows, step):
        block = slice(start, start + step)
        second = None if inputs.second is None else inputs.second[block]
        if second is not None and second.dtype.kind == "f":
            second = second.astype(xp.float64)
        yield block, spec.reference(xp, inputs.first[block].astype(xp.float64), second)


def reference_loss(inputs: peers.Inputs) -> float | None:
    """The mean loss computed in float64 by the loss's spec, a block of rows at a time; None
    for a function (its output is checked as an array, ``array_error``)."""
    count = peers.spec(inputs.loss).count
    if count is None:
        return None
    return sum(total for _, total in _reference_blocks(inputs)) / count(inputs.shape)


def relative_error(value: float | None, reference: float) -> float | None:
    if value is None:
        return None
    return abs(value - reference) / abs(reference) if reference else abs(value)


def array_error(inputs: peers.Inputs, output) -> float:
    """A function's error: max |output - ref| / max |ref| (max |output| where ref is all 0),
    ref its float64 output from the same float32 inputs, a block of rows at a time."""
    xp = inputs.xp
    output = xp.asarray(output)
    if tuple(output.shape) != tuple(inputs.shape):
        raise ValueError(f"{inputs.loss} returned shape {output.shape}, not {inputs.shape}")
    errors, scales = [], []
    for rows, reference in _reference_blocks(inputs):
        errors.append(float(xp.abs(output[rows] - reference).max()))
        scales.append(float(xp.abs(reference).max()))
    error, scale = float(np.max(errors)), float(np.max(scales))  # np.max keeps a NaN
    return error / scale if scale else error


def measure(impl: peers.Impl, inputs: peers.Inputs, reference: float | None, *, repeats: int,
            budget: float) -> tuple[dict, list[float]]:
    """One round of one contender: its row (loss value and error; timings left to
    ``merge_rounds``) and the seconds of each timed call (none if it failed)."""
    row = {
        "loss": impl.loss, "op": impl.op, "device": impl.device, "shape": list(inputs.shape),
        "elements": inputs.shape[0] * inputs.shape[1], "dtype": np.dtype(peers.DTYPE).name,
        "impl": impl.name, "kind": impl.kind, "backend": impl.backend,
        "bytes": peers.op_bytes(impl.loss, impl.op, inputs.shape),
        "median_s": None, "min_s": None, "q1_s": None, "q3_s": None, "spread": None,
        "noisy": None, "repeats": 0, "gbps": None, "x_floor": None,
        "loss_value": None, "reference": reference, "rel_err": None, "speedup": None,
        "error": None,
    }
    try:
        result, times = time_thunk(impl.prepare(inputs), repeats=repeats, budget=budget)
        if impl.kind not in peers.UNCHECKED:
            if impl.op == "call":
                row["rel_err"] = array_error(inputs, result)
            else:
                row["loss_value"] = peers.loss_value(result, impl.op)
                row["rel_err"] = relative_error(row["loss_value"], reference)
        del result
    except Exception as exc:  # one contender failing (no memory, a bug) must not end the run
        row["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        return row, []
    return row, times


def merge_rounds(rounds: list[tuple[dict, list[float]]]) -> dict:
    """One contender's ``measure`` results of every round as one row (the first failed
    round's, if any failed): ``median_s`` the median of the rounds' medians; ``min_s``,
    ``q1_s`` and ``q3_s`` over every timed call; ``spread`` (q3 - q1) / median and ``noisy``
    (spread > NOISY_SPREAD), both None below two calls."""
    failed = next((row for row, _ in rounds if row["error"]), None)
    if failed is not None:
        return failed
    row = dict(rounds[0][0])
    times = [seconds for _, round_times in rounds for seconds in round_times]
    median = statistics.median(statistics.median(round_times) for _, round_times in rounds)
    row.update(median_s=median, min_s=min(times), repeats=len(times),
               gbps=row["bytes"] / median / 1e9)
    if len(times) > 1:
        q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive")
        spread = (q3 - q1) / median
        row.update(q1_s=q1, q3_s=q3, spread=spread, noisy=spread > NOISY_SPREAD)
    return row


def add_ratios(rows: list[dict]) -> None:
    """x_floor for every row, and for fastloss rows the speed-up over each peer of their case."""
    cases: dict[tuple, list[dict]] = {}
    for row in rows:
        key = (row["device"], row["loss"], row["op"], tuple(row["shape"]))
        cases.setdefault(key, []).append(row)
    for case in cases.values():
        timed = [row for row in case if row["median_s"]]
        floor = next((row for row in timed if row["kind"] == "floor"), None)
        for row in timed:
            if floor is not None:
                row["x_floor"] = row["median_s"] / floor["median_s"]
            if row["kind"] == "fastloss":
                row["speedup"] = {
                    peer["impl"]: peer["median_s"] / row["median_s"]
                    for peer in timed if peer["kind"] in COMPARED
                }


# ---------------------------------------------------------------------------------------------
# Planning and running


class Progress:
    """A one-line bar on stderr when it is a terminal, one line per step otherwise."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.done, self.enabled = total, 0, enabled
        self.tty = sys.stderr.isatty()
        self.started = time.perf_counter()

    def step(self, label: str) -> None:
        self.done += 1
        if not self.enabled:
            return
        width = 24
        filled = width * self.done // max(1, self.total)
        elapsed = time.perf_counter() - self.started
        line = (f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                f"{elapsed:5.0f}s  {label}")
        if self.tty:
            sys.stderr.write("\r" + line[:120].ljust(120))
            if self.done == self.total:
                sys.stderr.write("\n")
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


def wanted(impl: peers.Impl, args) -> bool:
    if impl.kind == "fastloss":
        return impl.backend in args.backends
    if impl.kind in COMPARED:
        return args.peers is None or impl.name in args.peers
    return True


def loss_ops(loss: str, args) -> list[str]:
    """The ops of ``--ops`` that ``loss`` has (a softmax function has only ``call``)."""
    return [op for op in args.ops if op in peers.spec(loss).ops]


def selected_impls(loss: str, op: str, device: str, args) -> list[peers.Impl]:
    return [i for i in peers.implementations(loss, op, device) if wanted(i, args) and not i.missing]


def not_run(args) -> list[str]:
    """One line per wanted contender, unavailable backend or output that cannot be made here:
    ``"name (device): reason"``, the reason naming what to install where a package is missing."""
    lines = {
        f"{impl.name} ({impl.device}): {impl.missing}"
        for device in run_devices(args) for loss in args.losses for op in loss_ops(loss, args)
        for impl in peers.implementations(loss, op, device) if impl.missing and wanted(impl, args)
    }
    lines |= {f"fastloss[{name}] ({peers.backend_device(name)}): {reason}"
              for name, (ok, reason) in peers.backend_status().items() if not ok}
    no_plot = args.plot and peers.missing_module("matplotlib")
    if no_plot:
        lines.add(f"--plot {args.plot}: {no_plot}")
    return sorted(lines)


def run_devices(args) -> list[str]:
    return [d for d in peers.DEVICES if any(peers.backend_device(b) == d for b in args.backends)]


def sweep_shapes(loss: str, args) -> list[tuple[int, int]]:
    """The row-width sweep of ``loss`` at ``--sweep-elements`` (none when 0)."""
    if not args.sweep_elements:
        return []
    widths = peers.spec(loss).sweep if args.sweep_classes is None else args.sweep_classes
    return peers.sweep_shapes(widths, args.sweep_elements)


def shapes(loss: str, args) -> list[tuple[int, int]]:
    """Every shape of ``loss`` to run, in order, each once."""
    if args.sizes:
        sizes = args.sizes
    elif args.quick:
        sizes = list(peers.spec(loss).quick_sizes)
    else:
        sizes = LATENCY_SIZES + list(peers.spec(loss).sizes)
    listed = [peers.shape_for(loss, size, args.classes) for size in sizes]
    return list(dict.fromkeys(listed + sweep_shapes(loss, args)))


def plan(args) -> list[tuple[str, str, tuple[int, int], list[tuple[str, list[peers.Impl]]]]]:
    """``[(device, loss, shape, [(op, impls)])]`` in run order, devices of the chosen backends."""
    steps = []
    for device in run_devices(args):
        for loss in args.losses:
            for shape in shapes(loss, args):
                ops = [(op, selected_impls(loss, op, device, args))
                       for op in loss_ops(loss, args)]
                steps.append((device, loss, shape, ops))
    return steps


def run(args) -> list[dict]:
    steps = plan(args)
    total = args.rounds * sum(len(impls) for *_, ops in steps for _, impls in ops)
    progress = Progress(total, enabled=not args.quiet)
    rows = []
    for device, loss, shape, ops in steps:
        inputs = peers.make_inputs(loss, shape, device)
        reference = reference_loss(inputs)
        # Rounds go through every contender of a shape in turn, so that load
        # from elsewhere on the machine falls on all of them alike.
        rounds: dict[tuple[str, str], list[tuple[dict, list[float]]]] = {}
        for _ in range(args.rounds):
            for op, impls in ops:
                for impl in impls:
                    progress.step(f"{loss} {op} {peers.shape_label(shape)} {device} {impl.name}")
                    rounds.setdefault((op, impl.name), []).append(
                        measure(impl, inputs, reference, repeats=args.repeats,
                                budget=args.budget))
        rows += [merge_rounds(measured) for measured in rounds.values()]
        del inputs
    add_ratios(rows)
    return rows


# ---------------------------------------------------------------------------------------------
# Output


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value / 1e-9:.3g} ns"


def _number(value: float | None, pattern: str) -> str:
    if value is None:
        return "-"
    if not math.isfinite(value):
        return str(value)
    return format(value, pattern)


def _spread(row: dict) -> str:
    """``"4.2%"``, ``"18% noisy"`` or ``"-"`` (one timed call, or failed)."""
    if row["spread"] is None:
        return "-"
    percent = 100 * row["spread"]
    return f"{percent:.{1 if percent < 10 else 0}f}%" + (" noisy" if row["noisy"] else "")


def _table(header: Sequence[str], lines: list[Sequence[str]], indent: str = "  ") -> str:
    widths = [max(len(cell) for cell in column) for column in zip(header, *lines, strict=True)]

    def render(cells):
        padded = (f"{cell:{'<' if i < 2 else '>'}{width}}"
                  for i, (cell, width) in enumerate(zip(cells, widths, strict=True)))
        return (indent + "  ".join(padded)).rstrip()

    rule = ["-" * width for width in widths]
    return "\n".join(render(cells) for cells in [header, rule, *lines])


def _case_lines(case: list[dict]) -> tuple[list[list[str]], list[str]]:
    """Table lines of one (device, loss, op, shape), and notes on the contenders that failed."""
    label = peers.shape_label(tuple(case[0]["shape"]))
    fastest = min((r["median_s"] for r in case if r["kind"] == "fastloss" and r["median_s"]),
                  default=None)
    lines, failures = [], []
    for row in case:
        name = row["impl"] if row["kind"] != "floor" else "floor (copy)"
        if row["error"]:
            lines.append([label, name, "failed", "-", "-", "-", "-", "-"])
            failures.append(f"  {row['impl']} at {label}: {row['error']}")
        else:
            over = row["median_s"] / fastest if fastest and row["kind"] in COMPARED else None
            lines.append([
                label, name, _seconds(row["median_s"]), _spread(row), _number(row["gbps"], ".3g"),
                _number(row["x_floor"], ".3g"), _number(over, ".3g"),
                _number(row["rel_err"], ".1e"),
            ])
        label = ""
    return lines, failures


def full_table(rows: list[dict]) -> str:
    """One block per (device, loss, op): every size, every contender."""
    cases: dict[tuple, list[dict]] = {}
    for row in rows:
        cases.setdefault((row["device"], row["loss"], row["op"]), {}).setdefault(
            tuple(row["shape"]), []).append(row)
    blocks = []
    for (device, loss, op), by_shape in cases.items():
        lines, failures = [], []
        for case in by_shape.values():
            case_lines, case_failures = _case_lines(case)
            lines += case_lines
            failures += case_failures
        title = f"{loss} / {op} ({OP_TITLES[op]}, {device}, float32)"
        blocks.append("\n".join([title, _table(FULL_HEADER, lines), *failures]))
    return "\n\n".join(blocks)


def quick_table(rows: list[dict]) -> str:
    """One line per (loss, fastloss backend, op, size): the README's table."""
    lines, failures = [], []
    for row in rows:
        if row["kind"] != "fastloss":
            continue
        speedup = row["speedup"] or {}
        expression = speedup.get("numpy-expr", speedup.get("cupy-expr"))
        if row["error"]:
            failures.append(f"{row['loss']} {row['op']} {row['backend']}: {row['error']}")
        lines.append([
            row["loss"], row["backend"], row["op"], peers.shape_label(row["shape"]),
            _seconds(row["median_s"]) if not row["error"] else "failed", _spread(row),
            _number(row["gbps"], ".3g"), _number(row["x_floor"], ".3g"),
            _number(expression, ".3g"), _number(row["rel_err"], ".1e"),
        ])
    return "\n".join([_table(QUICK_HEADER, lines, indent=""), *failures])


def summary_table(rows: list[dict], wanted: dict[str, list[tuple[int, int]]]) -> str:
    """Per loss, one line per (device, op, shape) of ``wanted`` (shapes per
    loss) and fastloss backend: time, the floor, and how many times faster
    fastloss is than each of the loss's peers."""
    blocks = []
    for loss, loss_shapes in wanted.items():
        case = [row for row in rows if row["loss"] == loss and tuple(row["shape"]) in loss_shapes]
        peer_names = list(dict.fromkeys(
            row["impl"] for row in case if row["kind"] in COMPARED and row["median_s"]
        ))
        header = [*SUMMARY_HEADER, *(f"x {name}" for name in peer_names)]
        lines = []
        for row in case:
            if row["kind"] != "fastloss":
                continue
            floor = row["median_s"] / row["x_floor"] if row["x_floor"] else None
            speedup = row["speedup"] or {}
            lines.append([
                row["op"], peers.shape_label(row["shape"]), f"{row['backend']} ({row['device']})",
                _seconds(row["median_s"]) if not row["error"] else "failed", _spread(row),
                _seconds(floor),
                _number(row["x_floor"], ".3g"),
                *(_number(speedup.get(name), ".3g") for name in peer_names),
            ])
        if lines:
            blocks.append(f"{loss}\n" + _table(header, lines))
    return "\n\n".join(blocks)


def environment_line(info: dict) -> str:
    """The report's first line: where it ran and on how many threads."""
    threads = f"numba {info['numba_threads']}"
    if "torch_threads" in info:
        threads += f", torch {info['torch_threads']}"
    gpu = f", GPU {info['gpu']}" if info["gpu"] else ""
    return (f"fastloss {info['versions']['fastloss']} on {info['processor']} with "
            f"{info['cpu_count']} cores{gpu}; threads: {threads}; float32, mean reduction")


NOISY_NOTE = (f"noisy: the spread is over {NOISY_SPREAD:.0%} of the time, so that time and the "
              "ratios built on it can be off by as much. Rerun with --rounds 3 (or more) and a "
              "larger --budget, on a quieter machine.")
BOUND_NOTE = ("exp-only and log-only are bounds, not peers: the op's exponential or log alone, "
              "once per element, with fastloss's vector math on its threads, reading the op's "
              "inputs and writing one array (fastloss.bench.bounds). On their lines fastloss x "
              "and in the x exp-only and x log-only columns, below 1, 1 / x is how many times "
              "that cost fastloss takes; the bound's own x floor says whether that cost is "
              "arithmetic or memory.")
NUMPY_BACKEND_NOTE = ("backend numpy is fastloss's pure-NumPy reference implementation (float64, "
                      "written to be obviously right), not tuned for speed; numba is the fast CPU "
                      "backend.")


def legend(columns: Sequence[str], info: dict) -> str:
    """What each of ``columns`` (table headers; ``x <peer>`` for the summaries' peer columns)
    means, wrapped to 100 characters."""
    floor = ("np.copyto of a float32 array of half the op's bytes, so that it reads and writes "
             "exactly those bytes (on a GPU: cupy.copyto, device to device), timed in this run")
    count = info["numba_threads"]
    threads = f"{count} thread" + ("s" if count != 1 else "")
    meanings = {
        "time": "median wall time of one call: at least --repeats timed calls after an untimed "
                "warm-up (JIT compilation, first touch of memory), more while within --budget "
                "seconds; with --rounds R, the median of the R rounds' medians",
        "spread": f"interquartile range of those calls (q3 - q1) as % of time; noisy: over "
                  f"{NOISY_SPREAD:.0%}",
        "GB/s": "bytes the op must move (each input read once, the gradient or a function's "
                "output written once) / time",
        "floor": "time of the floor copy (see x floor)",
        "x floor": f"time / time of the floor copy: {floor}. NumPy copies on one thread while "
                   f"fastloss's numba kernels run on {threads}, so below 1 "
                   "means beating one core's copy; likelier at sizes that fit in the cores' "
                   "caches together but not in one core's",
        "fastloss x": "on a peer's line: its time / the fastest fastloss backend's time, i.e. how "
                      "many times faster fastloss is",
        "vs NumPy": "time of the NumPy expression a user writes (on a GPU, CuPy's) / this row's "
                    "time: how many times faster fastloss is",
        "x <peer>": "that peer's time / this row's time: how many times faster fastloss is",
        "rel err": "|loss - ref| / |ref|, ref the loss computed in float64 from the same float32 "
                   "inputs; for a softmax function (op call) max |output - ref| / max |ref| over "
                   "its output array; - for the gradient alone",
    }
    named = {"x <peer>" if column.startswith("x ") and column != "x floor" else column
             for column in columns}
    lines = ["columns:"]
    for name, meaning in meanings.items():
        if name in named:
            lines += textwrap.wrap(f"{name:10} {meaning}", width=98, initial_indent="  ",
                                   subsequent_indent=" " * 13)
    return "\n".join(lines)


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment(args) -> dict:
    import numba

    import fastloss

    info = {
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "python": platform.python_version(),
        "numba_threads": numba.get_num_threads(),
        "versions": {name: _version(name) for name in
                     ("numpy", "numba", "torch", "cupy-cuda13x", "cupy-cuda12x", "liger-kernel")},
        "gpu": None,
    }
    info["versions"]["fastloss"] = fastloss.__version__
    if "torch" in sys.modules:
        info["torch_threads"] = sys.modules["torch"].get_num_threads()
    if "cuda" in args.backends:
        import cupy

        name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
        info["gpu"] = name.decode() if isinstance(name, bytes) else str(name)
    return info


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


def write_json(path: str, rows: list[dict], skipped: list[str], args, info: dict) -> None:
    """Every row, the ``environment`` ``info``, the options and what did not run, as JSON."""
    document = {
        "schema": SCHEMA,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "environment": info,
        "noisy_spread": NOISY_SPREAD,
        "backends": {name: {"available": ok, "detail": detail}
                     for name, (ok, detail) in peers.backend_status().items()},
        "options": {"quick": args.quick, "losses": args.losses, "ops": args.ops,
                    "backends": args.backends, "peers": args.peers, "sizes": args.sizes,
                    "classes": args.classes, "sweep_elements": args.sweep_elements,
                    "sweep_classes": args.sweep_classes, "rounds": args.rounds,
                    "repeats": args.repeats,
                    "budget_s": args.budget},
        "not_run": skipped,
        "results": [{k: _finite(v) for k, v in row.items()} for row in rows],
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(document, indent=1) + "\n")


def _series_name(row: dict, several_devices: bool) -> str:
    if row["kind"] == "floor":
        return f"copy bandwidth ({row['device']})"
    return row["impl"] + (f" ({row['device']})" if several_devices else "")


def _draw(axis, series: dict[str, list[tuple[float, float]]], colours: dict, title: str,
          xlabel: str, ylabel: str) -> None:
    """One log-log panel: a line per contender, the copy bandwidth dashed, bounds dotted."""
    from matplotlib.ticker import NullFormatter

    for name, points in series.items():
        xs, ys = zip(*sorted(points), strict=True)
        if name.startswith("copy bandwidth"):
            axis.plot(xs, ys, "k--", linewidth=1.6, label=name)
        else:
            ours = name.startswith("fastloss")
            axis.plot(xs, ys, marker="o", markersize=4 if ours else 3,
                      linewidth=2.2 if ours else 1.0, color=colours[name], label=name,
                      linestyle=":" if name.split(" ")[0] in peers.BOUND_NAMES else "-")
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.xaxis.set_minor_formatter(NullFormatter())
    axis.yaxis.set_minor_formatter(NullFormatter())
    axis.set_title(title, fontsize=10)
    axis.set_xlabel(xlabel, fontsize=9)
    axis.set_ylabel(ylabel, fontsize=9)
    axis.tick_params(labelsize=8)
    axis.grid(True, which="both", alpha=0.25)


def _panels(rows: list[dict], sweeps: dict, tiny: dict, several_devices: bool) -> list[tuple]:
    """``(title, xlabel, ylabel, series)`` per panel: GB/s against size per (loss,
    op); GB/s against the row width per swept loss; time per call for tiny shapes."""
    def series_of(selected, x, y):
        series: dict[str, list[tuple[float, float]]] = {}
        for row in selected:
            if row["median_s"]:
                series.setdefault(_series_name(row, several_devices), []).append((x(row), y(row)))
        return series

    def gbps(row):
        return row["gbps"]

    panels = []
    for loss, op in dict.fromkeys((r["loss"], r["op"]) for r in rows):
        # The sweep's shapes share one element count: they have a panel of their own.
        case = [r for r in rows if (r["loss"], r["op"]) == (loss, op)
                and tuple(r["shape"]) not in sweeps.get(loss, ())]
        panels.append((f"{loss} / {op}", "elements (float32)", "effective GB/s",
                       series_of(case, lambda r: r["elements"], gbps)))
    ops = {}  # per loss, the op of its sweep and latency panels: fused where it ran
    for row in rows:
        ops[row["loss"]] = "fused" if row["op"] == "fused" else ops.get(row["loss"], row["op"])
    for loss, widths in sweeps.items():
        op = ops.get(loss)
        swept = [r for r in rows if (r["loss"], r["op"]) == (loss, op)
                 and tuple(r["shape"]) in widths]
        if swept:
            elements = min(r["elements"] for r in swept)
            panels.append((f"{loss} / {op}, {elements:.3g}+ elements", "classes k (row width)",
                           "effective GB/s", series_of(swept, lambda r: r["shape"][1], gbps)))
    for loss, small in tiny.items():
        op = ops.get(loss)
        latency = [r for r in rows if (r["loss"], r["op"]) == (loss, op)
                   and tuple(r["shape"]) in small and r["kind"] != "floor"]
        if latency:
            panels.append((f"latency: {loss} / {op}", "elements (float32)", "time per call (us)",
                           series_of(latency, lambda r: r["elements"],
                                     lambda r: r["median_s"] * 1e6)))
    return panels


def write_plot(path: str, rows: list[dict], sweeps: dict | None = None,
               tiny: dict | None = None) -> None:
    """GB/s against size, one panel per (loss, op), the copy bandwidth as the
    roofline; then GB/s against the row width for each swept loss (``sweeps``:
    shapes per loss) and time per call for tiny shapes (``tiny``: shapes per loss)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    several_devices = len({r["device"] for r in rows}) > 1
    names = list(dict.fromkeys(_series_name(r, several_devices) for r in rows))
    palette = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    colours = {name: palette(i) for i, name in enumerate(names)}
    panels = _panels(rows, sweeps or {}, tiny or {}, several_devices)
    columns = min(3, len(panels))
    lines = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(lines, columns, squeeze=False,
                                figsize=(4.6 * columns, 3.6 * lines))
    for axis, (title, xlabel, ylabel, series) in zip(axes.flat, panels, strict=False):
        _draw(axis, series, colours, title, xlabel, ylabel)
    for axis in list(axes.flat)[len(panels):]:
        axis.set_visible(False)
    handles = {}
    for axis in axes.flat:
        for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    legend_columns = 5
    figure.legend(list(handles.values()), list(handles), loc="lower center",
                  ncol=legend_columns, fontsize=8, frameon=False)
    legend_share = 0.05 * math.ceil(len(handles) / legend_columns) / lines
    figure.tight_layout(rect=(0, legend_share + 0.02, 1, 1))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)


# ---------------------------------------------------------------------------------------------
# Command line


def _host_memory_bytes() -> int | None:
    """This machine's physical memory, None where the system does not say (no sysconf)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def memory_error(loss: str, shape: tuple[int, int]) -> str | None:
    """Why a ``shape`` input of ``loss`` cannot be made in this machine's memory (one float32
    array of it is larger), else None: checked before a run, where an allocation would fail
    with a traceback in it."""
    memory = _host_memory_bytes()
    if memory and shape[0] * shape[1] * 4 > memory:
        return (f"a {shape[0]}x{shape[1]} {loss} input, more than this machine's "
                f"{memory / 2**30:.0f} GiB memory")
    return None


def output_path_error(path: str | None) -> str | None:
    """Why ``path`` cannot take a file the run will write (a missing folder, a folder of that
    name), else None: checked before the run, since a path that fails afterwards wastes it."""
    if not path:
        return None
    if os.path.isdir(path):
        return f"{path!r} is a folder; give a file name"
    folder = os.path.dirname(os.path.abspath(path))
    return None if os.path.isdir(folder) else f"no folder {folder!r}"


def plot_format_error(path: str | None) -> str | None:
    """Why matplotlib cannot save a figure under ``path``'s extension, else None (no
    extension: matplotlib's default format)."""
    extension = os.path.splitext(path or "")[1][1:].lower()
    if not extension or peers.missing_module("matplotlib"):
        return None
    from matplotlib.figure import Figure

    formats = Figure().canvas.get_supported_filetypes()
    if extension in formats:
        return None
    return f"matplotlib cannot write .{extension} files; name one of: {', '.join(sorted(formats))}"


def write_or_exit(command: str, path: str, write: Callable[[str], None]) -> None:
    """``write(path)``; any OSError (a read-only folder, a full disk) exits with one line
    naming ``path``, which the error may not name itself (a failed write has no filename)."""
    try:
        write(path)
    except OSError as exc:
        raise SystemExit(f"{command}: cannot write {path}: {exc.strerror or exc}") from None


def _names(text: str) -> list[str]:
    return [part for part in text.replace(",", " ").split() if part]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fastloss bench",
        description="Time fastloss against NumPy, PyTorch, crysx_nn-style functions, the "
                    "memory floor and, for the losses with an exponential or a log per element, "
                    "that function alone (exp-only, log-only); report GB/s, the ratio to the "
                    "floor, speed-ups and the loss's relative error against float64.",
        epilog="Two other reports, each with its own --help: --dask (fastloss.dask on 1- and "
               "2-worker LocalClusters) and --against REV (this checkout against git revision "
               "REV, alternating in one process).")
    parser.add_argument("--quick", action="store_true",
                        help="one size per loss, the fused op (a softmax function's call), the "
                             "array-expression peer only")
    losses = list(peers.specs())
    sweeps = {loss: spec.sweep for loss, spec in peers.specs().items() if spec.sweep}
    parser.add_argument("--sizes", nargs="+", metavar="SIZE",
                        help="ROWSxCOLS shapes or element counts (rows of 1024 for the "
                             "elementwise losses, of --classes for cross-entropy), for every loss")
    parser.add_argument("--losses", type=_names, default=None,
                        help=f"comma-separated losses and softmax functions: {', '.join(losses)} "
                             "(default: all that have one of --ops, but the variants of a "
                             "loss's options or targets, such as softmax_cross_entropy_smoothed)")
    parser.add_argument("--ops", type=_names, default=None,
                        help="comma-separated: forward, gradient, fused (a loss's), call (a "
                             "softmax function's) (default: all; --quick: fused, call)")
    parser.add_argument("--backends", type=_names, default=None,
                        help="fastloss backends (default: every available one)")
    parser.add_argument("--peers", type=_names, default=None,
                        help="peers (and bounds: exp-only, log-only) by name, or 'none' "
                             "(default: every installed one; --quick: numpy-expr, cupy-expr)")
    parser.add_argument("--classes", type=int, default=peers.DEFAULT_CLASSES,
                        help="cross-entropy row width for element-count sizes (default: 32000)")
    parser.add_argument("--sweep-elements", type=float, default=None, metavar="N",
                        help="also run each loss's row-width sweep at N elements, 0 for none "
                             f"(default: {peers.SWEEP_ELEMENTS} without --sizes or --quick)")
    parser.add_argument("--sweep-classes", type=_names, default=None, metavar="K,...",
                        help="the row widths of the sweep (default: "
                             + "; ".join(f"{loss}: {','.join(map(str, widths))}"
                                         for loss, widths in sweeps.items()) + ")")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed calls at least, after one warm-up (default: 5; --quick: 3)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="time every contender of a shape this many times in turn and "
                             "report the median of the rounds' medians (default: 1)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds of timed calls per case beyond --repeats (default: 1; "
                             "--quick: 0.3)")
    parser.add_argument("--json", metavar="PATH", help="write every measurement as JSON")
    parser.add_argument("--plot", metavar="PATH",
                        help="write a PNG: GB/s against size and against the row width, "
                             "time per call at tiny shapes")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    for option in ("losses", "ops", "backends", "peers", "sweep_classes"):
        if getattr(args, option) == []:  # "," or "": a list that names nothing
            parser.error(f"--{option.replace('_', '-')}: names nothing")
    if args.classes < 1:
        parser.error(f"--classes: must be 1 or more; got {args.classes}")
    for name in args.losses or []:
        if name not in losses:
            parser.error(f"--losses: unknown loss {name!r}; choose from {', '.join(losses)}")
    args.ops = args.ops or list(QUICK_OPS if args.quick else peers.OPS)
    for name in args.ops:
        if name not in peers.OPS:
            parser.error(f"--ops: unknown op {name!r}; choose from {', '.join(peers.OPS)}")
    args.ops = [op for op in peers.OPS if op in args.ops]
    for name in args.losses or []:
        if not loss_ops(name, args):
            parser.error(f"--ops: {name} has none of {', '.join(args.ops)}; its ops: "
                         f"{', '.join(peers.spec(name).ops)}")
    args.losses = [loss for loss in losses if loss in (args.losses or peers.own_losses())
                   and loss_ops(loss, args)]
    status = peers.backend_status()
    available = [name for name, (ok, _) in status.items() if ok]
    args.backends = args.backends or available
    for name in args.backends:
        if name not in status:
            parser.error(f"--backends: unknown backend {name!r}; choose from {', '.join(status)}")
        if name not in available:
            parser.error(f"--backends: {name} is not available: {status[name][1]}")
    if args.peers == ["all"]:
        args.peers = None
    elif args.peers == ["none"]:
        args.peers = []
    elif args.peers is None and args.quick:
        args.peers = list(QUICK_PEERS)
    for name in args.peers or []:
        if name not in peers.PEER_NAMES:
            parser.error(f"--peers: unknown peer {name!r}; choose from "
                         f"{', '.join(peers.PEER_NAMES)}, all, none")
    # The CPU backends' inputs are host arrays (cuda's are made on the device).
    on_host = bool(set(args.backends) - {"cuda"})
    if args.sizes is not None:
        args.sizes = [size for text in args.sizes for size in _names(text)]
        if not args.sizes:
            parser.error("--sizes: names nothing")
        for loss in args.losses:
            for size in args.sizes:
                try:
                    shape = peers.shape_for(loss, size, args.classes)
                except ValueError as exc:
                    parser.error(f"--sizes: {exc}")
                error = memory_error(loss, shape) if on_host else None
                if error:
                    parser.error(f"--sizes: {size} gives {error}")
    if args.sweep_elements is None:
        args.sweep_elements = 0 if args.sizes or args.quick else peers.SWEEP_ELEMENTS
    if not 0 <= args.sweep_elements < math.inf:  # NaN too
        parser.error(f"--sweep-elements: must be a count of 0 or more; got {args.sweep_elements}")
    args.sweep_elements = int(args.sweep_elements)
    if args.sweep_classes is not None:
        try:
            args.sweep_classes = tuple(int(width) for width in args.sweep_classes)
        except ValueError:
            parser.error(f"--sweep-classes: not whole numbers: {args.sweep_classes}")
        if min(args.sweep_classes, default=0) < 1:
            parser.error("--sweep-classes: row widths must be 1 or more")
    for loss in args.losses if on_host else ():
        for shape in sweep_shapes(loss, args):
            error = memory_error(loss, shape)
            if error:
                parser.error(f"--sweep-elements {args.sweep_elements} in rows of {shape[1]} "
                             f"give {error}")
    if args.rounds < 1:
        parser.error("--rounds: must be 1 or more")
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats: must be 1 or more")
    if args.budget is not None and not 0 <= args.budget < math.inf:  # NaN too
        parser.error(f"--budget: must be a finite number of seconds, 0 or more; got {args.budget}")
    for option, path in (("--json", args.json), ("--plot", args.plot)):
        error = output_path_error(path) or (option == "--plot" and plot_format_error(path))
        if error:
            parser.error(f"{option}: {error}")
    if args.repeats is None:
        args.repeats = 3 if args.quick else 5
    if args.budget is None:
        args.budget = 0.3 if args.quick else 1.0
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    rows = run(args)
    info = environment(args)  # after the run: torch's threads are known once it is imported
    print(environment_line(info) + "\n")
    print(quick_table(rows) if args.quick else full_table(rows))
    columns = list(QUICK_HEADER if args.quick else FULL_HEADER)
    sweeps = {loss: sweep_shapes(loss, args) for loss in args.losses}
    tiny = {loss: [shape for shape in shapes(loss, args) if shape[0] * shape[1] <= TINY_ELEMENTS
                   and shape not in sweeps[loss]] for loss in args.losses}
    if any(sweeps.values()):
        print(f"\nrow widths at {args.sweep_elements} elements (x peer: how many times faster "
              "fastloss is)\n" + summary_table(rows, sweeps))
    if any(tiny.values()):
        print(f"\nlatency: shapes of at most {TINY_ELEMENTS} elements\n"
              + summary_table(rows, tiny))
    if any(sweeps.values()) or any(tiny.values()):
        columns += [*SUMMARY_HEADER, "x <peer>"]
    notes = [NOISY_NOTE] * any(row["noisy"] for row in rows) + [NUMPY_BACKEND_NOTE] * any(
        row["backend"] == "numpy" for row in rows) + [BOUND_NOTE] * any(
        row["kind"] == "bound" for row in rows)
    for note in notes:
        print("\n" + textwrap.fill(note, width=98))
    print("\n" + legend(columns, info))
    skipped = not_run(args)
    if skipped:
        print("\nnot run here:\n" + "\n".join(f"  {line}" for line in skipped))
    if args.json:
        write_or_exit("fastloss bench", args.json,
                      lambda path: write_json(path, rows, skipped, args, info))
    if args.plot and not peers.missing_module("matplotlib"):
        write_or_exit("fastloss bench", args.plot,
                      lambda path: write_plot(path, rows, sweeps, tiny))
    return 0


if __name__ == "__main__":
    sys.exit(main())
