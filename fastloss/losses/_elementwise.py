"""The front of every elementwise loss: checks, layout, one fused kernel call, the shared tail.

An elementwise loss is ``loss(x, t) = sum_e w_e * f(x_e, t_e)`` over any shape,
with its gradient with respect to ``x``; each backend computes ``f`` and its
derivative with one functor inside one fused pass (``fastloss.backends``).
A loss declares itself with an :class:`Elementwise` spec and calls
:func:`evaluate`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fastloss import _registry
from fastloss import _validate as v
from fastloss.losses import _tail


@dataclass(frozen=True)
class Elementwise:
    """How a front calls its elementwise kernel.

    ``name``: the registered loss (and backend function) name. ``input``: the
    name of the first argument in messages. ``domain``: for losses defined
    only for some values, ``domain(x, t)`` on host arrays returns a message
    naming the argument when a value is outside it, else None. The kernels
    make such elements NaN; the CPU front then raises ValueError with the
    message, and the cuda front returns the NaN (a check would synchronise).
    """

    name: str
    input: str = "pred"
    domain: Callable[[np.ndarray, np.ndarray], str | None] | None = None


def _broadcasts_to(values_shape, shape) -> bool:
    """Whether an array of ``values_shape`` broadcasts to ``shape`` (not np.broadcast_shapes:
    it raises RuntimeError past 32 dimensions, where NumPy arrays have up to 64)."""
    return len(values_shape) <= len(shape) and all(
        n in (1, m) for n, m in zip(reversed(values_shape), reversed(shape), strict=False))


def check_per_element(values, name: str, shape) -> None:
    """TypeError unless ``values`` (an array) is real-valued, ValueError unless it
    broadcasts to ``shape``: the checks of ``weight`` and the aux arrays."""
    v.check_real_array(values, name)
    if not _broadcasts_to(values.shape, shape):
        raise ValueError(
            f"{name} must be broadcastable to the input's shape {shape}; got {values.shape}"
        )


def _per_element(values, name: str, like, backend):
    """``values`` (broadcastable to ``like``) as an array of ``backend``, checked; None for
    None."""
    if values is None:
        return None
    values = backend.asarray(values, name)
    check_per_element(values, name, like.shape)
    return values


def _flat(values, like, work, order: str, backend):
    """``values`` (broadcastable to ``like``) as the flat array of ``work`` that the kernels
    read (``fastloss.backends.ElementwiseLoss``): its own elements once, in ``order``, when
    broadcasting repeats them whole along ``like`` walked in ``order`` (in C order a ``(k,)``
    weight of ``(N, k)`` input, read once per row), else all of ``like``'s elements."""
    if values is None:
        return None
    dims, shape = (1,) * (like.ndim - values.ndim) + values.shape, like.shape
    if order == "F":
        dims, shape = dims[::-1], shape[::-1]
    first = len(shape)  # dims[first:] == shape[first:]: the axes values spans whole
    while first > 0 and dims[first - 1] == shape[first - 1]:
        first -= 1
    repeats = all(n == 1 for n in dims[:first])
    flat = backend.xp.empty(values.size if repeats else like.shape, work, order=order)
    with np.errstate(over="ignore", under="ignore"):  # rounded as _tail.narrowed rounds
        flat[...] = values.ravel(order) if repeats else values
    return flat.ravel(order)


def evaluate(spec: Elementwise, x, target, reduction, backend, out, want_grad: bool, *,
             param: float = 0.0, weight=None, aux=None, aux_name: str = "aux", divisor=None):
    """``(loss, grad or None)`` of ``spec``'s loss: the checks of the error contract,
    then one kernel call. ``weight`` and ``aux`` (optional, broadcastable to ``x``)
    reach the kernel per element: ``weight`` scales loss and gradient, ``aux``
    is the functor's own per-element parameter; ``param`` its scalar one.
    ``divisor``: what a "sum" is divided by (a loss's own mean, such as KL
    divergence's "batchmean"); None: the element count for "mean", else 1.
    A dask array among the arrays makes it ``fastloss.dask.evaluate``'s call."""
    host = _registry.host_backend(backend)
    if host is not None and v.known_reduction(reduction):
        result = _plain(spec, x, target, reduction, host, out, want_grad, param, divisor,
                        weight, aux)
        if result is not None:
            return result
    if _registry.any_dask_array(x, target, weight, aux, out):
        lazy = importlib.import_module("fastloss.dask")
        return lazy.evaluate(spec, x, target, reduction, backend, out, want_grad, param=param,
                             weight=weight, aux=aux, aux_name=aux_name, divisor=divisor)
    reduction = v.check_reduction(reduction)
    backend = _registry.backend(backend, x, target, weight, aux, out)
    x = backend.asarray(x, spec.input)
    target = backend.asarray(target, "target")
    backend.check_float(x, spec.input)
    backend.check_float(target, "target")
    if target.shape != x.shape:
        raise ValueError(
            f"target must have the shape of {spec.input} {x.shape}; got {target.shape}"
        )
    out = backend.check_out(out, "out", x)
    with backend.scope(x):
        # The gradient takes the input's layout: walk the arrays in Fortran order
        # when the input is Fortran-ordered (a target of another layout is then
        # copied once), else in C order (a non-contiguous array is copied once).
        order = "F" if x.flags.f_contiguous and not x.flags.c_contiguous else "C"
        dtype = x.dtype
        if weight is not None or aux is not None:
            weight = _per_element(weight, "weight", x, backend)
            aux = _per_element(aux, aux_name, x, backend)
            work = backend.compute_dtype(
                dtype, target.dtype, *(y.dtype for y in (weight, aux) if y is not None))
            weight = _flat(weight, x, work, order, backend)
            aux = _flat(aux, x, work, order, backend)
            backend.same_device(x, target, weight, aux, out)
        else:
            work = backend.compute_dtype(dtype, target.dtype)
            backend.same_device(x, target, out)
        x_work = x.ravel(order).astype(work, copy=False)
        target_work = _tail.narrowed(target.ravel(order), work)
        checked = backend.host and spec.domain is not None
        # The domain of the values the kernel reads (a float64 target rounded to float32 may
        # land in it). Before the kernel when it will overwrite what the check reads; else
        # after it, and only for a NaN total (NaN input, or a value outside the domain).
        checked_first = checked and _aliased(out, x, target)
        if checked_first:
            _check_domain(spec, x_work, target_work)

        grad, writes_out = _tail.grad_buffer(backend.xp, x.shape, work, dtype, out, want_grad,
                                             order, inputs=(x, target))
        items = backend.xp.empty(x.shape, work, order=order) if reduction == "none" else None
        reduced = backend.kernels[spec.name](
            x_work,
            target_work,
            None if grad is None else grad.ravel(order),
            None if items is None else items.ravel(order),
            mean_divisor(reduction, x.size, divisor),
            weight, aux, param,
        )
        if checked and not checked_first and reduced != reduced:
            _check_domain(spec, x_work, target_work)
        return _tail.results(backend, dtype, reduced, items, grad, writes_out, out)


def mean_divisor(reduction: str, size: int, divisor) -> float:
    """What the kernel divides the sum and the gradient by (see :func:`evaluate`)."""
    if divisor is not None:
        return divisor
    return size if reduction == "mean" else 1


def _plain_values(values, x) -> bool:
    """Whether a per-element array the short path takes: None, or a NumPy float32 or
    float64 array that broadcasts to ``x``'s shape (what check_per_element accepts)."""
    if values is None:
        return True
    return (type(values) is np.ndarray and values.dtype in (np.float32, np.float64)
            and _broadcasts_to(values.shape, x.shape))


def _plain(spec: Elementwise, x, target, reduction, host, out, want_grad: bool, param,
           divisor, weight=None, aux=None):
    """``(loss, grad or None)`` of C-contiguous NumPy arrays of one native float
    dtype, on a CPU backend, without weights or with NumPy float ones
    (:func:`_plain_values`, made the kernels' flat arrays as the full path makes
    them): what the full path gives, with nothing else to convert, at a fraction
    of its per-call cost; None for other arrays. Reduced and without weights,
    the backend's small call, where it has one, checks and runs such arrays in
    one compiled call (at (64, 10), a third of the time these checks take in
    Python)."""
    domain = spec.domain
    if weight is None and aux is None:
        small_call = host.small_calls[spec.name] if reduction != "none" else None
    elif _plain_values(weight, x) and _plain_values(aux, x):
        small_call = None
    else:
        return None
    grad = reduced = items = None
    if small_call is not None and v.typed_floats(x, target, out):
        grad = _tail.plain_grad(x, out, want_grad)
        # A loss with a domain checks it after the kernel, from the inputs: its small call
        # takes no out over them (the path below checks such a call first).
        reduced = small_call(x, target, grad, mean_divisor(reduction, x.size, divisor), param,
                             domain is None)
    checked_first = domain is not None and _aliased(out, x, target)  # as evaluate's
    if reduced is None:
        if not v.plain_floats(x, target, out) or _tail.overlaps(np, out, x, target):
            return None
        if checked_first:
            _check_domain(spec, x, target)
        if grad is None:
            grad = _tail.plain_grad(x, out, want_grad)
        items = np.empty(x.shape, x.dtype) if reduction == "none" else None
        # ravel() of a C-contiguous array is a view; the weights' flat arrays are new ones.
        reduced = host.kernels[spec.name](
            x.ravel(), target.ravel(), None if grad is None else grad.ravel(),
            None if items is None else items.ravel(), mean_divisor(reduction, x.size, divisor),
            _flat(weight, x, x.dtype, "C", host), _flat(aux, x, x.dtype, "C", host), param,
        )
    if domain is not None and not checked_first and reduced != reduced:
        _check_domain(spec, x, target)
    return host.result(reduced, x.dtype) if items is None else items, grad


def _aliased(out, x, target) -> bool:
    """Whether the kernel may write into what the domain check reads: only when ``out`` is
    ``x`` or ``target`` itself, since an ``out`` that overlaps one any other way is written
    through a buffer of its own (``_tail.overlaps``)."""
    return out is not None and (out is x or out is target)


def _check_domain(spec: Elementwise, x, target) -> None:
    message = spec.domain(x, target)
    if message is not None:
        raise ValueError(message)


def contract(input_name: str, semantics: str) -> tuple[str, str]:
    """The docstring paragraphs every elementwise loss shares: arguments, and out=."""
    arguments = f"""
    {input_name}, target: floating-point arrays of the same shape (any shape,
        any layout): NumPy for the CPU backends, CuPy or any CUDA array for cuda.
    reduction: "mean" (over all elements), "sum" or "none" (elementwise).
    backend: "auto" (cuda for device arrays, else numba when installed, else
        numpy), "numpy", "numba" or "cuda".

    {semantics} Float16 is computed in float32 and rounded once. Raises
    ValueError for mismatched shapes or bad options, TypeError for non-float
    arrays or arrays of the wrong library.
"""
    gradient = f"""
    out: optional array of {input_name}'s shape and dtype that receives the
        gradient; it may be ``{input_name}`` or ``target`` itself (an in-place
        gradient).
    The gradient is that of the reduced loss ("none": of the sum), with
    {input_name}'s shape and dtype.
"""
    return arguments, gradient
