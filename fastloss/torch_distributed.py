"""Vocabulary-parallel softmax cross-entropy over ``torch.distributed``.

When the logits' class axis is sharded across ranks (Megatron-style tensor parallelism of
the output layer), each rank holds ``(N, width)`` logits of a contiguous range of
classes and the same ``(N,)`` global labels. :func:`vocab_parallel_cross_entropy` gives
every rank the loss of the whole rows and the gradient of its own shard, exchanging a
few numbers per rank and two all-reduces of ``N`` and ``3 N`` float64 numbers, never the
logits:

0. each rank's shard width, ``N``, options and a summary of its labels (``_CALL_FIELDS``:
   int64 numbers a rank, summed into place): the class ranges follow from the widths
   (rank ``r`` holds classes ``[sum(widths[:r]), sum(widths[:r + 1]))``, so shards may
   have different widths), and every rank checks every rank's call, so that a bad one is
   the same ValueError on every rank, not one rank's error while the others wait in the
   next collective, nor a collective of unequal sizes (which hangs or mixes up the ranks'
   numbers);
1. MAX of the shard's row maxima;
2. SUM, in one call, of the shard's ``sum_c exp(z_ic - M_i)`` in two parts (its logits
   equal to ``M_i``, counted, and the sum over the others: a confident row's sum of
   exponentials is ``1 + r``, and its loss and label gradient are made of ``r``) and of
   its target gap ``sum_c q_ic (M_i - z_ic)`` (with ``q`` the smoothed one-hot target:
   the label's logit, relative to the row maximum, plus the smoothing term).

The shard's sums and gradient are computed by ``fastloss._class_shards``, the same code
as fastloss.dask's class chunks, on the tensors themselves (any device, any floating
dtype; 16-bit logits are computed in float32). The order in which an all-reduce adds the
ranks' numbers is the communication backend's.

Importing this module imports torch (it is re-exported by ``fastloss.torch``).
"""

from __future__ import annotations

import struct

import torch
import torch.distributed as dist

from fastloss import _validate

__all__ = ["vocab_parallel_cross_entropy"]

# Integer-like dtypes that are not class indices (fastloss.torch's cross_entropy refuses them
# too). uint64: .long() would wrap 2**63 and up, 2**64 - 100 to an ignored -100; PyTorch
# takes int64 or uint8 labels.
NOT_CLASS_INDICES = (torch.bool, torch.complex64, torch.complex128, torch.uint64)
_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _kind(value) -> str:
    """A tensor's dtype, or the type of anything else (a NumPy array's too, with its dtype)."""
    if isinstance(value, torch.Tensor):
        return str(value.dtype)
    dtype = getattr(value, "dtype", None)
    return type(value).__name__ + (f" of {dtype}" if dtype is not None else "")


def _check_arguments(logits_shard, target, group) -> None:
    if not isinstance(logits_shard, torch.Tensor) or logits_shard.dtype not in _FLOATS:
        got = _kind(logits_shard)
        raise TypeError("logits_shard must be a torch.Tensor of float16, bfloat16, float32 or "
                        f"float64; got {got}")
    if logits_shard.layout != torch.strided or logits_shard.device.type not in ("cpu", "cuda"):
        raise TypeError(f"logits_shard must be a dense CPU or CUDA tensor; got layout "
                        f"{logits_shard.layout} on {logits_shard.device}")
    if logits_shard.dim() != 2:
        raise ValueError(
            "logits_shard must be 2-D (N, width): this rank's columns of (N, k) logits; "
            f"got shape {tuple(logits_shard.shape)}"
        )
    if (not isinstance(target, torch.Tensor) or target.is_floating_point()
            or target.dtype in NOT_CLASS_INDICES):
        got = _kind(target)
        raise TypeError(f"target must be a torch.Tensor of integer class indices (not uint64); "
                        f"got {got}")
    if target.shape != logits_shard.shape[:1]:
        raise ValueError(
            f"target must have shape (N,) = ({logits_shard.shape[0]},); "
            f"got {tuple(target.shape)}"
        )
    if target.device != logits_shard.device:
        raise TypeError(
            f"target is on {target.device} but logits_shard is on {logits_shard.device}"
        )
    if group is not None and dist.is_available() and not isinstance(group, dist.ProcessGroup):
        raise TypeError(
            f"group must be a torch.distributed ProcessGroup or None; got {type(group).__name__}"
        )
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            "vocab_parallel_cross_entropy needs torch.distributed: call "
            "torch.distributed.init_process_group first"
        )


# What each rank tells the others about its call (all-reduce 0), in this order: its shard
# width, then what must be the same on every rank: N, the options, and a summary of its
# labels (a sum weighted by position, which tells a permutation apart; the count not
# ignored; the lowest and highest of those).
_CALL_FIELDS = ("width", "N", "reduction", "ignore_index", "label_smoothing", "target",
                "target", "target", "target")
_SUMMARY = _CALL_FIELDS.index("target")  # where the labels' summary starts
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _class_range(logits, labels, options, group) -> tuple[int, int]:
    """All-reduce 0: this rank's ``(start, classes)``. Every rank checks every rank's call,
    so that a bad one is the same ValueError on every rank: ``N`` and the options must be
    the same everywhere, the targets too (by their summary, int64 sums wrapped), and each
    label in ``[0, k)`` or ``ignore_index``. On a GPU the summary is computed on the
    device and read with the widths, in the call's one host synchronisation."""
    rows, width = logits.shape
    ignore_index = options["ignore_index"]
    # int64 throughout, label_smoothing as its float64's bits (-0.0 as 0.0): every value
    # exact (an ignore_index past 2**53 would round as a float64).
    mine = torch.tensor((width, rows, _validate.REDUCTIONS.index(options["reduction"]),
                         ignore_index, _bits(options["label_smoothing"] + 0.0)),
                        dtype=torch.int64)
    device = logits.device
    if device.type == "cuda":
        mine = mine.pin_memory()  # copied to the device without a synchronisation
    if rows:
        kept = labels != ignore_index
        positions = torch.arange(1, rows + 1, dtype=torch.int64, device=device)
        summary = torch.stack((
            (labels * positions).sum(), kept.sum(),
            torch.where(kept, labels, _INT64_MAX).min(),
            torch.where(kept, labels, _INT64_MIN).max(),
        ))
    else:
        summary = torch.zeros(4, dtype=torch.int64, device=device)
    calls = _exchange(torch.cat((mine.to(device, non_blocking=True), summary)), group)
    world = len(calls)
    refused = [other for other, call in enumerate(calls) if call[0] < 0]
    if refused:
        raise ValueError(
            f"rank(s) {refused} refused their arguments to vocab_parallel_cross_entropy (see "
            "their errors), so no rank computes it"
        )
    for field, name in enumerate(_CALL_FIELDS[1:], start=1):
        values = [call[field] for call in calls]
        if any(value != values[0] for value in values):
            if name == "target":
                raise ValueError(
                    "every rank must call vocab_parallel_cross_entropy with the same target; "
                    f"its summary differs between ranks 0..{world - 1}: "
                    f"{[call[_SUMMARY:] for call in calls]}"
                )
            if name == "reduction":
                values = [_validate.REDUCTIONS[value] for value in values]
            elif name == "label_smoothing":
                values = [_float(value) for value in values]
            raise ValueError(
                f"every rank must call vocab_parallel_cross_entropy with the same {name}; "
                f"got {name} = {values} on ranks 0..{world - 1}"
            )
    widths = [call[0] for call in calls]
    classes = sum(widths)
    if classes == 0:
        raise ValueError("the shards of all ranks together have no class (k = 0)")
    # The same summary everywhere: rank 0's labels stand for every rank's.
    kept, lowest, highest = calls[0][_SUMMARY + 1:]
    for label in (lowest, highest) if kept else ():
        if not 0 <= label < classes:
            raise ValueError(
                f"target holds class index {label}, outside [0, {classes}) and not "
                f"ignore_index={ignore_index}"
            )
    return sum(widths[:dist.get_rank(group)]), classes


def _tell_refused(group) -> None:
    """This rank's part of all-reduce 0 for a call its own checks refused (a width of -1), so
    that the other ranks raise too rather than wait; nothing without torch.distributed. On
    the default group where ``group`` is not one, on the device the group's backend takes."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    if not isinstance(group, dist.ProcessGroup):
        group = None
    device = torch.device("cpu")
    if dist.get_backend(group) == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    refused = torch.zeros(len(_CALL_FIELDS), dtype=torch.int64, device=device)
    refused[0] = -1
    _exchange(refused, group)


def _exchange(mine, group) -> list[list[int]]:
    """All-reduce 0 itself: every rank's ``_CALL_FIELDS`` numbers, by rank, from this rank's
    ``mine`` (int64, on the device the exchange runs on); one small host read."""
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    fields = len(_CALL_FIELDS)
    calls = torch.zeros(world * fields, dtype=torch.int64, device=mine.device)
    calls[rank * fields:(rank + 1) * fields] = mine
    dist.all_reduce(calls, group=group)  # each rank's numbers plus zeros
    return calls.view(world, fields).tolist()


def _bits(value: float) -> int:
    """The bits of the float64 ``value`` as an int64."""
    return struct.unpack("<q", struct.pack("<d", value))[0]


def _float(bits: int) -> float:
    """The float64 whose bits are the int64 ``bits`` (the inverse of :func:`_bits`)."""
    return struct.unpack("<d", struct.pack("<q", bits))[0]


def _forward(logits_shard, target, group, options, want_grad):
    # Imported here: fastloss.torch re-exports this module, and its other losses do not need
    # array_api_compat.
    from fastloss import _class_shards as shards

    logits = logits_shard.detach()
    labels = target.long()
    reference = shards.row_max(logits)  # first: on a GPU it runs while _class_range waits
    start, classes = _class_range(logits, labels, options, group)
    dist.all_reduce(reference, op=dist.ReduceOp.MAX, group=group)
    ignore_index = options["ignore_index"]
    shard = shards.ShardTarget(start=start, classes=classes, labels=labels,
                               ignore_index=ignore_index,
                               label_smoothing=options["label_smoothing"])
    ones, rest, _, gaps = shards.shard_sums(logits, reference, shard)
    sums = torch.stack([ones, rest, gaps])
    dist.all_reduce(sums, group=group)
    ones, rest, gaps = sums.unbind()
    mass = shards.label_mass(labels, ignore_index, classes)
    ignored = shard.ignored()
    losses = shards.row_losses(ones, rest, mass, gaps, ignored)
    scale = 1.0
    if options["reduction"] == "mean":
        scale = 1.0 / (~ignored).sum(dtype=torch.float64)
    loss = losses if options["reduction"] == "none" else losses.sum() * scale
    grad = None
    if want_grad:
        grad = shards.shard_gradient(logits, reference, ones, rest, mass, shard, scale,
                                     logits.dtype)
    return loss.to(logits.dtype), grad


class _VocabParallelCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits_shard, target, group, options):
        from fastloss.torch import _save_grad_for_backward

        loss, grad = _forward(logits_shard, target, group, options, want_grad=True)
        _save_grad_for_backward(ctx, grad)
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        from fastloss.torch import _hand_over, _refuse_double_backward, _scale

        _refuse_double_backward(
            "vocab_parallel_cross_entropy",
            "torch.nn.functional.cross_entropy of the gathered logits")
        (grad,) = ctx.saved_tensors
        return _scale(grad, _hand_over(ctx, grad, grad_output)), None, None, None


def vocab_parallel_cross_entropy(
    logits_shard: torch.Tensor,
    target: torch.Tensor,
    *,
    group=None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Softmax cross-entropy of logits whose class axis is split across the ranks of
    ``group`` (the default process group when None).

    ``logits_shard``: ``(N, width)`` floating-point logits of this rank's classes; the
    ranks' shards are contiguous class ranges in rank order (widths may differ: they are
    exchanged first). ``target``: ``(N,)`` integer global class indices,
    the same on every rank, on ``logits_shard``'s device. ``ignore_index``,
    ``label_smoothing`` and ``reduction`` mean what they mean in
    ``torch.nn.functional.cross_entropy``: the result equals ``cross_entropy`` of the
    gathered ``(N, k)`` logits, returned on every rank in ``logits_shard``'s dtype (per row
    for ``"none"``). It is differentiable with respect to ``logits_shard`` (once): the
    forward pass computes this rank's gradient, the backward pass only scales it, with no
    communication. Every rank of the group must call it with the same ``N``, options and
    targets: each rank checks the others' (they come with the widths; the targets by a
    summary), and a mismatch is a ValueError on every rank, as is a label outside ``[0, k)``
    that is not ``ignore_index``, also on CUDA.

    Raises TypeError or ValueError naming the argument for bad input (a rank whose own
    arguments are refused raises its error, and the others a ValueError naming it),
    RuntimeError when torch.distributed is not initialised. On CUDA, reading the exchanged
    numbers is one small host synchronisation.
    """
    from fastloss.torch import _refuse_tangents, _refuse_transforms

    try:
        _refuse_tangents("vocab_parallel_cross_entropy", logits_shard, target)
        _refuse_transforms("vocab_parallel_cross_entropy", logits_shard, target)
        options = {
            "reduction": _validate.check_reduction(reduction),
            "ignore_index": _validate.check_int(ignore_index, "ignore_index"),
            "label_smoothing": _validate.check_probability(label_smoothing, "label_smoothing"),
        }
        _check_arguments(logits_shard, target, group)
    except (TypeError, ValueError, NotImplementedError):
        _tell_refused(group)
        raise
    if torch.is_grad_enabled() and logits_shard.requires_grad:
        return _VocabParallelCrossEntropy.apply(logits_shard, target, group, options)
    return _forward(logits_shard, target, group, options, want_grad=False)[0]
