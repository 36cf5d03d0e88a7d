"""Softmax cross-entropy with integer labels: ``softmax_cross_entropy_with_grad`` against its
peers and the memory floor.

    pytest bench/bench_softmax_cross_entropy.py --benchmark-group-by=group
"""

LOSS = "softmax_cross_entropy"
OPS = ("fused",)
SHAPES = [(4096, 32000), (256, 4096)]
SMOKE_SHAPES = [(3, 37)]


def test_softmax_cross_entropy(benchmark, case, run_case):
    run_case(benchmark, case)
