"""Softmax cross-entropy with label smoothing 0.1: ``softmax_cross_entropy_with_grad`` against
its peers and the memory floor, at a tiny batch and over the row width k at a fixed number of
logits (the spec: ``fastloss.bench.specs.softmax_cross_entropy_smoothed``).

    pytest bench/bench_softmax_cross_entropy_smoothed.py --benchmark-group-by=group
"""

from fastloss.bench import peers

SPEC = peers.spec("softmax_cross_entropy_smoothed")
SHAPES = [(64, 10), *peers.sweep_shapes(SPEC.sweep)]
# The numba layouts: rows in lanes, a row at a time (past 256 float32 classes), two classes.
SMOKE_SHAPES = [(3, 37), (65, 3), (3, 300), (65, 2)]


def test_softmax_cross_entropy_smoothed(benchmark, case, run_case):
    run_case(benchmark, case)
