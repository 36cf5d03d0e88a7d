"""Kullback-Leibler divergence (PyTorch's ``kl_div``), its gradient, and both in one pass."""

from __future__ import annotations

import numpy as np

from fastloss import _validate as v
from fastloss.losses._elementwise import Elementwise, contract, evaluate

SPEC = Elementwise("kl_div", input="input")
REDUCTIONS = ("mean", "batchmean", "sum", "none")
_CONTRACT, _GRAD_CONTRACT = contract(
    "input", "Semantics are ``torch.nn.functional.kl_div``'s: ``input`` holds "
    "log-probabilities; ``target`` probabilities, or log-probabilities with "
    "``log_target=True``. A zero target probability adds 0 against a finite input "
    "(``0 * log 0 = 0``; also a target of -inf with log_target, where PyTorch gives NaN) "
    "and NaN against an input of -inf (``0 * inf``, as PyTorch), a negative one NaN. "
    "reduction may also be 'batchmean': the sum over ``input.shape[0]`` (a 0-d input's: "
    "the sum, as PyTorch), the true KL "
    "divergence of a batch of distributions ('mean' divides by the element count, as "
    "PyTorch's default does). log_target: a bool."
)


def _run(input, target, reduction, log_target, backend, out, want_grad):
    log_target = v.check_bool(log_target, "log_target")
    v.check_reduction(reduction, REDUCTIONS)
    divisor = None
    if reduction == "batchmean":
        try:
            shape = np.shape(input)
        except ValueError:  # a ragged sequence: evaluate raises its TypeError
            shape = ()
        reduction, divisor = "sum", shape[0] if shape else None
    return evaluate(SPEC, input, target, reduction, backend, out, want_grad,
                    param=float(log_target), divisor=divisor)


def kl_div(input, target, *, reduction: str = "mean", log_target: bool = False,
           backend: str = "auto"):
    return _run(input, target, reduction, log_target, backend, None, False)[0]


def kl_div_grad(input, target, *, reduction: str = "mean", log_target: bool = False,
                backend: str = "auto", out=None):
    return _run(input, target, reduction, log_target, backend, out, True)[1]


def kl_div_with_grad(input, target, *, reduction: str = "mean", log_target: bool = False,
                     backend: str = "auto", out=None):
    return _run(input, target, reduction, log_target, backend, out, True)


kl_div.__doc__ = """KL divergence of ``target`` from ``exp(input)``, per element
    ``target * (log(target) - input)`` (``exp(target) * (target - input)`` with
    ``log_target``), reduced.

    Returns a scalar of input's dtype, or an array of input's shape for "none".
""" + _CONTRACT
kl_div_grad.__doc__ = """Gradient of the KL divergence with respect to ``input``
    (``-target``, or ``-exp(target)``), in one pass.
""" + _CONTRACT + _GRAD_CONTRACT
kl_div_with_grad.__doc__ = """``(loss, grad)`` of the KL divergence, from a single pass.
""" + _CONTRACT + _GRAD_CONTRACT
