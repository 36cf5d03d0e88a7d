"""Hinge loss: ``hinge_with_grad`` against its peers and the memory floor, at
(32768, 1024) and (256, 1024) (the spec: ``fastloss.bench.specs.hinge``).

    pytest bench/bench_hinge.py --benchmark-group-by=group
"""

from fastloss.bench import peers

SPEC = peers.spec("hinge")


def test_hinge(benchmark, case, run_case):
    run_case(benchmark, case)
