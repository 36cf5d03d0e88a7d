"""Binary cross-entropy of probabilities: ``binary_cross_entropy_with_grad`` against the NumPy
expression, PyTorch and the memory floor.

    pytest bench/bench_binary_cross_entropy.py --benchmark-group-by=group
"""

import peers

LOSS = "binary_cross_entropy"
OPS = ("fused",)
SHAPES = [(32768, 1024), (256, 1024)]
SMOKE_SHAPES = [(3, 37)]


def make(xp, rng, shape):
    probs = rng.random(shape, dtype=peers.DTYPE) * peers.DTYPE(0.998) + peers.DTYPE(0.001)
    return probs, (rng.random(shape, dtype=peers.DTYPE) < 0.5).astype(peers.DTYPE)


def bce(xp, probs, target):
    return -(target * xp.log(probs) + (1 - target) * xp.log(1 - probs))


def expression_grad(xp, probs, target):
    return (probs - target) / (probs * (1 - probs)) / probs.size


SPEC = peers.elementwise_spec(LOSS, make, bce, expression_grad,
                              lambda F, probs, target: F.binary_cross_entropy(probs, target))


def test_binary_cross_entropy(benchmark, case, run_case):
    run_case(benchmark, case)
