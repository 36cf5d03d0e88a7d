"""pytest-benchmark plumbing shared by ``bench_<loss>.py``.

A bench module sets ``SPEC`` to its loss's spec from ``fastloss.bench`` (never a copy), may set
``OPS``, ``SHAPES`` and ``SMOKE_SHAPES`` (defaults below), and has one test taking ``case``; this
file turns them into one parametrised case per (shape, op, device, contender), every contender
of a (loss, op, shape, device) in the same benchmark group.

``--benchmark-disable`` (the CI smoke run) or ``FASTLOSS_BENCH_SMALL=1`` selects
``SMOKE_SHAPES``: every code path once, in seconds. Every contender's answer is checked
against the float64 reference (``check_result``), so a bench case cannot pass on garbage.
"""

from __future__ import annotations

import functools
import os
import statistics

import pytest

from fastloss.bench import peers, report

OPS = ("fused",)
SHAPES = [(32768, 1024), (256, 1024)]
SMOKE_SHAPES = [(3, 37)]


def pytest_collect_file(file_path, parent):
    # pytest collects only test_*.py by default, except the files named on its command line.
    if (file_path.suffix == ".py" and file_path.name.startswith("bench_")
            and not parent.session.isinitpath(file_path)):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def small_shapes(config) -> bool:
    if os.environ.get("FASTLOSS_BENCH_SMALL", "") not in ("", "0"):
        return True
    try:
        return bool(config.getoption("benchmark_disable"))
    except ValueError:  # pytest-benchmark is not installed
        return True


def _case_param(impl: peers.Impl, shape: tuple[int, int]):
    marks = [pytest.mark.gpu] if impl.device == "cuda" else []
    if impl.missing:
        marks.append(pytest.mark.skip(reason=impl.missing))
    name = impl.name.replace("[", "-").replace("]", "")  # brackets inside a test id confuse -k
    case_id = f"{impl.op}-{peers.shape_label(shape)}-{impl.device}-{name}"
    return pytest.param((impl, shape), id=case_id, marks=marks)


def pytest_generate_tests(metafunc):
    if "case" not in metafunc.fixturenames:
        return
    module = metafunc.module
    if small_shapes(metafunc.config):
        shapes = getattr(module, "SMOKE_SHAPES", SMOKE_SHAPES)
    else:
        shapes = getattr(module, "SHAPES", SHAPES)
    params = [
        _case_param(impl, shape)
        for device in peers.DEVICES
        for shape in shapes
        for op in getattr(module, "OPS", OPS)
        for impl in peers.implementations(module.SPEC.loss, op, device)
    ]
    metafunc.parametrize("case", params)


@functools.lru_cache(maxsize=1)
def _inputs(loss: str, shape: tuple[int, int], device: str) -> peers.Inputs:
    # One input set alive at a time: the cases come ordered by shape, so each is made once.
    return peers.make_inputs(loss, shape, device)


@functools.cache
def _floor_seconds(loss: str, op: str, shape: tuple[int, int], device: str) -> float:
    impl = next(i for i in peers.implementations(loss, op, device) if i.kind == "floor")
    _, times = report.time_thunk(impl.prepare(_inputs(loss, shape, device)), repeats=5, budget=0.5)
    return statistics.median(times)


# Float32 inputs: a contender that computes something else fails, whatever its speed.
RESULT_TOLERANCE = 1e-3


def check_result(impl: peers.Impl, inputs: peers.Inputs, result) -> None:
    """AssertionError unless ``result``, ``impl``'s answer, is the float64 reference's (its
    loss; fastloss's gradient too, against the NumPy expression's in float64)."""
    if impl.kind in peers.UNCHECKED:
        return
    errors = {}
    if impl.op == "call":
        errors["output"] = report.array_error(inputs, result)
    elif impl.op != "gradient":
        errors["loss"] = report.relative_error(peers.loss_value(result, impl.op),
                                               report.reference_loss(inputs))
    if impl.kind == "fastloss" and impl.op in ("gradient", "fused"):
        xp, spec = inputs.xp, peers.spec(impl.loss)
        second = inputs.second
        if second is not None and second.dtype.kind == "f":
            second = second.astype(xp.float64)
        want = spec.expression["gradient"](xp, inputs.first.astype(xp.float64), second)
        got = xp.asarray(result[1] if impl.op == "fused" else result, dtype=xp.float64)
        errors["gradient"] = float(xp.abs(got - want).max() / xp.abs(want).max())
    for what, error in errors.items():
        assert error <= RESULT_TOLERANCE, f"{impl.name} {impl.op}: {what} off by {error:.3g}"


def _rounds(nbytes: int) -> int:
    return max(5, min(200, int(4e8 // max(1, nbytes))))


@pytest.fixture
def run_case(request):
    """``run_case(benchmark, case)``: time one contender, warm-up rounds kept out."""

    def run(benchmark, case):
        impl, shape = case
        inputs = _inputs(impl.loss, shape, impl.device)
        thunk = impl.prepare(inputs)
        nbytes = peers.op_bytes(impl.loss, impl.op, shape)
        benchmark.group = f"{impl.loss} {impl.op} {peers.shape_label(shape)} {impl.device}"
        benchmark.extra_info.update(
            impl=impl.name, kind=impl.kind, op=impl.op, device=impl.device, shape=list(shape),
            bytes=nbytes,
        )
        result = benchmark.pedantic(thunk, rounds=_rounds(nbytes), warmup_rounds=1,
                                    iterations=1)
        check_result(impl, inputs, result)
        del result
        stats = getattr(benchmark, "stats", None)
        if stats is None:  # --benchmark-disable: the thunk ran once, nothing was timed
            return
        median = stats.stats.median
        floor = _floor_seconds(impl.loss, impl.op, shape, impl.device)
        benchmark.extra_info.update(
            gbps=nbytes / median / 1e9, floor_s=floor, x_floor=median / floor,
            copy_gbps=nbytes / floor / 1e9,
        )

    return run
