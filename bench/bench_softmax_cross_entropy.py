"""Softmax cross-entropy with integer labels: ``softmax_cross_entropy_with_grad`` against its
peers and the memory floor, at a tiny batch, at long rows, and over the row width k at a fixed
number of logits (``peers.CLASS_SWEEP``).

    pytest bench/bench_softmax_cross_entropy.py --benchmark-group-by=group
"""

import peers

LOSS = "softmax_cross_entropy"
OPS = ("fused",)
SHAPES = [(64, 10), (4096, 32000), (256, 4096), *peers.sweep_shapes(LOSS)]
SMOKE_SHAPES = [(3, 37), (65, 3)]


def test_softmax_cross_entropy(benchmark, case, run_case):
    run_case(benchmark, case)
