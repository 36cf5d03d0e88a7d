"""Mean squared error: ``mse_with_grad`` and ``mse`` against their peers and the memory floor,
from a tiny batch (where a call's fixed cost is most of its time) to 32M elements (the spec:
``fastloss.bench.specs.mse``).

    pytest bench/bench_mse.py --benchmark-group-by=group
"""

from fastloss.bench import peers

SPEC = peers.spec("mse")
OPS = ("fused", "forward")
SHAPES = [(64, 10), (32768, 1024), (256, 1024)]


def test_mse(benchmark, case, run_case):
    run_case(benchmark, case)
