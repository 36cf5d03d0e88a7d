"""Mean squared error: ``mse_with_grad`` and ``mse`` against their peers and the memory floor.

    pytest bench/bench_mse.py --benchmark-group-by=group
"""

LOSS = "mse"
OPS = ("fused", "forward")
SHAPES = [(32768, 1024), (256, 1024)]
SMOKE_SHAPES = [(3, 37)]


def test_mse(benchmark, case, run_case):
    run_case(benchmark, case)
