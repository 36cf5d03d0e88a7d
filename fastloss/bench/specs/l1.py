"""L1 loss: ``l1_with_grad`` against the NumPy expression, PyTorch and the memory floor.

    pytest bench/bench_l1.py --benchmark-group-by=group
"""

import peers

LOSS = "l1"
OPS = ("fused",)
SHAPES = [(32768, 1024), (256, 1024)]
SMOKE_SHAPES = [(3, 37)]


def absolute_error(xp, pred, target):
    return xp.abs(pred - target)


def expression_grad(xp, pred, target):
    return xp.sign(pred - target) / pred.size


SPEC = peers.elementwise_spec(LOSS, peers.normal_pair, absolute_error, expression_grad,
                              lambda F, pred, target: F.l1_loss(pred, target))


def test_l1(benchmark, case, run_case):
    run_case(benchmark, case)
