"""Binary cross-entropy of logits: ``binary_cross_entropy_with_logits_with_grad`` against
its peers and the memory floor, at (32768, 1024) and (256, 1024) (the spec:
``fastloss.bench.specs.binary_cross_entropy_with_logits``).

    pytest bench/bench_binary_cross_entropy_with_logits.py --benchmark-group-by=group
"""

from fastloss.bench import peers

SPEC = peers.spec("binary_cross_entropy_with_logits")


def test_binary_cross_entropy_with_logits(benchmark, case, run_case):
    run_case(benchmark, case)
