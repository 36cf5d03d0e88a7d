"""L1 loss: ``l1_with_grad`` against the NumPy expression, PyTorch and the memory floor."""

from fastloss.bench import peers

LOSS = "l1"


def absolute_error(xp, pred, target):
    return xp.abs(pred - target)


def expression_grad(xp, pred, target):
    return xp.sign(pred - target) / pred.size


SPEC = peers.elementwise_spec(LOSS, peers.normal_pair, absolute_error, expression_grad,
                              lambda F, pred, target: F.l1_loss(pred, target),
                              torch_drop_in=True)
