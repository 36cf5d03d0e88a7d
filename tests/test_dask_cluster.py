"""fastloss.dask on dask.distributed clusters of two worker processes: results against the
in-memory call, the same loss bits as the synchronous scheduler, and arrays three times
larger than a worker's memory limit, computed without a worker exceeding it."""

import math
import sys

import numpy as np
import pytest
from test_dask import float64_losses

import fastloss as fl

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
if not sys.platform.startswith("linux"):
    pytest.skip("the memory checks read Linux's /proc", allow_module_level=True)

# A worker holds about 100 MiB with NumPy and dask loaded, about 230 MiB once numba has loaded
# fastloss's kernels. The out-of-core tests run the NumPy backend on a cluster that never
# loads numba, so that 3x a worker's limit stays small enough for CI.
MEMORY_LIMIT = 256 * 2**20
NUMBA_MEMORY_LIMIT = 1024 * 2**20
OUT_OF_CORE = 3.05 * MEMORY_LIMIT  # bytes of each large array
COMPUTE_TIMEOUT = 300  # seconds; a run takes 10-25 s on 2 busy cores


def _cluster(memory_limit):
    return distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, memory_limit=memory_limit,
        dashboard_address=":0", env={"NUMBA_NUM_THREADS": "1"},
    )


@pytest.fixture(scope="module")
def client():
    """Workers that run fastloss's default (numba) kernels."""
    with _cluster(NUMBA_MEMORY_LIMIT) as cluster, distributed.Client(cluster) as client:
        yield client


@pytest.fixture(scope="module")
def lean_client():
    """Workers of MEMORY_LIMIT that never load numba."""
    with _cluster(MEMORY_LIMIT) as cluster, distributed.Client(cluster) as client:
        yield client


@pytest.mark.parametrize("chunks", [(300, -1), (300, 64), (-1, 100)],
                         ids=["rows", "both", "classes"])
def test_cluster_results_match_the_in_memory_call(client, chunks):
    rng = np.random.default_rng(0)
    logits = (4 * rng.standard_normal((2000, 500))).astype(np.float32)
    labels = rng.integers(0, 500, 2000)
    labels[::7] = -100
    options = {"label_smoothing": 0.1, "weight": rng.random(500) + 0.5}
    lazy = da.from_array(logits, chunks=chunks)
    loss, grad, mse_loss, mse_grad = client.compute(
        [*fl.softmax_cross_entropy_with_grad(lazy, labels, **options),
         *fl.mse_with_grad(lazy, lazy * 0.5)], sync=True,
    )
    want_loss, want_grad = fl.softmax_cross_entropy_with_grad(logits, labels, **options)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
    np.testing.assert_allclose(grad, want_grad, rtol=2e-5, atol=1e-9)
    want_loss, want_grad = fl.mse_with_grad(logits, logits * 0.5)
    np.testing.assert_allclose(mse_loss, want_loss, rtol=1e-6)
    np.testing.assert_array_equal(mse_grad, want_grad)


def test_cluster_loss_has_the_bits_of_the_synchronous_scheduler(client):
    expected = dask.compute(float64_losses(), scheduler="synchronous")[0]
    assert tuple(client.compute(float64_losses(), sync=True)) == expected


# ---------------------------------------------------------------------------------------
# Out of core


def _pattern(rows, columns, period):
    """``(31 i + 17 j) % period`` as float32 for int32 rows ``i`` and columns ``j`` (NumPy or
    dask aranges; ``period`` a power of two): cheap to make in every chunk, and periodic in
    ``i``, so that the test can compute the exact loss of a huge array from ``period`` rows."""
    return ((31 * rows[:, None] + 17 * columns[None, :]) & (period - 1)).astype(np.float32)


def _lazy_pattern(shape, chunks, period):
    rows = da.arange(shape[0], chunks=chunks[0], dtype=np.int32)
    columns = da.arange(shape[1], chunks=chunks[1], dtype=np.int32)
    return _pattern(rows, columns, period)


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # Linux: reset the process's peak resident set (VmHWM)


def _peak_rss() -> int:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


class _Workers:
    """The cluster's workers must be the same processes after a computation, each with a
    peak resident set, from here on, below the memory limit: none was killed for memory,
    none exceeded it."""

    def __init__(self, client):
        self.client = client
        self.before = set(client.scheduler_info()["workers"])
        loaded = client.run(lambda: "numba" in __import__("sys").modules)
        assert not any(loaded.values()), "the lean workers loaded numba"
        client.run(_reset_peak_rss)

    def check(self):
        now = set(self.client.scheduler_info()["workers"])
        assert now == self.before, (
            f"workers gone {sorted(self.before - now)}, new {sorted(now - self.before)}; "
            f"last lines of the logs:\n{self._logs()}")
        loaded = self.client.run(lambda: "numba" in __import__("sys").modules)
        assert not any(loaded.values()), "the lean workers loaded numba"
        for address, used in self.client.run(_peak_rss).items():
            assert used < MEMORY_LIMIT, f"worker {address} peaked at {used / 2**20:.0f} MiB"


    def _logs(self) -> str:
        """The scheduler's and the nannies' last log lines: a nanny outlives its worker and
        logs why it restarted it (memory, a crash)."""
        lines = [f"scheduler {level}: {message}"
                 for level, message in self.client.get_scheduler_logs(n=10)]
        for nanny, log in self.client.get_worker_logs(n=10, nanny=True).items():
            lines += [f"nanny {nanny} {level}: {message}" for level, message in log]
        return "\n".join(lines)


def _compute(client, collections):
    """``client.compute(collections)``'s results; a TimeoutError, not a hang, when a worker
    paused at its memory limit stalls the computation."""
    futures = client.compute(collections)
    distributed.wait(futures, timeout=COMPUTE_TIMEOUT)
    return client.gather(futures)


def test_mse_out_of_core_gradient_to_zarr(lean_client, tmp_path):
    zarr = pytest.importorskip("zarr")
    columns, period = 1024, 1024
    rows = math.ceil(OUT_OF_CORE / (4 * columns))
    pred = _lazy_pattern((rows, columns), (1024, columns), period) / period
    assert pred.nbytes > 3 * MEMORY_LIMIT
    store = zarr.create_array(str(tmp_path / "grad.zarr"), shape=pred.shape,
                              chunks=(1024, columns), dtype=np.float32,
                              compressors=[zarr.codecs.BloscCodec(cname="lz4", clevel=1)])
    workers = _Workers(lean_client)
    loss, grad = fl.mse_with_grad(pred, pred * 0.5, backend="numpy")
    loss, _ = _compute(lean_client, [loss, da.store(grad, store, lock=False, compute=False)])
    workers.check()

    # Row i repeats row i % period: the float64 sum over one period of rows, times counts.
    def rows_of(first, last):
        values = _pattern(np.arange(first, last, dtype=np.int32),
                          np.arange(columns, dtype=np.int32), period) / np.float32(period)
        return values.astype(np.float64)

    counts = np.bincount(np.arange(rows) % period, minlength=period)
    per_row = ((rows_of(0, period) - rows_of(0, period).astype(np.float32) * 0.5) ** 2)
    want = (per_row.sum(axis=1) * counts).sum() / pred.size
    np.testing.assert_allclose(loss, want, rtol=1e-6)
    for first, last in [(0, 1024), (rows - 100, rows)]:
        p = rows_of(first, last)
        expected = ((2.0 / pred.size) * (p - p.astype(np.float32) * 0.5)).astype(np.float32)
        np.testing.assert_array_equal(store[first:last], expected)


def test_vocabulary_parallel_cross_entropy_out_of_core(lean_client):
    classes, period = 1000, 128
    rows = math.ceil(OUT_OF_CORE / (4 * classes))
    logits = _lazy_pattern((rows, classes), (2048, 500), period) / 10
    labels = da.arange(rows, chunks=2048) * 7 % classes
    assert logits.nbytes > 3 * MEMORY_LIMIT
    options = {"ignore_index": 7}  # smoothing and weights: tested on small arrays
    workers = _Workers(lean_client)
    loss, grad = fl.softmax_cross_entropy_with_grad(logits, labels, backend="numpy", **options)
    loss, row_sums = _compute(lean_client, [loss, grad.sum(axis=1, dtype=np.float64)])
    workers.check()

    # Every row's loss in float64 from its own logits, built row block by row block.
    z = _pattern(np.arange(period, dtype=np.int32), np.arange(classes, dtype=np.int32),
                 period) / np.float32(10)
    z = z.astype(np.float64)
    log_softmax = z - (z.max(1, keepdims=True)
                       + np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)))
    i = np.arange(rows)
    y = i * 7 % classes
    kept = y != 7
    want = -(log_softmax[i % period, y] * kept).sum() / kept.sum()
    np.testing.assert_allclose(loss, want, rtol=1e-6)
    # Each row's gradient, (softmax * S - q) / kept rows, sums to zero.
    assert np.abs(row_sums).max() < 1e-6 / kept.sum()
