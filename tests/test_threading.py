"""The numba backend in forked and spawned workers and under concurrent Python threads.

Every case runs the threaded kernels (inputs above the serial size) and must give the bits of
a plain call in this process. The thread counts 1, 2 and 4 (``NUMBA_NUM_THREADS``) are
``test_numba_kernels.test_same_bits_at_any_thread_count``.
"""

import multiprocessing
import os
import platform
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import fastloss as fl

pytest.importorskip("numba")

ROWS, CLASSES = 600, 1000  # 600 000 elements: the threaded kernels of both families


def _inputs():
    rng = np.random.default_rng(7)
    logits = (rng.standard_normal((ROWS, CLASSES)) * 3).astype(np.float32)
    labels = rng.integers(0, CLASSES, ROWS)
    target = rng.standard_normal((ROWS, CLASSES)).astype(np.float32)
    return logits, labels, target


def _bits(_=None) -> tuple[bytes, ...]:
    """Losses and gradients of MSE and cross-entropy, as bytes."""
    logits, labels, target = _inputs()
    mse, mse_grad = fl.mse_with_grad(logits, target, backend="numba")
    ce, ce_grad = fl.softmax_cross_entropy_with_grad(logits, labels, backend="numba")
    return tuple(np.asarray(a).tobytes() for a in (mse, mse_grad, ce, ce_grad))


@pytest.fixture(scope="module")
def parent_bits():
    return _bits()  # also starts Numba's threads in this process before any fork


def test_default_layer_is_fork_and_thread_safe(parent_bits):
    import numba

    from fastloss.backends.numba import _threading

    layer = numba.threading_layer()
    if platform.machine() in ("x86_64", "AMD64") and "NUMBA_THREADING_LAYER" not in os.environ:
        assert layer == ("workqueue" if _threading._one_cpu() else "tbb")
    else:
        assert layer in ("tbb", "workqueue", "omp")


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_pool_children_give_the_parents_bits(parent_bits, method):
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method!r} start method on {sys.platform}")
    with multiprocessing.get_context(method).Pool(2) as pool:
        results = pool.map_async(_bits, range(4)).get(timeout=120)
    assert all(result == parent_bits for result in results)


def test_eight_threads_at_once_give_the_serial_bits(parent_bits):
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(_bits, range(16)))
    assert all(result == parent_bits for result in results)


def _run_with_layer(layer: str | None, script: str, cpus=None) -> subprocess.CompletedProcess:
    """``script`` in a fresh interpreter with ``NUMBA_THREADING_LAYER=layer`` (None: unset),
    on the CPUs ``cpus`` when given; this module importable as ``test_threading``."""
    env = {name: value for name, value in os.environ.items()
           if name != "NUMBA_THREADING_LAYER"}
    if layer is not None:
        env["NUMBA_THREADING_LAYER"] = layer
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(Path(__file__).parent), str(Path(__file__).parents[1]),
                      env.get("PYTHONPATH")]))
    pinned = None if cpus is None else (lambda: os.sched_setaffinity(0, cpus))
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=300, preexec_fn=pinned)


_CONCURRENT_SCRIPT = """
from concurrent.futures import ThreadPoolExecutor
import numba, test_threading
serial = test_threading._bits()
with ThreadPoolExecutor(8) as pool:
    assert all(r == serial for r in pool.map(test_threading._bits, range(16)))
print(numba.threading_layer())
"""


def test_workqueue_layer_serialises_concurrent_calls():
    # Numba's workqueue layer aborts the process when two threads launch at once;
    # fastloss's lock (used when TBB cannot load) must keep that from happening.
    completed = _run_with_layer("workqueue", _CONCURRENT_SCRIPT)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.split()[-1] == "workqueue"


@pytest.mark.parametrize("layer", ["tbb", "omp"])
def test_a_chosen_layer_is_kept(layer):
    if layer == "tbb" and platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("the tbb wheel is for x86-64 only")
    completed = _run_with_layer(
        layer, "import numba, test_threading; test_threading._bits(); "
               "print(numba.threading_layer())")
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.split()[-1] == layer


_ONE_CPU_SCRIPT = """
import os, threading, numba, test_threading
serial = test_threading._bits()
worker = threading.Thread(target=lambda: test_threading._bits()); worker.start(); worker.join()
child = os.fork()
if child == 0:
    os._exit(0 if test_threading._bits() == serial else 1)
assert os.waitpid(child, 0)[1] == 0
print(numba.threading_layer())
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or not hasattr(os, "fork"),
                    reason="pins a process to one CPU and forks it: Linux only")
def test_one_cpu_takes_workqueue_and_exits():
    # On one CPU TBB starts no worker thread: a process that launched a threaded kernel from
    # a second thread, or forked after one, waited at exit forever (oneTBB issue 2056).
    completed = _run_with_layer(None, _ONE_CPU_SCRIPT, cpus={min(os.sched_getaffinity(0))})
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.split()[-1] == "workqueue"


def test_a_layer_set_after_the_first_call_still_gets_the_lock():
    # The layer is chosen when the numba backend loads (the first call), and Numba starts
    # it at the first threaded launch: one set in between must still be locked if it needs.
    completed = _run_with_layer(None, """
import numba, numpy as np, fastloss as fl
fl.mse(np.ones(4, np.float32), np.zeros(4, np.float32), backend="numba")
numba.config.THREADING_LAYER = "workqueue"
""" + _CONCURRENT_SCRIPT)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.split()[-1] == "workqueue"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forks: POSIX only")
def test_a_child_forked_while_the_lock_is_held_can_launch():
    # Under workqueue threaded kernels take a lock; a child forked while another thread
    # held it must not wait for a release that can never come in the child.
    completed = _run_with_layer("workqueue", """
import os, signal, test_threading
from fastloss.backends.numba import _threading
serial = test_threading._bits()
_threading._launch_lock.acquire()  # as another thread in the middle of a launch
child = os.fork()
if child == 0:
    signal.alarm(60)
    os._exit(0 if test_threading._bits() == serial else 1)
_threading._launch_lock.release()
assert os.waitpid(child, 0)[1] == 0
print("the child launched")
""")
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.split("\n")[-2] == "the child launched"


@pytest.mark.parametrize("files, own, cpus", [
    ({"cpu.max": "150000 100000\n"}, "0::/\n", 1.5),
    ({"cpu.max": "200000 100000\n", "job/cpu.max": "max 100000\n"}, "0::/job\n", 2.0),
    ({"cpu,cpuacct/cpu.cfs_quota_us": "50000\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"},
     "4:cpu,cpuacct:/\n1:name=systemd:/\n", 0.5),
    ({"cpu,cpuacct/cpu.cfs_quota_us": "-1\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"},
     "4:cpu,cpuacct:/\n", float("inf")),
    ({}, "0::/\n", float("inf")),
], ids=["v2", "v2 parent", "v1", "v1 unlimited", "none"])
def test_cgroup_cpu_quota_is_read_up_to_the_root(tmp_path, files, own, cpus):
    from fastloss.backends.numba import _threading

    for name, text in files.items():
        (tmp_path / "cgroup" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "cgroup" / name).write_text(text)
    (tmp_path / "own").write_text(own)
    assert _threading._quota_cpus(tmp_path / "cgroup", tmp_path / "own") == cpus
