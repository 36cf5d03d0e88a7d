"""``python -m fastloss bench --dask``: fastloss.dask on 1- and 2-worker LocalClusters.

For each case (MSE; cross-entropy in row chunks; cross-entropy in class chunks, i.e.
vocabulary-parallel) at one size:

- the in-memory call (``fastloss.*_with_grad`` on NumPy arrays, numba with its default
  threads), median of ``--repeats`` timed calls after a warm-up;
- the same size on a LocalCluster of 1 and of 2 worker processes (one thread each,
  ``NUMBA_NUM_THREADS=1``): inputs generated and persisted on the workers first (not timed),
  then loss and gradient computed, the gradient kept in the workers' memory, median of
  ``--repeats`` runs after a warm-up. Speed-up: 1 worker's time / 2 workers'. Overhead:
  a cluster's time / the in-memory call's;
- the largest size that ran within the workers' memory limits (``--memory-limit`` per
  worker): sizes doubling from ``--sizes``' up to ``--max-bytes`` of logits/predictions,
  generated inside the graph and the gradient reduced on the workers (nothing gathered),
  on the 2-worker cluster; a size ran if no worker was killed or paused past the timeout.

Timings depend on the machine and on whatever else runs on it; the speed-up of 2 workers
over 1 is bounded by the cores the machine has.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np

import fastloss as fl
from fastloss.bench import peers, report

# name -> (loss function, classes or None, row chunk, column chunk); sizes are rows.
CASES = {
    "mse": (fl.mse_with_grad, None, 8192, -1),
    "cross_entropy/rows": (fl.softmax_cross_entropy_with_grad, 32000, 256, -1),
    "cross_entropy/classes": (fl.softmax_cross_entropy_with_grad, 32000, 1024, 8000),
}
COLUMNS = 1024  # MSE predictions are (rows, 1024)
DEFAULT_ROWS = {"mse": 65536, "cross_entropy/rows": 2048, "cross_entropy/classes": 2048}
QUICK_ROWS = {"mse": 16384, "cross_entropy/rows": 512, "cross_entropy/classes": 512}


def _columns(case: str) -> int:
    return CASES[case][1] or COLUMNS


def _numpy_inputs(case: str, rows: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    columns = _columns(case)
    first = (3 * rng.standard_normal((rows, columns))).astype(np.float32)
    if case == "mse":
        return first, rng.standard_normal((rows, columns)).astype(np.float32)
    return first, rng.integers(0, columns, rows)


def _dask_inputs(case: str, rows: int, seed: int = 0):
    import dask.array as da

    _, columns, row_chunk, column_chunk = CASES[case]
    columns = columns or COLUMNS
    rng = da.random.default_rng(seed)
    chunks = (row_chunk, column_chunk if column_chunk > 0 else columns)
    first = 3 * rng.standard_normal((rows, columns), chunks=chunks, dtype=np.float32)
    if case == "mse":
        return first, rng.standard_normal((rows, columns), chunks=chunks, dtype=np.float32)
    return first, rng.integers(0, columns, rows, chunks=row_chunk)


def _median_time(run: Callable[[], object], repeats: int) -> float:
    run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _cluster(workers: int, memory_limit: str):
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           memory_limit=memory_limit, dashboard_address=":0",
                           env={"NUMBA_NUM_THREADS": "1"})
    return cluster, Client(cluster)


def _time_on_cluster(client, case: str, rows: int, repeats: int) -> float:
    """Loss and gradient of persisted inputs; the gradient stays on the workers."""
    from distributed import wait

    inputs = client.persist(list(_dask_inputs(case, rows)))
    wait(inputs)

    def run():
        loss, grad = CASES[case][0](*inputs)
        grad = client.persist(grad)
        client.compute(loss, sync=True)
        wait(grad)

    return _median_time(run, repeats)


def _largest_size(client, case: str, rows: int, max_bytes: float, timeout: float):
    """``(rows, bytes, seconds)`` of the largest doubling of ``rows`` that ran, or None."""
    from distributed import wait
    from distributed.scheduler import KilledWorker

    largest = None
    while rows * _columns(case) * 4 <= max_bytes:
        loss, grad = CASES[case][0](*_dask_inputs(case, rows, seed=1))
        started = time.perf_counter()
        futures = client.compute([loss, grad.sum()])
        try:
            wait(futures, timeout=timeout)
            client.gather(futures)
        except (KilledWorker, TimeoutError) as exc:
            client.cancel(futures)
            print(f"  {case}: {rows} rows did not run ({type(exc).__name__})", file=sys.stderr)
            break
        largest = (rows, rows * _columns(case) * 4, time.perf_counter() - started)
        rows *= 2
    return largest


def run(args) -> list[dict]:
    results = []
    for case in args.cases:
        rows = args.rows[case]
        inputs = _numpy_inputs(case, rows)
        memory = _median_time(lambda: CASES[case][0](*inputs), args.repeats)  # noqa: B023
        results.append({"case": case, "shape": [rows, _columns(case)],
                        "bytes": rows * _columns(case) * 4, "memory_s": memory})
    for workers in (1, 2):
        cluster, client = _cluster(workers, args.memory_limit)
        with cluster, client:
            for result in results:
                result[f"workers{workers}_s"] = _time_on_cluster(
                    client, result["case"], result["shape"][0], args.repeats)
                if workers == 2:
                    result["largest"] = _largest_size(
                        client, result["case"], result["shape"][0], args.max_bytes,
                        args.timeout)
    for result in results:
        result["speedup"] = result["workers1_s"] / result["workers2_s"]
        result["overhead1"] = result["workers1_s"] / result["memory_s"]
        result["overhead2"] = result["workers2_s"] / result["memory_s"]
    return results


def table(results: list[dict], args) -> str:
    lines = [
        f"fastloss.dask, float32, loss + gradient; LocalCluster workers of 1 thread and "
        f"{args.memory_limit}; {os.cpu_count()} cores, {platform.machine()}",
        f"{'case':24}{'shape':>14}{'MB':>8}{'memory':>10}{'1 worker':>10}{'2 workers':>11}"
        f"{'speed-up':>10}{'overhead 1w/2w':>16}   largest that ran (2 workers)",
    ]
    for r in results:
        largest = "none"
        if r["largest"]:
            rows, size, seconds = r["largest"]
            largest = f"{rows}x{r['shape'][1]} ({size / 1e9:.2f} GB, {seconds:.1f} s)"
        lines.append(
            f"{r['case']:24}{'x'.join(map(str, r['shape'])):>14}{r['bytes'] / 1e6:8.0f}"
            f"{r['memory_s'] * 1e3:8.1f}ms{r['workers1_s'] * 1e3:8.1f}ms"
            f"{r['workers2_s'] * 1e3:9.1f}ms{r['speedup']:9.2f}x"
            f"{r['overhead1']:8.2f}x/{r['overhead2']:.2f}x   {largest}"
        )
    lines.append(f"largest: sizes doubling up to {args.max_bytes / 1e9:.2f} GB of inputs, "
                 "generated on the workers, gradient reduced there")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fastloss bench --dask",
        description="fastloss.dask on 1- and 2-worker LocalClusters against the in-memory call")
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 repeat")
    parser.add_argument("--cases", default=",".join(CASES),
                        help=f"comma-separated: {', '.join(CASES)}")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs (default: 3)")
    parser.add_argument("--memory-limit", default="2GiB", help="per worker (default: 2GiB)")
    parser.add_argument("--max-bytes", type=float, default=None,
                        help="largest input tried, bytes (default: 8e9; --quick: 1e9)")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds a size may take before it counts as not run")
    parser.add_argument("--json", metavar="PATH", help="write the measurements as JSON")
    args = parser.parse_args(argv)
    args.cases = [name for name in args.cases.replace(",", " ").split() if name]
    if not args.cases:
        parser.error("--cases: names nothing")
    for name in args.cases:
        if name not in CASES:
            parser.error(f"--cases: unknown case {name!r}; choose from {', '.join(CASES)}")
    args.rows = QUICK_ROWS if args.quick else DEFAULT_ROWS
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.max_bytes is None:
        args.max_bytes = 1e9 if args.quick else 8e9
    if args.repeats < 1:
        parser.error(f"--repeats: must be 1 or more; got {args.repeats}")
    if not 0 <= args.max_bytes < math.inf:  # NaN too; 0: no largest-size search
        parser.error(f"--max-bytes: must be a finite number, 0 or more; got {args.max_bytes}")
    if not 0 < args.timeout < math.inf:
        parser.error(f"--timeout: must be a finite number above 0; got {args.timeout}")
    try:
        from distributed.worker_memory import parse_memory_limit
    except ImportError:  # main says that distributed is missing
        parse_memory_limit = None
    if parse_memory_limit is not None:
        try:
            # LocalCluster's own reading: a size, "auto", a fraction of the memory, 0 for none.
            # Past this machine's memory, distributed's warning, as LocalCluster gives it.
            limit = parse_memory_limit(args.memory_limit, 1,
                                       logger=logging.getLogger("distributed.worker_memory"))
        except (ValueError, TypeError):
            limit = -1
        if limit is not None and limit < 0:
            parser.error(f"--memory-limit: not a size (such as 2GiB), 'auto', a fraction of "
                         f"the memory or 0; got {args.memory_limit!r}")
    error = report.output_path_error(args.json)
    if error:
        parser.error(f"--json: {error}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    absent = peers.missing_module("dask", "distributed")
    if absent:
        print(f"python -m fastloss bench --dask: {absent}", file=sys.stderr)
        return 2
    results = run(args)
    print(table(results, args))
    if args.json:
        def write_json(path):
            with open(path, "w") as file:
                json.dump({"schema": "fastloss-bench-dask/1", "results": results,
                           "memory_limit": args.memory_limit, "cpus": os.cpu_count()},
                          file, indent=1)

        report.write_or_exit("fastloss bench --dask", args.json, write_json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
