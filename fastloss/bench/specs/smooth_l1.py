"""Smooth L1 loss (beta = 1): ``smooth_l1_with_grad`` against the NumPy expression, PyTorch and
the memory floor.
"""

from fastloss.bench import peers

LOSS = "smooth_l1"


def smooth_l1(xp, pred, target):
    diff = pred - target
    size = xp.abs(diff)
    return xp.where(size < 1.0, 0.5 * diff * diff, size - 0.5)


def expression_grad(xp, pred, target):
    diff = pred - target
    return xp.where(xp.abs(diff) < 1.0, diff, xp.sign(diff)) / diff.size


SPEC = peers.elementwise_spec(LOSS, peers.normal_pair, smooth_l1, expression_grad,
                              lambda F, pred, target: F.smooth_l1_loss(pred, target),
                              torch_drop_in=True)
