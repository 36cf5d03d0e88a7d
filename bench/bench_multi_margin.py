"""The multi-class hinge loss: ``multi_margin_with_grad`` against its peers and the memory
floor (the spec: ``fastloss.bench.specs.multi_margin``).

    pytest bench/bench_multi_margin.py --benchmark-group-by=group
"""

from fastloss.bench import peers

SPEC = peers.spec("multi_margin")
SHAPES = [(1024, 32000), (4096, 1000)]
SMOKE_SHAPES = [(3, 37)]


def test_multi_margin(benchmark, case, run_case):
    run_case(benchmark, case)
