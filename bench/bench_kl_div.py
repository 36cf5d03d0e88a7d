"""KL divergence: ``kl_div_with_grad`` against its peers and the memory floor, at
(32768, 1024) and (256, 1024) (the spec: ``fastloss.bench.specs.kl_div``).

    pytest bench/bench_kl_div.py --benchmark-group-by=group
"""

from fastloss.bench import peers

SPEC = peers.spec("kl_div")


def test_kl_div(benchmark, case, run_case):
    run_case(benchmark, case)
