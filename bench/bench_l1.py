"""L1 loss: ``l1_with_grad`` against its peers and the memory floor, at
(32768, 1024) and (256, 1024) (the spec: ``fastloss.bench.specs.l1``).

    pytest bench/bench_l1.py --benchmark-group-by=group
"""

from fastloss.bench import peers

SPEC = peers.spec("l1")


def test_l1(benchmark, case, run_case):
    run_case(benchmark, case)
