"""Softmax entropy: ``softmax_entropy_with_grad`` against its peers and the memory floor (the
spec: ``fastloss.bench.specs.softmax_entropy``).

    pytest bench/bench_softmax_entropy.py --benchmark-group-by=group
"""

from fastloss.bench import peers

SPEC = peers.spec("softmax_entropy")
SHAPES = [(1024, 32000), (4096, 1000)]
SMOKE_SHAPES = [(3, 37)]


def test_softmax_entropy(benchmark, case, run_case):
    run_case(benchmark, case)
