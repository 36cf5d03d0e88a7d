"""Huber loss (delta = 1): ``huber_with_grad`` against the NumPy expression, PyTorch and the
memory floor.
"""

from fastloss.bench import peers

LOSS = "huber"
DELTA = 1.0


def huber(xp, pred, target):
    diff = pred - target
    size = xp.abs(diff)
    return xp.where(size < DELTA, 0.5 * diff * diff, DELTA * (size - 0.5 * DELTA))


def expression_grad(xp, pred, target):
    return xp.clip(pred - target, -DELTA, DELTA) / pred.size


SPEC = peers.elementwise_spec(LOSS, peers.normal_pair, huber, expression_grad,
                              lambda F, pred, target: F.huber_loss(pred, target, delta=DELTA),
                              options={"delta": DELTA}, torch_drop_in=True)
