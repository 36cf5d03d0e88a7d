"""Huber loss: ``huber_with_grad`` against its peers and the memory floor, at
(32768, 1024) and (256, 1024) (the spec: ``fastloss.bench.specs.huber``).

    pytest bench/bench_huber.py --benchmark-group-by=group
"""

from fastloss.bench import peers

SPEC = peers.spec("huber")


def test_huber(benchmark, case, run_case):
    run_case(benchmark, case)
