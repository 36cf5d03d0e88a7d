"""fastloss on dask arrays: every loss, lazy, chunk by chunk (and the softmax functions,
a chunk of whole rows at a time).

``fastloss.mse(pred, target)`` and every other loss function come here when any array
argument is a ``dask.array.Array``: the elementwise losses through :func:`evaluate`, the
cross-entropy functions through the functions of the same name below (same arguments).
They build a task graph and compute nothing: the loss is a 0-d dask array (``"mean"``,
``"sum"``; per element of ``pred`` or per row of ``logits`` with its chunks for
``"none"``), the gradient a dask array with ``pred``'s / ``logits``' chunks and dtype.
Compute what you need in one call, ``dask.compute(loss, grad)`` (or ``da.store`` /
``to_zarr`` the gradient with the loss): computing them one after the other runs
every chunk twice.

Chunks.
    Elementwise losses (MSE, L1, ..., hinge): any chunk grid; ``target`` is rechunked to
    the input's chunks, ``weight`` and ``pos_weight`` broadcast to its shape and chunked
    like it. Each chunk is one call of the fused kernel, which writes the gradient of the
    whole mean (the divisor is passed in), so gradient chunks have the bits of the
    in-memory call's gradient. Values outside a loss's domain (BCE's probabilities, the
    hinge's labels) raise the in-memory ValueError when computed on the CPU.
    Cross-entropy: chunks along rows, classes, or both. ``target`` (labels of shape
    ``(N,)`` or probabilities ``(N, k)``) and ``weight`` are rechunked to the logits'
    row and class chunks. With one class chunk each chunk is one fused kernel call
    (logits read once). With several (vocabulary-parallel) each chunk reduces its
    columns to four float64 numbers per row (the shifted sum of exp as its logits at the
    max and the rest, target mass, target gap; see ``fastloss._class_shards``); the
    numbers of a row block combine in one small task; each chunk then computes its
    gradient from them. Only those ``(N,)`` vectors move between tasks, never the logits,
    and a chunk is read twice (statistics, then gradient), so dask keeps it in memory in
    between.
    A ``"mean"`` over labels divides by the weight sum of the rows not ignored: a small
    task graph over ``target`` (and ``weight``) computes it before the chunk kernels.
    NLL, the multi-class hinge and the softmax entropy: any chunks; the classes are
    rechunked to one chunk, each chunk of rows is one fused kernel call, and the gradient
    is rechunked back to the input's chunks.

Determinism. Every chunk gives a float64 partial loss (already divided by the mean's
divisor). The partials are summed by :func:`pairwise_sum` over chunk indices in
row-major order, as a tree of tasks fixed by the graph: the loss has the same bits
whatever the scheduler (synchronous, threads, processes, distributed) and the number
of workers. The bits do depend on the chunk grid. The loss agrees with the in-memory
call within 1e-6 relative (float32) / 1e-12 (float64).

Backends. Each chunk runs on the backend that ``backend`` names, resolved once from the
arrays' chunk type (their ``_meta``): ``"auto"`` is numba (NumPy chunks; numpy when
numba is missing) or cuda (CuPy chunks). A CPU backend with CuPy chunks or ``"cuda"``
with NumPy chunks is a TypeError, as in memory.

Errors. Shapes, dtypes and options are checked when the graph is built (ValueError,
TypeError naming the argument, as in memory). Labels are checked when their chunks
are computed: ``compute()`` raises the ValueError (on cuda chunks only with
``check_labels=True``; otherwise an invalid label's row is NaN). Chunk sizes must be
known (``x.compute_chunk_sizes()``). ``out=`` is refused: the gradient is a new lazy
array; store it with ``da.store`` or ``to_zarr``.
"""

from __future__ import annotations

import functools
import importlib
import math
import operator

import array_api_compat
import dask
import dask.array as da
import numpy as np
from dask.array.utils import meta_from_array

from fastloss import _class_shards as shards
from fastloss import _registry
from fastloss import _validate as v
from fastloss.losses import _class_labels as class_labels
from fastloss.losses import _tail
from fastloss.losses import softmax as softmax_functions
from fastloss.losses._elementwise import check_per_element, mean_divisor

__all__ = [
    "evaluate",
    "softmax_cross_entropy",
    "softmax_cross_entropy_grad",
    "softmax_cross_entropy_with_grad",
    "nll",
    "nll_grad",
    "nll_with_grad",
    "multi_margin",
    "multi_margin_grad",
    "multi_margin_with_grad",
    "softmax_entropy",
    "softmax_entropy_grad",
    "softmax_entropy_with_grad",
    "softmax",
    "log_softmax",
    "softmax_backward",
    "log_softmax_backward",
    "pairwise_sum",
]

# Partials added per task of the tree. A power of two, so that the tree of tasks is a
# tree of subtrees of pairwise_sum over all partials (see there): the bits do not
# depend on it.
FAN_IN = 16


def pairwise_sum(values):
    """``values[0] + ... + values[-1]`` along a fixed binary tree.

    The left operand of every addition sums the largest power of two of the values
    that is smaller than their count. The split points are multiples of powers of
    two, so any aligned run of ``2**b`` values is a subtree: summing aligned groups
    first, then the groups' sums, gives the same bits as one call over all values.
    No values sum to 0.0.
    """
    count = len(values)
    if count == 0:
        return 0.0
    if count == 1:
        return values[0]
    half = 1 << ((count - 1).bit_length() - 1)
    return pairwise_sum(values[:half]) + pairwise_sum(values[half:])


# ---------------------------------------------------------------------------------------
# Chunk tasks (run on the workers)


def _quietly(function):
    """IEEE results without warnings in chunk tasks, as the backends promise (0/0 is NaN, an
    underflow 0)."""

    @functools.wraps(function)
    def quiet(*args, **kwargs):
        with np.errstate(all="ignore"):
            return function(*args, **kwargs)

    return quiet


def _float64(value, xp):
    return xp.asarray(value, dtype=xp.float64)


def _as(array, like):
    """A kernel's flat or work-dtype output in the shape and dtype of ``like``."""
    return None if array is None else array.reshape(like.shape).astype(like.dtype, copy=False)


@_quietly
def _elementwise_block(x, target, weight, aux, *, spec, backend, divisor, param, want_grad,
                       want_items):
    """``(gradient, elementwise losses, float64 partial loss)`` of one chunk of ``spec``'s loss."""
    on = _registry.backend(backend)
    xp = on.xp
    with on.scope(x):
        work = on.compute_dtype(x.dtype, *(y.dtype for y in (target, weight, aux)
                                           if y is not None))

        def flat(array):
            return None if array is None else xp.ascontiguousarray(array, dtype=work).reshape(-1)

        grad = xp.empty(x.size, work) if want_grad else None
        items = xp.empty(x.size, work) if want_items else None
        x_work, target_work = flat(x), flat(target)
        partial = on.kernels[spec.name](x_work, target_work, grad, items, divisor, flat(weight),
                                       flat(aux), param)
        if on.host and spec.domain is not None and partial != partial:
            # A NaN: NaN input, or a value the kernel read outside the domain.
            message = spec.domain(x_work, target_work)
            if message is not None:
                raise ValueError(message)
        return _as(grad, x), _as(items, x), _float64(partial, xp)


def _checked_labels(target, classes, ignore_index, check, xp):
    labels = class_labels.int64_labels(target, ignore_index, xp)
    if check:
        class_labels.check(labels, classes, ignore_index)
    return labels


@_quietly
def _divisor_block(target, weight, *, backend, classes, ignore_index, check):
    """A row chunk's part of a labels "mean"'s divisor: its weight sum of kept rows."""
    xp = _registry.backend(backend).xp
    labels = _checked_labels(target, classes, ignore_index, check, xp)
    kept = labels != ignore_index
    if weight is None:
        return _float64(kept.sum(), xp)
    # Clipped because ignore_index may lie outside [0, k); those rows count 0 (even where the
    # weight they would take is inf).
    return xp.where(kept, xp.asarray(weight, dtype=xp.float64)[labels.clip(0, classes - 1)],
                    0.0).sum()


@_quietly
def _rows_block(logits, target, weight, divisor, *, loss, backend, options, want_grad,
                want_rows):
    """``(gradient, row losses, float64 partial loss)`` of a chunk holding whole rows, by the
    kernel of ``loss`` over labels or probabilities, whose own arguments (between the row
    losses and the divisor) are ``options["kernel_args"]``."""
    on = _registry.backend(backend)
    xp = on.xp
    with on.scope(logits):
        labelled = target.dtype.kind in "iu"
        work = on.compute_dtype(logits.dtype, *(() if labelled else (target.dtype,)))
        if labelled:
            target = _checked_labels(target, logits.shape[1], options["ignore_index"],
                                     on.host or options["check_labels"], xp)
        else:
            target = xp.ascontiguousarray(target, dtype=work)
        if weight is not None:
            weight = xp.ascontiguousarray(weight, dtype=xp.float64)
        z = xp.ascontiguousarray(logits, dtype=work)
        grad = xp.empty(z.shape, work) if want_grad else None
        rows = xp.empty(z.shape[0], xp.float64) if want_rows else None
        partial = _registry.kernel(loss, backend)(
            z, target, weight, grad, rows, *options["kernel_args"], divisor,
        )
        # A column, so that the losses are blocks of an (N, 1) array with the logits' rows.
        losses = None if rows is None else rows.astype(logits.dtype)[:, None]
        return _as(grad, logits), losses, _float64(partial, xp)


def _shard_target(target, weight, columns, classes, options):
    """The target (int64 labels, as ``_checked_labels`` gives them, or the chunk's own
    probabilities) as the class chunk whose global column indices are ``columns`` sees it."""
    labels = target if target.dtype.kind in "iu" else None
    return shards.ShardTarget(
        start=int(columns[0]) if columns.size else 0,
        classes=classes,
        labels=labels,
        probabilities=target if labels is None else None,
        weight=weight,
        ignore_index=options["ignore_index"],
        label_smoothing=options["label_smoothing"],
    )


@_quietly
def _stats_block(logits, target, weight, columns, *, backend, classes, options):
    """A class chunk's per-row ``(max, n, r, S, B, ignored)`` (see ``fastloss._class_shards``;
    ``ignored``: the rows of ``ignore_index``, the same in every chunk, or None)."""
    on = _registry.backend(backend)
    xp = on.xp
    with on.scope(logits):
        if target.dtype.kind in "iu":
            target = _checked_labels(target, classes, options["ignore_index"],
                                     on.host or options["check_labels"], xp)
        shard = _shard_target(target, weight, columns, classes, options)
        reference = shards.row_max(logits)
        return (reference, *shards.shard_sums(logits, reference, shard), shard.ignored())


@_quietly
def _combine_block(stats, divisor, *, loss_dtype, want_rows):
    """A row block's whole-row ``(M, n, r, S)``, row losses and float64 partial loss, from
    its class chunks' statistics in chunk order."""
    reference, ones, rest, mass, gaps = shards.combine([chunk[:5] for chunk in stats])
    losses = shards.row_losses(ones, rest, mass, gaps, stats[0][5])
    xp = array_api_compat.array_namespace(losses)
    partial = xp.sum(losses) / divisor
    rows = xp.astype(losses, loss_dtype) if want_rows else None
    return (reference, ones, rest, mass), rows, partial


@_quietly
def _shard_grad_block(logits, target, weight, columns, rows, divisor, *, backend, classes,
                      options):
    """A class chunk's gradient from its row block's combined ``(M, n, r, S)``."""
    on = _registry.backend(backend)
    with on.scope(logits):
        if target.dtype.kind in "iu":  # checked by the statistics' pass
            target = _checked_labels(target, classes, options["ignore_index"], False, on.xp)
        reference, ones, rest, mass = rows[0]
        shard = _shard_target(target, weight, columns, classes, options)
        return shards.shard_gradient(logits, reference, ones, rest, mass, shard, 1.0 / divisor,
                                     logits.dtype)


def _round(total, dtype):
    """The summed float64 loss in the caller's dtype: a NumPy scalar, or a 0-d CuPy array."""
    return _tail.narrowed(total, dtype)[()]


# ---------------------------------------------------------------------------------------
# Graph building


def _as_dask(x, name: str, *, optional: bool = False):
    """``x`` as a dask array (None stays None where the argument is ``optional``), of known
    chunk sizes: an unknown size is NaN, and its shape would compare unequal to any."""
    if x is None and optional:
        return None
    if not _registry.is_dask_array(x):
        try:
            x = da.asarray(x)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be an array, got {type(x).__name__}: {exc}") from exc
    if not hasattr(x, "to_delayed"):
        # The fixed summation tree is built from delayed blocks.
        raise TypeError(
            f"{name} is a dask array of the experimental query-planning implementation, which "
            "fastloss.dask does not support yet: set dask.config 'array.query-planning' to False"
        )
    _check_known_chunks(x, name)
    return x


def _refuse_out(out) -> None:
    if out is not None:
        raise TypeError(
            "out= is not supported for dask arrays: the gradient is a new lazy dask array; "
            "write it where it should go with da.store(grad, target) or grad.to_zarr(...)"
        )


def _check_known_chunks(x, name: str) -> None:
    if any(math.isnan(size) for sizes in x.chunks for size in sizes):
        raise ValueError(
            f"{name} has unknown chunk sizes; call {name}.compute_chunk_sizes() first"
        )


def _chunk_backend(backend, **arrays) -> str:
    """The backend every chunk runs on, from the arrays' chunk types (TypeError where a
    chunk type does not suit it, as in memory)."""
    metas = {name: meta_from_array(x) for name, x in arrays.items() if x is not None}
    chosen = _registry.resolve(backend, *metas.values())
    for name, meta in metas.items():
        _registry.backend(chosen).asarray(meta, name)
    return chosen


def _blocks(results, index, dtype, like, chunks=None):
    """Item ``index`` of every block of ``results`` (an array whose blocks are the tuples a
    chunk task returns) as a dask array of ``like``'s type, with the chunks of ``results`` or
    ``chunks``."""
    return results.map_blocks(operator.getitem, index, dtype=dtype, chunks=chunks,
                              meta=meta_from_array(like, ndim=results.ndim, dtype=dtype))


def _tree_sum(partials):
    """The :func:`pairwise_sum` of delayed partials, as tasks of :data:`FAN_IN` inputs."""
    while len(partials) > 1:
        partials = [
            dask.delayed(_sum_of, pure=True)(*partials[first:first + FAN_IN])
            for first in range(0, len(partials), FAN_IN)
        ]
    return partials[0]


def _sum_of(*values):
    return pairwise_sum(values)


def _partials(results, index):
    """Item ``index`` of every block of ``results``, delayed, in row-major block order."""
    blocks = results.to_delayed(optimize_graph=False).ravel()
    return [dask.delayed(operator.getitem, pure=True)(block, index) for block in blocks]


def _scalar(partials, dtype, like):
    """The loss: the tree sum of the partials, rounded once to ``dtype``, as a 0-d array."""
    total = dask.delayed(_round, pure=True)(_tree_sum(partials), dtype)
    return da.from_delayed(total, shape=(), dtype=dtype,
                           meta=meta_from_array(like, ndim=0, dtype=dtype))


def _per_element(values, name: str, x):
    """``values`` (broadcastable to ``x``) checked, broadcast and chunked like ``x``."""
    if values is None:
        return None
    check_per_element(values, name, x.shape)
    return da.broadcast_to(values, x.shape).rechunk(x.chunks)


def evaluate(spec, x, target, reduction, backend, out, want_grad, *, param=0.0, weight=None,
             aux=None, aux_name="aux", divisor=None):
    """Lazy ``(loss, grad or None)`` of an elementwise loss (``fastloss.losses._elementwise``'s
    ``evaluate``, which calls this when an argument is a dask array)."""
    reduction = v.check_reduction(reduction)
    _refuse_out(out)
    x, target = _as_dask(x, spec.input), _as_dask(target, "target")
    weight = _as_dask(weight, "weight", optional=True)
    aux = _as_dask(aux, aux_name, optional=True)
    chosen = _chunk_backend(backend, **{spec.input: x, "target": target, "weight": weight,
                                        aux_name: aux})
    _registry.backend(chosen).check_float(x, spec.input)
    _registry.backend(chosen).check_float(target, "target")
    if target.shape != x.shape:
        raise ValueError(
            f"target must have the shape of {spec.input} {x.shape}; got {target.shape}"
        )
    target = target.rechunk(x.chunks)
    weight, aux = _per_element(weight, "weight", x), _per_element(aux, aux_name, x)
    index = tuple(range(x.ndim))
    results = da.blockwise(
        _elementwise_block, index, x, index, target, index,
        weight, None if weight is None else index, aux, None if aux is None else index,
        meta=np.empty((0,) * x.ndim, dtype=object), spec=spec, backend=chosen,
        divisor=mean_divisor(reduction, x.size, divisor), param=param, want_grad=want_grad,
        want_items=reduction == "none",
    )
    if reduction == "none":
        loss = _blocks(results, 1, x.dtype, x)
    else:
        loss = _scalar(_partials(results, 2), x.dtype, x)
    return loss, (_blocks(results, 0, x.dtype, x) if want_grad else None)


def _ce_target(target, logits, chosen, ignore_index=None):
    """``(target aligned to the logits' chunks, its blockwise index)``, checked."""
    rows, classes = logits.shape
    if target.dtype.kind in "iu":
        if target.shape != (rows,):
            raise ValueError(
                f"target of class indices must have shape (N,) = ({rows},); got {target.shape}"
            )
        return target.rechunk((logits.chunks[0],)), "i"
    if target.dtype.kind == "f" or target.dtype.name == "bfloat16":
        _registry.backend(chosen).check_float(target, "target")
        v.check_probability_target(target, logits.shape, ignore_index)
        return target.rechunk(logits.chunks), "ij"
    raise TypeError(
        "target must be integer class indices of shape (N,) or floating-point class "
        f"probabilities of shape (N, k); got dtype {target.dtype}"
    )


def _ce_weight(weight, logits):
    if weight is None:
        return None
    class_labels.check_class_weight(weight, logits.shape[1])
    return weight.astype(np.float64).rechunk((logits.chunks[1],))


def _ce_divisor(target, weight, logits, reduction, chosen, options):
    """What the loss and gradient divide by: 1, the row count, or (a "mean" over labels) a
    0-d dask array, the fixed-tree sum of the row chunks' weight sums of kept rows."""
    if reduction != "mean":
        return 1.0
    if target.dtype.kind not in "iu":
        return np.float64(logits.shape[0])  # an empty batch's 1 / 0 is inf, as in memory
    whole_weight = None if weight is None else weight.rechunk(-1)
    block = dask.delayed(_divisor_block, pure=True)
    partials = [
        block(labels, whole_weight, backend=chosen, classes=logits.shape[1],
              ignore_index=options["ignore_index"],
              check=_registry.backend(chosen).host or options["check_labels"])
        for labels in target.to_delayed(optimize_graph=False).ravel()
    ]
    kept = _tree_sum(partials)
    return da.from_delayed(dask.delayed(class_labels.mean_of, pure=True)(kept), shape=(),
                           dtype=np.float64,
                           meta=meta_from_array(logits, ndim=0, dtype=np.float64))


def _whole_rows(block, arguments, divisor_argument, logits, want_grad, want_rows,
                grad_chunks=None, **keywords):
    """Lazy ``(loss, grad or None)`` over logits of one class chunk: ``block`` (a kernel call)
    per row chunk, the partials summed by the fixed tree; the gradient rechunked to
    ``grad_chunks`` (the caller's logits' chunks) when given."""
    dtype = logits.dtype
    results = da.blockwise(
        block, "ij", *arguments, *divisor_argument, meta=np.empty((0, 0), dtype=object),
        want_grad=want_grad, want_rows=want_rows, **keywords,
    )
    if want_rows:
        value = _blocks(results, 1, dtype, logits, chunks=(logits.chunks[0], (1,)))[:, 0]
    else:
        value = _scalar(_partials(results, 2), dtype, logits)
    if not want_grad:
        return value, None
    grad = _blocks(results, 0, dtype, logits)
    return value, grad if grad_chunks is None else grad.rechunk(grad_chunks)


def _softmax_cross_entropy(logits, target, reduction, ignore_index, label_smoothing, weight,
                           backend, out, want_grad, check_labels):
    reduction = v.check_reduction(reduction)
    options = {
        "ignore_index": v.check_int(ignore_index, "ignore_index"),
        "label_smoothing": v.check_probability(label_smoothing, "label_smoothing"),
        "check_labels": v.check_bool(check_labels, "check_labels"),
    }
    options["kernel_args"] = (options["ignore_index"], options["label_smoothing"])
    _refuse_out(out)
    logits = _as_dask(logits, "logits")
    target, weight = _as_dask(target, "target"), _as_dask(weight, "weight", optional=True)
    chosen = _chunk_backend(backend, logits=logits, target=target, weight=weight)
    class_labels.check_class_rows(logits, "logits", _registry.backend(chosen))
    target, target_index = _ce_target(target, logits, chosen, options["ignore_index"])
    weight = _ce_weight(weight, logits)
    divisor = _ce_divisor(target, weight, logits, reduction, chosen, options)
    arguments = (logits, "ij", target, target_index, weight, None if weight is None else "j")
    divisor_argument = (divisor, () if isinstance(divisor, da.Array) else None)
    dtype, want_rows = logits.dtype, reduction == "none"

    if len(logits.chunks[1]) == 1:
        return _whole_rows(_rows_block, arguments, divisor_argument, logits, want_grad,
                           want_rows, loss="softmax_cross_entropy", backend=chosen,
                           options=options)

    classes = logits.shape[1]
    columns = da.arange(classes, chunks=(logits.chunks[1],))
    shard_options = {"backend": chosen, "classes": classes, "options": options}
    stats = da.blockwise(
        _stats_block, "ij", *arguments, columns, "j",
        meta=np.empty((0, 0), dtype=object), **shard_options,
    )
    rows = da.blockwise(
        _combine_block, "i", stats, "ij", *divisor_argument, concatenate=False,
        meta=np.empty((0,), dtype=object), loss_dtype=dtype, want_rows=want_rows,
    )
    if want_rows:
        loss = _blocks(rows, 1, dtype, logits, chunks=(logits.chunks[0],))
    else:
        loss = _scalar(_partials(rows, 2), dtype, logits)
    if not want_grad:
        return loss, None
    grad = da.blockwise(
        _shard_grad_block, "ij", *arguments, columns, "j", rows, "i", *divisor_argument,
        meta=meta_from_array(logits), **shard_options,
    )
    return loss, grad


def _labelled_rows(x, name, target, weight, backend, out):
    """``(x, target, weight, backend, chunks)`` of a loss over rows with class-index targets,
    checked as in memory, x rechunked to one class chunk (a row's loss reads one element, or
    needs the whole row), target and weight chunked to match; ``chunks``: x's own chunks,
    the gradient's."""
    _refuse_out(out)
    x = _as_dask(x, name)
    target, weight = _as_dask(target, "target"), _as_dask(weight, "weight", optional=True)
    chosen = _chunk_backend(backend, **{name: x, "target": target, "weight": weight})
    class_labels.check_class_rows(x, name, _registry.backend(chosen))
    class_labels.check_label_dtype(target)
    chunks = x.chunks
    x = x.rechunk((chunks[0], (x.shape[1],)))
    target, _ = _ce_target(target, x, chosen)
    return x, target, _ce_weight(weight, x), chosen, chunks


def _nll(log_probs, target, reduction, ignore_index, weight, backend, out, want_grad,
         check_labels):
    """NLL over rows of log-probabilities in one class chunk; otherwise as cross-entropy."""
    reduction = v.check_reduction(reduction)
    ignore_index = v.check_int(ignore_index, "ignore_index")
    options = {"ignore_index": ignore_index,
               "check_labels": v.check_bool(check_labels, "check_labels"),
               "kernel_args": (ignore_index,)}
    x, target, weight, chosen, chunks = _labelled_rows(log_probs, "log_probs", target, weight,
                                                       backend, out)
    divisor = _ce_divisor(target, weight, x, reduction, chosen, options)
    arguments = (x, "ij", target, "i", weight, None if weight is None else "j")
    divisor_argument = (divisor, () if isinstance(divisor, da.Array) else None)
    return _whole_rows(_rows_block, arguments, divisor_argument, x, want_grad,
                       reduction == "none", chunks, loss="nll", backend=chosen,
                       options=options)


def _multi_margin(scores, target, reduction, p, margin, weight, backend, out, want_grad,
                  check_labels):
    """The multi-class hinge loss over rows of scores in one class chunk."""
    reduction = v.check_reduction(reduction)
    options = {"ignore_index": None, "check_labels": v.check_bool(check_labels, "check_labels"),
               "kernel_args": (v.check_margin_power(p), v.check_real(margin, "margin"))}
    x, target, weight, chosen, chunks = _labelled_rows(scores, "scores", target, weight,
                                                       backend, out)
    divisor = float(x.shape[0]) if reduction == "mean" else 1.0
    arguments = (x, "ij", target, "i", weight, None if weight is None else "j")
    return _whole_rows(_rows_block, arguments, (divisor, None), x, want_grad,
                       reduction == "none", chunks, loss="multi_margin", backend=chosen,
                       options=options)


@_quietly
def _entropy_block(logits, *, divisor, backend, want_grad, want_rows):
    """``(gradient, row entropies, float64 partial)`` of a chunk holding whole rows."""
    on = _registry.backend(backend)
    xp = on.xp
    with on.scope(logits):
        z = xp.ascontiguousarray(logits, dtype=on.compute_dtype(logits.dtype))
        grad = xp.empty(z.shape, z.dtype) if want_grad else None
        rows = xp.empty(z.shape[0], xp.float64) if want_rows else None
        partial = _registry.kernel("softmax_entropy", backend)(z, grad, rows, divisor)
        losses = None if rows is None else rows.astype(logits.dtype)[:, None]
        return _as(grad, logits), losses, _float64(partial, xp)


def _softmax_entropy(logits, reduction, backend, out, want_grad):
    reduction = v.check_reduction(reduction)
    _refuse_out(out)
    x = _as_dask(logits, "logits")
    chosen = _chunk_backend(backend, logits=x)
    class_labels.check_class_rows(x, "logits", _registry.backend(chosen))
    chunks = x.chunks
    x = x.rechunk((chunks[0], (x.shape[1],)))
    divisor = float(x.shape[0]) if reduction == "mean" else 1.0
    return _whole_rows(_entropy_block, (x, "ij"), (), x, want_grad, reduction == "none",
                       chunks, divisor=divisor, backend=chosen)


# ---------------------------------------------------------------------------------------
# Public functions: fastloss's signatures


def softmax_entropy(logits, *, reduction: str = "mean", backend: str = "auto"):
    """Lazy :func:`fastloss.softmax_entropy` of dask arrays (one class chunk per task)."""
    return _softmax_entropy(logits, reduction, backend, None, False)[0]


def softmax_entropy_grad(logits, *, reduction: str = "mean", backend: str = "auto", out=None):
    """Lazy :func:`fastloss.softmax_entropy_grad`: logits' shape, chunks and dtype."""
    return _softmax_entropy(logits, reduction, backend, out, True)[1]


def softmax_entropy_with_grad(logits, *, reduction: str = "mean", backend: str = "auto",
                              out=None):
    """Lazy ``(entropy, grad)`` of :func:`fastloss.softmax_entropy_with_grad`."""
    return _softmax_entropy(logits, reduction, backend, out, True)


def multi_margin(scores, target, *, reduction: str = "mean", p: int = 1, margin: float = 1.0,
                 weight=None, backend: str = "auto", check_labels: bool = False):
    """Lazy :func:`fastloss.multi_margin` of dask arrays (one class chunk per task)."""
    return _multi_margin(scores, target, reduction, p, margin, weight, backend, None, False,
                         check_labels)[0]


def multi_margin_grad(scores, target, *, reduction: str = "mean", p: int = 1,
                      margin: float = 1.0, weight=None, backend: str = "auto",
                      check_labels: bool = False, out=None):
    """Lazy :func:`fastloss.multi_margin_grad`: scores' shape, chunks and dtype."""
    return _multi_margin(scores, target, reduction, p, margin, weight, backend, out, True,
                         check_labels)[1]


def multi_margin_with_grad(scores, target, *, reduction: str = "mean", p: int = 1,
                           margin: float = 1.0, weight=None, backend: str = "auto",
                           check_labels: bool = False, out=None):
    """Lazy ``(loss, grad)`` of :func:`fastloss.multi_margin_with_grad`."""
    return _multi_margin(scores, target, reduction, p, margin, weight, backend, out, True,
                         check_labels)


def nll(log_probs, target, *, reduction: str = "mean", ignore_index: int = -100, weight=None,
        backend: str = "auto", check_labels: bool = False):
    """Lazy :func:`fastloss.nll` of dask arrays: a 0-d dask array (``"none"``: ``(N,)`` with
    the row chunks). Any chunks; a task takes whole rows (the classes in one chunk)."""
    return _nll(log_probs, target, reduction, ignore_index, weight, backend, None, False,
                check_labels)[0]


def nll_grad(log_probs, target, *, reduction: str = "mean", ignore_index: int = -100,
             weight=None, backend: str = "auto", check_labels: bool = False, out=None):
    """Lazy :func:`fastloss.nll_grad`: log_probs' shape, chunks and dtype."""
    return _nll(log_probs, target, reduction, ignore_index, weight, backend, out, True,
                check_labels)[1]


def nll_with_grad(log_probs, target, *, reduction: str = "mean", ignore_index: int = -100,
                  weight=None, backend: str = "auto", check_labels: bool = False, out=None):
    """Lazy ``(loss, grad)`` of :func:`fastloss.nll_with_grad`."""
    return _nll(log_probs, target, reduction, ignore_index, weight, backend, out, True,
                check_labels)


def softmax_cross_entropy(
    logits, target, *, reduction: str = "mean", ignore_index: int = -100,
    label_smoothing: float = 0.0, weight=None, backend: str = "auto", check_labels: bool = False,
):
    """Lazy :func:`fastloss.softmax_cross_entropy` of dask arrays: a 0-d dask array
    (``"none"``: ``(N,)`` with the logits' row chunks). Chunks along rows and classes."""
    return _softmax_cross_entropy(
        logits, target, reduction, ignore_index, label_smoothing, weight, backend, None, False,
        check_labels,
    )[0]


def softmax_cross_entropy_grad(
    logits, target, *, reduction: str = "mean", ignore_index: int = -100,
    label_smoothing: float = 0.0, weight=None, backend: str = "auto", check_labels: bool = False,
    out=None,
):
    """Lazy :func:`fastloss.softmax_cross_entropy_grad`: logits' shape, chunks and dtype."""
    return _softmax_cross_entropy(
        logits, target, reduction, ignore_index, label_smoothing, weight, backend, out, True,
        check_labels,
    )[1]


def softmax_cross_entropy_with_grad(
    logits, target, *, reduction: str = "mean", ignore_index: int = -100,
    label_smoothing: float = 0.0, weight=None, backend: str = "auto", check_labels: bool = False,
    out=None,
):
    """Lazy ``(loss, grad)`` of :func:`fastloss.softmax_cross_entropy_with_grad`."""
    return _softmax_cross_entropy(
        logits, target, reduction, ignore_index, label_smoothing, weight, backend, out, True,
        check_labels,
    )


# ---------------------------------------------------------------------------------------------
# Softmax, log-softmax and their vector-Jacobian products


def _row_function(name, out, backend, **arrays):
    """``fastloss.<name>`` of dask arrays, one chunk of whole rows per task: the arrays are
    rechunked to the first one's row chunks and one class chunk. Shapes and dtypes are
    checked when the graph is built, by the in-memory checks."""
    _refuse_out(out)
    arrays = {argument: _as_dask(x, argument) for argument, x in arrays.items()}
    chosen = _chunk_backend(backend, **arrays)
    function = getattr(importlib.import_module("fastloss"), name)
    softmax_functions.check_rows(arrays, _registry.backend(chosen))
    lead, x = next(iter(arrays.items()))
    blocks = [y.rechunk((x.chunks[0], (x.shape[1],))) for y in arrays.values()]
    return da.map_blocks(function, *blocks, backend=chosen, dtype=x.dtype,
                         meta=meta_from_array(x))


def softmax(z, *, out=None, backend: str = "auto"):
    """Lazy :func:`fastloss.softmax`: z's shape, row chunks and dtype, one class chunk."""
    return _row_function("softmax", out, backend, z=z)


def log_softmax(z, *, out=None, backend: str = "auto"):
    """Lazy :func:`fastloss.log_softmax`: z's shape, row chunks and dtype, one class chunk."""
    return _row_function("log_softmax", out, backend, z=z)


def softmax_backward(p, grad_p, *, out=None, backend: str = "auto"):
    """Lazy :func:`fastloss.softmax_backward`: p's shape, row chunks and dtype."""
    return _row_function("softmax_backward", out, backend, p=p, grad_p=grad_p)


def log_softmax_backward(logp, grad_logp, *, out=None, backend: str = "auto"):
    """Lazy :func:`fastloss.log_softmax_backward`: logp's shape, row chunks and dtype."""
    return _row_function("log_softmax_backward", out, backend, logp=logp, grad_logp=grad_logp)
