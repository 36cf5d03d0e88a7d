"""Softmax cross-entropy when a row's classes are split into shards.

Used where no one place holds a whole row: class chunks of a dask array
(``fastloss.dask``) and vocabulary-parallel ranks (``fastloss.torch_distributed``).
Each shard reduces its own columns to four float64 numbers per row; the numbers
of all shards combine into the row's loss; each shard then writes the gradient of
its own columns. Nothing but those per-row numbers ever leaves a shard.

Row ``i`` has logits ``z_ic`` over all ``k`` classes, class weights ``w_c`` and the
target distribution ``q_ic = (1 - eps) t_ic + eps / k`` (``t`` the one-hot label or
the given probabilities; ``q = 0`` on an ignored row). For a per-row reference
``M_i`` (the row maximum, for stability):

    s_i = sum_c exp(z_ic - M_i) = n_i + r_i    (n_i: the logits equal to M_i, each 1;
                                                r_i: the sum over the others)
    S_i = sum_c q_ic w_c
    B_i = sum_c q_ic w_c (M_i - z_ic)
    L_i = S_i log1p((n_i - 1) + r_i) + B_i    (= -sum_c q_ic w_c log_softmax(z_i)_c)
    dL_i / dz_ic = exp(z_ic - M_i) S_i / s_i - q_ic w_c

``n``, ``r``, ``S`` and ``B`` are sums over classes, so they add across shards once
they share ``M_i`` (:func:`rebase` moves a shard's sums to another reference). With
the row maximum as reference every term of ``B`` is >= 0 for non-negative weights: the
loss has no cancellation, whatever the logits' magnitude. A product with a zero factor
is zero even against an infinite one (``0 log 0 = 0``: a zero target weight on a
``-inf`` logit adds nothing), and a shard whose logits are all ``-inf`` adds nothing to
``s``.

``s`` travels as ``(n, r)`` for a confident row, whose max logit stands alone far above
the rest: its ``s`` is ``1 + r`` with ``r`` tiny, and ``r`` is its loss (``log1p(r)``)
and its label's gradient (``-r / (1 + r)``, computed as ``((e_y - n) - r) S / s``);
summed into the 1 it would keep only an ulp of 1 (a float64 loss of 1e-10 about 1e-6
off, one below 1e-16 zero), as the in-memory backends once did.

The code is written against the array API standard through ``array_api_compat``:
the same functions run on NumPy and CuPy chunks and on PyTorch tensors on any
device. Per-row results are float64 arrays of shape ``(N,)``; logits are computed
in float32 for 16-bit inputs and in their own dtype otherwise, with float64 sums.
Invalid labels (not ``ignore_index`` and outside ``[0, k)``) make their row's loss
and gradient NaN; callers that can afford the check raise instead.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import array_api_compat

SLAB_ELEMENTS = 1 << 20  # logits handled at a time: bounds the float64 temporaries


@dataclasses.dataclass(frozen=True)
class ShardTarget:
    """The target as one shard sees it.

    ``start``: the global index of the shard's first class; ``classes``: ``k``, the
    number of classes of the whole row. Exactly one of ``labels`` (``(N,)`` integer
    global class indices, the same array on every shard) and ``probabilities``
    (``(N, width)``: the shard's own columns) is given. ``weight``: ``None`` or the
    shard's ``(width,)`` float64 class weights.
    """

    start: int
    classes: int
    labels: object = None
    probabilities: object = None
    weight: object = None
    ignore_index: int = -100
    label_smoothing: float = 0.0

    def ignored(self):
        """The rows whose label is ``ignore_index`` (boolean ``(N,)``); None for probabilities."""
        return None if self.labels is None else self.labels == self.ignore_index

    def rows(self, rows: slice) -> ShardTarget:
        if self.labels is not None:
            return dataclasses.replace(self, labels=self.labels[rows])
        return dataclasses.replace(self, probabilities=self.probabilities[rows, :])


def _namespace(x):
    return array_api_compat.array_namespace(x)


def _times(xp, factor, value):
    """``factor * value``, zero wherever ``factor`` is zero (even where ``value`` is inf/NaN)."""
    return xp.where(factor == 0, 0.0, factor * value)


def _gap_terms(xp, factor, gap):
    """``factor * gap``, zero wherever either is zero: a term of ``B`` at the reference itself
    adds nothing, even for an infinite weight (as ``-w log_softmax`` is inf, never NaN, on the
    row's maximum)."""
    return xp.where((factor == 0) | (gap == 0), 0.0, factor * gap)


def _shift(xp, reference):
    """What a shard subtracts before ``exp``: the reference, or 0 where it is ``-inf``."""
    return xp.where(reference == -math.inf, 0.0, reference)


def _work_dtype(xp, dtype):
    """16-bit floats are computed in float32; float32 and float64 in themselves."""
    return xp.float32 if xp.finfo(dtype).bits < 32 else dtype


def _slabs(rows: int, width: int) -> list[slice]:
    step = max(1, SLAB_ELEMENTS // max(width, 1))
    return [slice(first, min(first + step, rows)) for first in range(0, rows, step)]


def _zeros(xp, like, rows):
    return xp.zeros(rows, dtype=xp.float64, device=array_api_compat.device(like))


class _Slab:
    """A slab of a shard's rows: its logits in the work dtype, their exponentials shifted by
    the reference, and the target in two parts. ``label_mass``: the ``(1 - eps) w_y`` that
    the label's own column (``column``) carries, zero where the label is ignored or on
    another shard. ``dense``: ``q w`` of the smoothing, one ``(1, width)`` row for every kept
    row (``kept``, labels only), or of the probabilities, ``(N, width)``; or None."""

    def __init__(self, xp, logits, reference, target: ShardTarget):
        self.xp = xp
        self.width = logits.shape[1]
        work = _work_dtype(xp, logits.dtype)
        self.logits = xp.astype(logits, work, copy=False)
        self.shift = _shift(xp, reference)
        self.exp = xp.exp(self.logits - xp.astype(self.shift, work)[:, None])
        smoothing = target.label_smoothing / target.classes
        self.kept = self.label_mass = self.invalid = self.inside = None
        if target.labels is None:
            dense = (1.0 - target.label_smoothing) * xp.astype(target.probabilities, xp.float64)
            dense = dense + smoothing
        else:
            self.kept = target.labels != target.ignore_index
            local = target.labels - target.start
            inside = self.kept & (local >= 0) & (local < self.width)
            self.column = xp.where(inside, local, 0)
            self.inside = inside
            self.label_mass = (1.0 - target.label_smoothing) * xp.astype(inside, xp.float64)
            if target.weight is not None and self.width:
                self.label_mass = _times(xp, self.label_mass, xp.take(target.weight, self.column))
            self.invalid = self.kept & ((target.labels < 0) | (target.labels >= target.classes))
            dense = None
            if smoothing:
                dense = xp.full((1, self.width), smoothing, dtype=xp.float64,
                                device=array_api_compat.device(logits))
        if dense is not None and target.weight is not None:
            dense = dense * target.weight[None, :]
        self.dense = dense
        # Unweighted smoothing gives every class the same q: sum the gaps, then scale.
        self.uniform = target.labels is not None and target.weight is None

    def sums(self):
        """This slab's ``(n, r, S, B)`` against the reference it was built with: ``n`` its
        logits equal to a finite reference, ``r`` the sum of the others' exponentials."""
        xp = self.xp
        finite = xp.isfinite(self.shift)[:, None]
        at_reference = finite & (self.logits == xp.astype(self.shift, self.logits.dtype)[:, None])
        ones = xp.sum(xp.astype(at_reference, xp.float64), axis=1)
        rest = xp.sum(xp.where(at_reference, 0.0, self.exp), axis=1, dtype=xp.float64)
        mass = xp.zeros_like(rest)
        gaps = xp.zeros_like(rest)
        if self.label_mass is not None and self.width:
            label_logit = xp.take_along_axis(self.logits, self.column[:, None], axis=1)[:, 0]
            mass = mass + self.label_mass
            label_gap = self.shift - xp.astype(label_logit, xp.float64)
            gaps = gaps + _gap_terms(xp, self.label_mass, label_gap)
        if self.dense is not None and self.width:
            gap = self.shift[:, None] - xp.astype(self.logits, xp.float64)
            if self.uniform:
                dense_gaps = self.dense[0, 0] * xp.sum(gap, axis=1)
            else:
                dense_gaps = xp.sum(_gap_terms(xp, self.dense, gap), axis=1)
            dense_mass = xp.sum(self.dense, axis=1)
            if self.kept is not None:
                kept = xp.astype(self.kept, xp.float64)
                dense_mass, dense_gaps = _times(xp, kept, dense_mass), _times(xp, kept, dense_gaps)
            mass, gaps = mass + dense_mass, gaps + dense_gaps
        if self.invalid is not None:
            mass = xp.where(self.invalid, math.nan, mass)
        return ones, rest, mass, gaps

    def gradient(self, ratio, ones, rest, mass, scale, dtype):
        """``(exp(z - M) S / s - q w) * scale`` in ``dtype``, given ``ratio = S / s * scale``
        and the row's ``(n, r, S)``; computed in the work dtype, ignored rows set to exact
        zeros. One entry a row (:meth:`_paired_entry`) is ``((e_c - n) - r) ratio + (S - q_c
        w_c) scale`` in float64 (the numba kernel's form): exact where class c holds a
        confident row's max (``e_c = n = 1``) and its target all the mass (``S = q_c w_c``:
        a label without smoothing, a one-hot probability), where the direct form cancels to
        an ulp of 1."""
        xp = self.xp
        work = self.logits.dtype
        grad = self.exp * xp.astype(ratio, work)[:, None]
        if self.dense is not None:
            grad = grad - xp.astype(_times(xp, self.dense, scale), work)
        if self.width:
            column, chosen, target = self._paired_entry(ones, rest, mass)
            rows = xp.arange(grad.shape[0], device=array_api_compat.device(grad))
            exp = xp.astype(self.exp[rows, column], xp.float64)
            paired = ratio * ((exp - ones) - rest) + _times(xp, mass - target, scale)
            grad[rows, column] = xp.where(chosen, xp.astype(paired, work), grad[rows, column])
            if self.kept is not None:
                grad[~self.kept, :] = 0.0
        return xp.astype(grad, dtype, copy=False)

    def _paired_entry(self, ones, rest, mass):
        """``(column, chosen, q w)`` per row: the column whose gradient entry :meth:`gradient`
        writes in the paired form where ``chosen``, and its ``q w``. Against labels, the
        label's column, where this shard holds it; against probabilities, the row's max
        class, where this shard holds it, the row's sum of exponentials is below 2 (its
        only logit at the max) and its mass ``S`` is finite (an infinite one makes the entry
        inf or NaN either way, and the paired form's inf - inf NaN where the direct one is
        inf)."""
        xp = self.xp
        if self.label_mass is not None:
            dense = 0.0 if self.dense is None else xp.take(self.dense[0, :], self.column)
            return self.column, self.inside, self.label_mass + dense
        rows = xp.arange(self.logits.shape[0], device=array_api_compat.device(self.logits))
        column = xp.argmax(self.logits, axis=1)
        at_max = self.logits[rows, column] == xp.astype(self.shift, self.logits.dtype)
        chosen = at_max & xp.isfinite(self.shift) & (ones + rest < 2.0) & xp.isfinite(mass)
        return column, chosen, self.dense[rows, column]


def row_max(logits):
    """Each row's largest logit of the shard, as float64 ``(N,)``; ``-inf`` where it has
    no columns."""
    xp = _namespace(logits)
    rows, width = logits.shape
    if width == 0:
        return _zeros(xp, logits, rows) - math.inf
    return xp.astype(xp.max(logits, axis=1), xp.float64)


def shard_sums(logits, reference, target: ShardTarget):
    """The shard's ``(n, r, S, B)`` (each float64 ``(N,)``) against the per-row
    ``reference`` (the shard's own :func:`row_max`, or the whole row's)."""
    xp = _namespace(logits)
    rows, width = logits.shape
    sums = [_zeros(xp, logits, rows) for _ in range(4)]
    for part in _slabs(rows, width):
        slab = _Slab(xp, logits[part, :], reference[part], target.rows(part))
        for total, value in zip(sums, slab.sums(), strict=True):
            total[part] = value
    return tuple(sums)


def rebase(reference, ones, rest, mass, gaps, new_reference):
    """A shard's ``(n, r, B)`` moved from ``reference`` to ``new_reference`` (``S`` does
    not depend on the reference). Below a new reference, the logits at the old one join
    the rest."""
    xp = _namespace(rest)
    old, new = _shift(xp, reference), _shift(xp, new_reference)
    same = reference == new_reference
    moved = _times(xp, ones + rest, xp.exp(old - new))
    return (xp.where(same, ones, 0.0), xp.where(same, rest, moved),
            gaps + _gap_terms(xp, mass, new - old))


def combine(stats):
    """The row's ``(M, n, r, S, B)`` from every shard's ``(row_max, n, r, S, B)``, in shard
    order: the same inputs give the same bits."""
    xp = _namespace(stats[0][0])
    reference = functools.reduce(xp.maximum, [shard[0] for shard in stats])
    ones = rest = mass = gaps = 0.0
    for shard_max, shard_ones, shard_rest, shard_mass, shard_gaps in stats:
        moved_ones, moved_rest, moved_gaps = rebase(shard_max, shard_ones, shard_rest,
                                                    shard_mass, shard_gaps, reference)
        ones, rest = ones + moved_ones, rest + moved_rest
        mass, gaps = mass + shard_mass, gaps + moved_gaps
    return reference, ones, rest, mass, gaps


def row_losses(ones, rest, mass, gaps, ignored=None):
    """``L_i = S_i log1p((n_i - 1) + r_i) + B_i`` from the whole row's sums; exactly 0
    where ``ignored`` (``ShardTarget.ignored``), whatever the row's logits. A kept row of no
    mass (a zero class weight, zero probabilities) is ``0 * log s``: NaN where its logits
    are, as PyTorch's ``-0 * log_softmax``. (``n = 0`` only where the row's max is not
    finite: ``log1p(r - 1)`` is then ``log r``, -inf or NaN.)"""
    xp = _namespace(rest)
    losses = mass * xp.log1p((ones - 1.0) + rest) + gaps
    return losses if ignored is None else xp.where(ignored, 0.0, losses)


def label_mass(labels, ignore_index: int, classes: int):
    """``S`` of unweighted class-index targets, known without any shard: 1 per kept row,
    0 per ignored row, NaN per invalid label."""
    xp = _namespace(labels)
    kept = labels != ignore_index
    invalid = kept & ((labels < 0) | (labels >= classes))
    return xp.where(invalid, math.nan, xp.astype(kept, xp.float64))


def shard_gradient(logits, reference, ones, rest, mass, target: ShardTarget, scale, dtype):
    """The gradient of ``scale * sum_i L_i`` with respect to the shard's logits, in
    ``dtype``, from the whole row's ``reference`` (its maximum), ``n``, ``r`` and ``S``.
    Ignored rows get exact zeros, whatever the scale (even inf: a mean over no row)."""
    xp = _namespace(logits)
    # S / s * scale as IEEE arithmetic, as the one-chunk kernels have it: a kept row of no
    # mass is NaN where its s or the scale is not finite (0 * inf).
    ratio = mass * (scale / (ones + rest))
    grad = xp.empty(logits.shape, dtype=dtype, device=array_api_compat.device(logits))
    for part in _slabs(*logits.shape):
        slab = _Slab(xp, logits[part, :], reference[part], target.rows(part))
        grad[part, :] = slab.gradient(ratio[part], ones[part], rest[part], mass[part], scale,
                                      dtype)
    return grad
