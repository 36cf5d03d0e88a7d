"""NLL: ``nll_with_grad`` against its peers and the memory floor (the spec:
``fastloss.bench.specs.nll``).

    pytest bench/bench_nll.py --benchmark-group-by=group
"""

from fastloss.bench import peers

SPEC = peers.spec("nll")
SHAPES = [(1024, 32000), (4096, 1000)]
SMOKE_SHAPES = [(3, 37)]


def test_nll(benchmark, case, run_case):
    run_case(benchmark, case)
