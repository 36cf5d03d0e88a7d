"""Kernel-level numerics of the Numba backend, calling its functions directly.

The public API on every backend is covered by test_mse.py and
test_softmax_cross_entropy.py; these tests pin what only the kernels decide:
exact gradients, the fast float32 exp, float64 accumulation at sizes where a
float32 running total fails, and bit-identical results at any thread count.
"""

import json
import math
import os
import shutil
import subprocess
import sys
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

numba = pytest.importorskip("numba")

from fastloss import _registry  # noqa: E402
from fastloss.backends.numba import _vector_math as vector_math  # noqa: E402
from fastloss.backends.numba import mse as mse_module  # noqa: E402
from fastloss.backends.numba import softmax_cross_entropy as ce_module  # noqa: E402
from fastloss.backends.numba.mse import mse  # noqa: E402
from fastloss.backends.numba.softmax_cross_entropy import softmax_cross_entropy  # noqa: E402

DTYPES = [pytest.param(np.float32, id="float32"), pytest.param(np.float64, id="float64")]
# Sizes around the lane count and the block size, so that every tail path runs.
MSE_SIZES = [1, 31, 1000, mse_module.BLOCK + 37, 3 * mse_module.BLOCK + 5]
LANES, LANE_CLASSES = ce_module.LANES, ce_module.LANE_CLASSES
# Cross-entropy runs rows in lanes further: float32 rows of up to this many classes against
# labels, one fewer against probabilities (float64: half as many), so that more classes go a
# row at a time in every case.
CE_LANE_CLASSES = ce_module.CE_LANE_BYTES // 4
# (rows, classes). Rows in lanes (k <= LANE_CLASSES, or CE_LANE_CLASSES): one row, one class,
# passes of LANES rows with and without a partial last one, k just below and
# at the threshold, several row blocks. One row at a time: k just above the
# threshold, a partial lane chunk, several row blocks, long rows.
CE_SHAPES = [
    (1, 1),
    (1, 7),
    (LANES + 1, 2),
    (3 * LANES + 5, 3),
    (2 * LANES, 10),
    # Rows of one wide transposed block (float32: 16 classes, float64: 8) and one class more.
    (LANES + 2, 8),
    (LANES, 9),
    (2 * LANES, 16),
    (LANES + 1, 17),
    # Full passes whose rows end in a partial wide block, a rest past a narrow block's
    # (with AVX-512, float32: 25 = 16 + 9 classes, float64: 13 = 8 + 5): stored whole, it
    # spills into the next row, whose blocks must be stored after it.
    (LANES, 25),
    (2 * LANES, 13),
    (3, 64),
    (5, 65),
    (LANES - 1, LANE_CLASSES - 1),
    (LANES + 7, LANE_CLASSES),
    (2 * ce_module._rows_per_block(10) + LANES + 3, 10),
    (LANES + 7, LANE_CLASSES + 1),
    (LANES - 1, CE_LANE_CLASSES - 1),
    (LANES + 3, CE_LANE_CLASSES),
    (LANES + 7, CE_LANE_CLASSES + 1),
    (2 * (ce_module.BLOCK_ELEMENTS // 130) + 3, 130),
    (40, 1000),
    (2, 5000),
]
# (rtol, atol) of losses and gradients against the float64 formula.
CE_TOLERANCE = {np.float32: (2e-6, 1e-8), np.float64: (1e-12, 1e-15)}


def _random(rng, shape, dtype, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


# --------------------------------------------------------------------------- MSE


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", MSE_SIZES)
@pytest.mark.parametrize("outputs", ["loss only", "grad", "squares", "grad and squares"])
def test_mse_matches_float64_formula(dtype, size, outputs):
    rng = np.random.default_rng(size)
    pred, target = _random(rng, size, dtype), _random(rng, size, dtype)
    grad = np.empty_like(pred) if "grad" in outputs else None
    squares = np.empty_like(pred) if "squares" in outputs else None
    diff = pred.astype(np.float64) - target.astype(np.float64)

    loss = mse(pred, target, grad, squares, 3)

    assert type(loss) is float
    assert loss == pytest.approx(math.fsum(diff * diff) / 3, rel=1e-14)
    # Scaled by 2 / divisor in float64 and rounded once: the same bits as the formula.
    if grad is not None:
        np.testing.assert_array_equal(grad, (2.0 / 3 * diff).astype(dtype))
    if squares is not None:
        np.testing.assert_array_equal(squares, (diff * diff).astype(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("alias", ["pred", "target"])
def test_mse_gradient_in_place(dtype, alias):
    rng = np.random.default_rng(1)
    size = 2 * mse_module.BLOCK + 37
    pred, target = _random(rng, size, dtype), _random(rng, size, dtype)
    diff = pred.astype(np.float64) - target.astype(np.float64)
    out = pred if alias == "pred" else target

    loss = mse(pred, target, out, None, size)

    assert loss == pytest.approx(math.fsum(diff * diff) / size, rel=1e-14)
    np.testing.assert_array_equal(out, (2.0 / size * diff).astype(dtype))


def test_mse_float32_sum_holds_where_a_float32_running_total_fails():
    @numba.njit(fastmath=True)
    def seed_mse(pred, target):
        return np.sum((pred - target) ** 2) / pred.shape[1]

    rng = np.random.default_rng(3)
    shape = (4096, 1024)
    pred = rng.standard_normal(shape, dtype=np.float32)
    target = rng.standard_normal(shape, dtype=np.float32)
    diff = pred.astype(np.float64) - target
    # float32 differences are exact in float64 and so are their squares.
    exact = np.sum(diff * diff) / shape[1]

    seed_error = abs(seed_mse(pred, target) - exact) / exact
    ours_error = abs(mse(pred.ravel(), target.ravel(), None, None, shape[1]) - exact) / exact

    assert seed_error > 1e-6
    assert ours_error < 1e-6


# ------------------------------------------------- binary targets' functor


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "weighted"])
def test_binary_targets_take_the_bits_of_the_general_functor(dtype, weighted):
    # Binary cross-entropy runs a one-log functor on a block's leading chunks of targets
    # 0 and 1, and the general one from the first chunk of other targets on. A soft
    # target planted in a chunk moves that chunk and the rest of its block to the
    # general functor: no other element's loss or gradient may change a bit, and the
    # total must still be the sum of every element's loss (nothing skipped or added
    # twice where the two meet).
    from fastloss.backends.numba.binary_cross_entropy import binary_cross_entropy as bce
    from fastloss.backends.numba.elementwise import BLOCK
    from fastloss.backends.numba.elementwise import LANES as CHUNK

    rng = np.random.default_rng(11)
    size = 2 * BLOCK + 3 * CHUNK + 5
    probs = rng.random(size).astype(dtype)
    probs[:8] = [0.0, 1.0, 1e-30, 0.5, np.finfo(dtype).eps, 1 - np.finfo(dtype).eps, 0.25, 1]
    hard = (rng.random(size) < 0.5).astype(dtype)
    weight = rng.uniform(0.5, 2.0, size).astype(dtype) if weighted else None

    def run(target):
        grad, losses = np.full(size, np.nan, dtype), np.full(size, np.nan, dtype)
        total = bce(probs, target, grad, losses, size, weight=weight)
        # (A float32 weighted loss is stored rounded; a chunk lost or added moves the
        # mean by over 1e-4.)
        np.testing.assert_allclose(total, losses.astype(np.float64).sum() / size, rtol=1e-6)
        return grad, losses

    grad, losses = run(hard)
    for planted in ([0, BLOCK, 2 * BLOCK],  # whole blocks through the general functor
                    [BLOCK + 5 * CHUNK + 7],  # five chunks of the block, then the rest
                    [2 * BLOCK + 3 * CHUNK]):  # the last, partial chunk
        target = hard.copy()
        target[planted] = 0.5
        soft_grad, soft_losses = run(target)
        keep = np.ones(size, bool)
        keep[planted] = False
        assert soft_grad[keep].tobytes() == grad[keep].tobytes()
        assert soft_losses[keep].tobytes() == losses[keep].tobytes()
    with np.errstate(divide="ignore"):  # log 0 = -inf, clamped to -100 as PyTorch does
        reference = -(hard * np.maximum(np.log(probs.astype(np.float64)), -100)
                      + (1 - hard) * np.maximum(np.log1p(-probs.astype(np.float64)), -100))
    if weighted:
        reference *= weight
    np.testing.assert_allclose(losses, reference, rtol=CE_TOLERANCE[dtype][0], atol=1e-30)


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_soft_target_in_any_lane_of_a_chunk_takes_the_general_functor(dtype):
    # Each block's first chunk is all 0 and 1, so the binary copy runs; its later chunks
    # hold one soft target each in another lane (the first, a middle one, the last), which
    # must send that chunk to the general functor: every element's loss and gradient
    # against the float64 formula.
    from fastloss.backends.numba.binary_cross_entropy import binary_cross_entropy as bce
    from fastloss.backends.numba.elementwise import BLOCK
    from fastloss.backends.numba.elementwise import LANES as CHUNK

    rng = np.random.default_rng(13)
    size = 3 * BLOCK
    probs = rng.uniform(0.05, 0.95, size).astype(dtype)
    target = (rng.random(size) < 0.5).astype(dtype)
    for block, lane in enumerate([0, CHUNK // 2, CHUNK - 1]):
        target[block * BLOCK + 2 * CHUNK + lane] = 0.25
    grad, losses = np.full(size, np.nan, dtype), np.full(size, np.nan, dtype)

    total = bce(probs, target, grad, losses, size)

    p, t = probs.astype(np.float64), target.astype(np.float64)
    reference = -(t * np.maximum(np.log(p), -100) + (1 - t) * np.maximum(np.log1p(-p), -100))
    rtol = CE_TOLERANCE[dtype][0]
    np.testing.assert_allclose(losses, reference, rtol=rtol)
    np.testing.assert_allclose(grad, (p - t) / ((1 - p) * p) / size, rtol=rtol)
    assert total == pytest.approx(math.fsum(reference) / size, rel=rtol)


@numba.njit(inline="always")
def _loss_of_one(x, target, aux, param):
    return x - x + 1, x - x


@numba.njit(inline="always")
def _loss_of_two(x, target, aux, param):
    return x - x + 2, x - x


def test_binary_functor_runs_on_each_blocks_leading_full_chunks_of_binary_targets():
    # Functors that tell which ran: 1 the general one, 2 the one for binary targets.
    from fastloss.backends.numba import elementwise

    block, chunk = elementwise.BLOCK, elementwise.LANES
    probe = elementwise.fused(_loss_of_one, scale=1.0, input_precision=True,
                              binary_pair=_loss_of_two)
    size = 2 * block + 3 * chunk + 5  # two full blocks and a third of 3 chunks and 5 more
    target = np.ones(size, np.float32)
    target[::3] = 0
    soft = [block + 5 * chunk + 7,  # the second block: 5 chunks, then the rest general
            0]  # the first block: all general
    target[soft] = 0.5
    losses = np.full(size, np.nan, np.float32)
    total = probe(np.zeros(size, np.float32), target, None, losses, 1.0)
    expected = np.ones(size, np.float32)
    expected[block:block + 5 * chunk] = 2
    expected[2 * block:2 * block + 3 * chunk] = 2  # not the last 5: a partial chunk
    np.testing.assert_array_equal(losses, expected)
    assert total == expected.astype(np.float64).sum()


# ----------------------------------------------------------------- cross-entropy


def reference_cross_entropy(logits, target, weight, ignore_index, smoothing):
    """Per-row losses and unscaled gradient in float64, from the contract."""
    z = logits.astype(np.float64)
    rows, classes = z.shape
    with np.errstate(all="ignore"):
        row_max = z.max(axis=1, keepdims=True)
        log_sum = np.log(np.exp(z - row_max).sum(axis=1, keepdims=True))
        log_softmax = (z - row_max) - log_sum
        if target.ndim == 1:
            kept = target != ignore_index
            dist = np.zeros((rows, classes))
            dist[np.flatnonzero(kept), target[kept]] = 1.0
        else:
            kept = np.ones(rows, dtype=bool)
            dist = target.astype(np.float64)
        q = (1.0 - smoothing) * dist + smoothing / classes
        q[~kept] = 0.0
        qw = q * (np.ones(classes) if weight is None else weight)
        losses = -np.where(qw != 0.0, qw * log_softmax, 0.0).sum(axis=1)
        grad = np.exp(log_softmax) * qw.sum(axis=1, keepdims=True) - qw
    return losses, grad


def _ce_inputs(rng, shape, dtype, kind, weighted):
    rows, classes = shape
    logits = _random(rng, shape, dtype, scale=4.0)
    if kind == "labels":
        target = rng.integers(0, classes, rows)
        target[1::3] = -100
    else:
        target = rng.random(shape).astype(dtype)
        target /= target.sum(axis=1, keepdims=True)
    weight = rng.random(classes) if weighted else None
    return logits, target, weight


def _run_ce(logits, target, weight, smoothing, grad_out=None, divisor=2, ignore_index=-100):
    losses = np.full(logits.shape[0], np.nan)
    loss = softmax_cross_entropy(
        logits, target, weight, grad_out, losses, ignore_index, smoothing, divisor
    )
    return loss, losses


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["labels", "probs"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("shape", CE_SHAPES, ids=lambda shape: "x".join(map(str, shape)))
def test_cross_entropy_matches_float64_formula(dtype, kind, weighted, smoothing, shape):
    rng = np.random.default_rng(shape[0] * 7919 + shape[1])
    logits, target, weight = _ce_inputs(rng, shape, dtype, kind, weighted)
    expected_losses, expected_grad = reference_cross_entropy(
        logits, target, weight, -100, smoothing
    )
    rtol, atol = CE_TOLERANCE[dtype]
    grad = np.empty_like(logits)

    loss, losses = _run_ce(logits, target, weight, smoothing, grad)

    assert type(loss) is float
    np.testing.assert_allclose(losses, expected_losses, rtol=rtol, atol=atol)
    assert loss == pytest.approx(math.fsum(expected_losses) / 2, rel=rtol, abs=atol * shape[0])
    assert loss == pytest.approx(math.fsum(losses) / 2, rel=1e-14)
    np.testing.assert_allclose(grad, 0.5 * expected_grad, rtol=rtol, atol=atol)


@pytest.mark.parametrize("classes", [10, 100, 127, 200], ids=lambda k: f"k{k}")
@pytest.mark.parametrize("kind", ["probs", "smoothed-labels"])
def test_float64_row_losses_are_within_two_ulps_of_their_terms(classes, kind):
    # A float64 row's loss sum_c q_c (lse - z_c) against long double, in ulps of the sum of
    # its terms' magnitudes (numpy: up to 3.2 here). Rows of up to 127 classes sit in lanes,
    # one class after another: uncompensated, their sums of exponentials, of q_c and of
    # q_c (max - z_c) were up to 6.7 ulps off; k = 200 takes the row path.
    rng = np.random.default_rng(classes)
    rows = 2048
    logits = rng.standard_normal((rows, classes)) * 10
    if kind == "probs":
        target = rng.random((rows, classes)) ** 4
        target /= target.sum(axis=1, keepdims=True)
        smoothing, q = 0.0, target.astype(np.longdouble)
    else:
        target = rng.integers(0, classes, rows)
        smoothing = 0.1
        q = np.full((rows, classes), np.longdouble(smoothing) / classes)
        q[np.arange(rows), target] += 1 - np.longdouble(smoothing)
    z = logits.astype(np.longdouble)
    shifted = z - z.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    exact = -(q * log_probs).sum(axis=1)
    scale = np.abs(q * log_probs).sum(axis=1) * np.longdouble(2.0**-52)

    _, losses = _run_ce(logits, target, None, smoothing)

    assert (np.abs(losses - exact) / scale).max() <= 2.0


@pytest.mark.parametrize("classes", [100, 1000], ids=["lanes", "row"])
@pytest.mark.parametrize("smoothing", [0.5, 1 - 2.0**-20])
def test_a_smoothed_float32_gradient_keeps_float64s_terms_where_they_cancel(classes, smoothing):
    # Label smoothing without class weights scales the exponentials and subtracts the
    # smoothing's share in float32, each of the two float64 terms split into two float32
    # parts (_row_difference, _lanes_difference). With all logits equal, every
    # exponential is 1 and a class off the label gets (1 - smoothing) / (k * divisor): for
    # smoothing near 1 the terms cancel to 2**-20 of their size, where one float32 part
    # each would be 6% off. Within an ulp, as the float64 path.
    rows = 70
    logits = np.full((rows, classes), 0.75, np.float32)
    labels = np.arange(rows) % classes
    grad = np.empty_like(logits)
    _run_ce(logits, labels, None, smoothing, grad)
    off_label = np.ones(logits.shape, bool)
    off_label[np.arange(rows), labels] = False
    expected = np.float32((1 - smoothing) / (classes * 2))
    np.testing.assert_array_max_ulp(grad[off_label], np.full(off_label.sum(), expected),
                                    maxulp=1)


@pytest.mark.parametrize("classes", [100, 1000], ids=["lanes", "row"])
def test_a_float32_gradient_against_probabilities_keeps_float64s_terms_where_they_cancel(
        classes):
    # As the smoothed gradient above, against probabilities p_c (no smoothing or weights):
    # exp_c * scale - p_c * target in float32 with split parts, target = 1 / divisor. All
    # logits equal, so every exponential is 1 and class c gets scale - p_c / divisor with
    # scale = sum(p) / divisor / k, p_c within 2**-16 of 1 / k: the terms cancel to 2**-16
    # of their size or further. Within two ulp and 2**-45 of the terms' size (the split's
    # three roundings), where float32 parts of one piece would be 2**-24 of it off.
    # A divisor of 3 leaves the products p_c * target inexact in float32.
    rows = 70
    rng = np.random.default_rng(5)
    logits = np.full((rows, classes), -2.5, np.float32)
    probs = (1 + rng.uniform(-2.0**-16, 2.0**-16, logits.shape)) / classes
    probs = probs.astype(np.float32)
    grad = np.empty_like(logits)
    _run_ce(logits, probs, None, 0.0, grad, divisor=3)
    target = 1.0 / 3
    # Each row's sum of float32 values of one binade is exact in float64; scale is the
    # kernel's float64 value, and the difference is taken exactly.
    scales = target * probs.astype(np.float64).sum(axis=1, keepdims=True) / classes
    exact = [[Fraction(float(scale)) - Fraction(float(p)) * Fraction(target) for p in row]
             for scale, row in zip(scales[:, 0], probs.astype(np.float64), strict=True)]
    expected = np.array([[float(value) for value in row] for row in exact])
    bound = 2 * np.spacing(np.abs(expected).astype(np.float32)) + 2.0**-45 * scales
    assert (np.abs(grad - expected) <= bound).all()


@pytest.mark.parametrize("classes", [10, 100], ids=["narrow", "wide"])
@pytest.mark.parametrize("target", ["smoothed labels", "probabilities"])
def test_a_row_in_lanes_has_the_bits_it_has_without_its_tile_neighbours(classes, target):
    # Rows in lanes share a tile; a row whose gradient takes float64 (a NaN row's: its
    # scale is NaN, past the float32 split's range) must not change the bits of the others.
    rng = np.random.default_rng(7)
    logits = rng.standard_normal((LANES, classes)).astype(np.float32)
    if target == "probabilities":
        labels = rng.random(logits.shape).astype(np.float32)
        labels /= labels.sum(axis=1, keepdims=True)
        smoothing = 0.0
    else:
        labels = rng.integers(0, classes, LANES)
        smoothing = 0.1
    alone = np.empty_like(logits)
    _run_ce(logits, labels, None, smoothing, alone)
    logits[-1, 0] = np.nan
    beside = np.empty_like(logits)
    _run_ce(logits, labels, None, smoothing, beside)
    assert beside[:-1].tobytes() == alone[:-1].tobytes()
    assert np.isnan(beside[-1]).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ignore_index", [-100, 1])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_rows_of_two_classes_are_softplus_and_sigmoid_of_the_difference(dtype, ignore_index,
                                                                        smoothing):
    # Labels, no weights: the closed form of the two-class softmax (_pairs_block), over three
    # row blocks with a partial pass. Against softplus(d) - s d and sigmoid(d) - s in float64,
    # d = z_other - z_label, s = smoothing / 2: the loss within a few float64 ulp, also where it
    # is far below 1e-7 (the general path rounds 1 + e^d to 1 there and gives 0), the gradient
    # within one rounding to the dtype of the terms.
    share = smoothing / 2
    rng = np.random.default_rng(2)
    rows = 2 * ce_module._rows_per_block(2) + LANES + 5
    logits = (rng.standard_normal((rows, 2)) * rng.choice([1, 30, 1e3], (rows, 1))).astype(dtype)
    target = rng.integers(0, 2, rows)
    target[::7] = ignore_index
    # A logit of +inf (in either class, against either label), a NaN, two of -inf: NaN rows,
    # as softmax's shift makes them; one of -inf against the label: an infinite loss.
    logits[3:9] = [[np.inf, 0], [np.nan, 1], [-np.inf, -np.inf], [-np.inf, 2], [0, np.inf],
                   [0, np.inf]]
    target[3:9] = [0, 0, 0, 0, 0, 1]
    z = logits.astype(np.float64)
    label = np.where(target == 1, 1, 0)
    with np.errstate(invalid="ignore"):
        d = z[np.arange(rows), 1 - label] - z[np.arange(rows), label]
        d[(logits == np.inf).any(axis=1)] = np.nan
        want_losses = np.logaddexp(0.0, d) - share * d
        want_losses[np.isinf(d)] = np.inf  # the limit either way, with smoothing
        e = np.exp(-np.abs(d))
        sigmoid = np.where(d >= 0, 1.0 / (1.0 + e), e / (1.0 + e))  # within 2 ulp
    kept = target != ignore_index
    want_losses[~kept] = 0.0
    other = np.where(kept, sigmoid - share, 0.0) / 2
    terms = np.where(kept, sigmoid + share, 0.0) / 2
    want_grad = np.stack([np.where(label == 0, -other, other), np.where(label == 0, other, -other)],
                         axis=1)
    want_grad[~kept] = 0.0

    grad = np.empty_like(logits)
    total, losses = _run_ce(logits, target, None, smoothing, grad, ignore_index=ignore_index)

    np.testing.assert_allclose(losses, want_losses, rtol=1e-14, atol=0)
    assert np.isnan(total)  # rows 3 to 5
    finite = np.isfinite(losses)
    kept_rows = _run_ce(logits[finite], target[finite], None, smoothing,
                        ignore_index=ignore_index)
    assert kept_rows[0] == pytest.approx(math.fsum(losses[finite]) / 2, rel=1e-14)
    rtol = np.finfo(np.float32).eps if dtype == np.float32 else 8 * np.finfo(np.float64).eps
    with np.errstate(under="ignore", invalid="ignore"):
        rounded = want_grad.astype(dtype).astype(np.float64)
        # One rounding of the result, and float64's of the terms where they cancel.
        bound = (rtol * np.abs(rounded) + 8 * np.finfo(np.float64).eps * terms[:, None]
                 + np.finfo(dtype).smallest_subnormal)
        assert ((np.abs(grad - rounded) <= bound) | (np.isnan(grad) & np.isnan(rounded))).all()
    assert not np.signbit(grad[~kept]).any()  # an ignored row is +0, as on the other paths
    in_place = logits.copy()
    _run_ce(in_place, target, None, smoothing, in_place, ignore_index=ignore_index)
    np.testing.assert_array_equal(in_place, grad)
    forward = softmax_cross_entropy(logits[finite], target[finite], None, None, None,
                                    ignore_index, smoothing, 2)
    assert forward == kept_rows[0]


def test_rows_of_two_classes_round_the_gradient_of_a_mean_once():
    # The slope sigmoid(d), float64, is scaled by 1 / N before its one rounding to float32:
    # within half an ulp of sigmoid(d) / N. Rounded to float32 before the scaling (N no power
    # of two), it would be up to about 1.2 ulp off.
    rng = np.random.default_rng(11)
    rows = 3 * LANES + 5
    logits = (rng.standard_normal((rows, 2)) * 3).astype(np.float32)
    labels = rng.integers(0, 2, rows)
    grad = np.empty_like(logits)
    _run_ce(logits, labels, None, 0.0, grad, divisor=float(rows))

    z, index = logits.astype(np.float64), np.arange(rows)
    d = z[index, 1 - labels] - z[index, labels]
    want = 1.0 / (1.0 + np.exp(-d)) / rows
    got = grad[index, 1 - labels].astype(np.float64)
    half_ulp = 0.5 * np.spacing(want.astype(np.float32)).astype(np.float64)
    assert (np.abs(got - want) <= half_ulp * (1 + 1e-6)).all()
    np.testing.assert_array_equal(grad[index, labels], -grad[index, 1 - labels])


@pytest.mark.parametrize("dtype", DTYPES)
def test_stack_tiles_hold_what_the_lane_limits_let_in_and_no_more(dtype):
    # Cross-entropy's tile (softmax's forward one too) holds LANES rows of CE_LANE_BYTES
    # bytes, the most lane_classes lets in; sized in items rather than bytes it would give the
    # same results from 256-512 KiB a tile, two a frame, on threads whose stacks may be far
    # smaller. The softmax VJPs' tile holds their BACKWARD_LANE_CLASSES.
    import numba

    from fastloss.backends.numba import softmax as softmax_module

    @numba.njit
    def sizes(like):
        return (ce_module._stack_ce_tile(like).size,
                softmax_module._stack_backward_tile(like).size)

    ce_items, backward_items = sizes(np.zeros(1, dtype))
    assert ce_items == ce_module.CE_LANE_BYTES * LANES // np.dtype(dtype).itemsize
    assert ce_items >= LANES * ce_module.lane_classes(np.zeros((1, 1), dtype),
                                                      np.zeros(1, np.int64))
    assert backward_items == softmax_module.BACKWARD_LANE_CLASSES * LANES


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["labels", "probs"])
@pytest.mark.parametrize(
    "shape",
    [(1, 1), (5, 65), (2 * LANES + 3, 10), (ce_module.BLOCK_ELEMENTS // 1000 + 3, 1000)],
)
def test_cross_entropy_in_place_and_forward_only_match(dtype, kind, shape):
    rng = np.random.default_rng(11)
    logits, target, weight = _ce_inputs(rng, shape, dtype, kind, weighted=True)
    grad = np.empty_like(logits)
    total, losses = _run_ce(logits, target, weight, 0.1, grad)

    in_place = logits.copy()
    total_in_place, losses_in_place = _run_ce(in_place, target, weight, 0.1, in_place)
    forward = softmax_cross_entropy(logits, target, weight, None, None, -100, 0.1, 2)

    np.testing.assert_array_equal(in_place, grad)
    np.testing.assert_array_equal(losses_in_place, losses)
    assert total_in_place == total
    assert forward == total


def _rows_in_lanes_calls(x, labels):
    """Each function whose short rows go through the transposed tile (each up to its own
    limit), as ``call(out)`` writing its gradient or output to ``out``."""
    import fastloss as fl

    probs = fl.softmax(x, backend="numpy")
    return {
        "cross-entropy": lambda out: fl.softmax_cross_entropy_with_grad(
            x, labels, backend="numba", out=out),
        "cross-entropy, probabilities": lambda out: fl.softmax_cross_entropy_with_grad(
            x, probs, backend="numba", out=out),
        "softmax entropy": lambda out: fl.softmax_entropy_with_grad(x, backend="numba", out=out),
        "multi-class hinge": lambda out: fl.multi_margin_with_grad(
            x, labels, backend="numba", out=out),
        "softmax": lambda out: fl.softmax(x, backend="numba", out=out),
        "log_softmax": lambda out: fl.log_softmax(x, backend="numba", out=out),
        "softmax_backward": lambda out: fl.softmax_backward(probs, x, backend="numba", out=out),
    }


@pytest.mark.parametrize("dtype", DTYPES)
# 200 classes: in lanes in float32 for cross-entropy, softmax and log-softmax, a row at a
# time for the others and in float64.
@pytest.mark.parametrize("classes", [2, 10, 25, 40, 200])
@pytest.mark.parametrize("rows", [LANES, 2 * ce_module._rows_per_block(10)])
def test_rows_in_lanes_write_nothing_past_their_output(dtype, classes, rows):
    # A full pass stores each row's last block whole, spilling into the rows after it
    # (written later): never past the pass, which may end the output or border the
    # block of another thread. The output is a view with guard rows on either side.
    rng = np.random.default_rng(classes)
    x = _random(rng, (rows, classes), dtype)
    labels = rng.integers(0, classes, rows)
    for name, call in _rows_in_lanes_calls(x, labels).items():
        buffer = np.full((rows + 2, classes), 7.0, dtype)
        out = buffer[1:-1]
        call(out)
        expected = np.empty_like(x)
        call(expected)
        assert out.base is buffer, name
        np.testing.assert_array_equal(out, expected, err_msg=name)
        assert (buffer[0] == 7.0).all() and (buffer[-1] == 7.0).all(), name


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("classes", [3, 10, 200])
def test_rows_in_lanes_in_place_give_the_bits_of_a_separate_output(dtype, classes):
    # A full pass stores each row's last block whole, spilling into the rows after it:
    # never into the next pass's rows, which an in-place call has not read yet (rows of at
    # most one transposed block's classes, 3, as much as rows of several, 10 and 200).
    rng = np.random.default_rng(classes)
    x = _random(rng, (3 * LANES + 5, classes), dtype)
    labels = rng.integers(0, classes, len(x))
    for name, call in _rows_in_lanes_calls(x, labels).items():
        expected = np.empty_like(x)
        call(expected)
        in_place = x.copy()
        _rows_in_lanes_calls(in_place, labels)[name](in_place)
        np.testing.assert_array_equal(in_place, expected, err_msg=name)


@pytest.mark.parametrize("repeats", [1, LANES + 1], ids=["partial pass", "full passes"])
def test_cross_entropy_ignore_index_may_be_a_class(repeats):
    rng = np.random.default_rng(5)
    logits = _random(rng, (6 * repeats, 9), np.float32)
    labels = np.tile([3, 0, 3, 8, 3, 1], repeats)
    grad = np.full_like(logits, np.nan)

    total, losses = _run_ce(logits, labels, None, 0.0, grad, ignore_index=3)

    expected_losses, expected_grad = reference_cross_entropy(logits, labels, None, 3, 0.0)
    assert np.all(losses[labels == 3] == 0) and np.all(grad[labels == 3] == 0)
    np.testing.assert_allclose(losses, expected_losses, rtol=2e-6)
    np.testing.assert_allclose(grad, 0.5 * expected_grad, rtol=2e-6, atol=1e-8)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_cross_entropy_ignore_index_may_be_a_class_of_rows_one_at_a_time(smoothing):
    # As above for rows of more than CE_LANE_CLASSES classes, which go one at a time: a
    # row whose label is ignore_index, a class, adds nothing, and its gradient row is zeros.
    rng = np.random.default_rng(6)
    classes = CE_LANE_CLASSES + 9
    logits = _random(rng, (6, classes), np.float32)
    labels = np.array([3, 0, 3, classes - 1, 3, 1])
    grad = np.full_like(logits, np.nan)

    total, losses = _run_ce(logits, labels, None, smoothing, grad, ignore_index=3)

    expected_losses, expected_grad = reference_cross_entropy(logits, labels, None, 3, smoothing)
    assert np.all(losses[labels == 3] == 0) and np.all(grad[labels == 3] == 0)
    np.testing.assert_allclose(losses, expected_losses, rtol=2e-6)
    np.testing.assert_allclose(grad, 0.5 * expected_grad, rtol=2e-6, atol=1e-8)
    assert total == pytest.approx(math.fsum(expected_losses) / 2, rel=2e-6)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_zero_divisor_gives_ieee_results_without_warnings(backend):
    backend_mse = _registry.kernel("mse", backend)
    backend_ce = _registry.kernel("softmax_cross_entropy", backend)
    empty = np.zeros(0, np.float32)
    pred = np.array([1.0, 2.0], np.float32)
    logits = np.array([[1.0, 2.0, 3.0], [0.5, 0.5, 0.5]], np.float32)
    labels = np.array([-100, -100])
    grad = np.full_like(logits, np.nan)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        empty_mean = backend_mse(empty, empty, np.empty_like(empty), None, 0)
        mse_over_zero = backend_mse(pred, np.zeros_like(pred), None, None, 0)
        all_ignored = backend_ce(logits, labels, None, grad, None, -100, 0.0, 0)

    assert np.isnan(empty_mean) and mse_over_zero == np.inf and np.isnan(all_ignored)
    # Rows of ignored labels stay exactly zero, even with a 1 / 0 scale.
    assert (grad == 0).all()


EXTREME_LOGITS = [
    [1e30, -1e30, 0.0, -np.inf, 2.0],
    [-np.inf, 0.0, -np.inf, 1e30, -1e30],
    [-np.inf] * 5,
    [0.0, np.nan, 1.0, 2.0, 3.0],
    [-1e30, -1e30, -1e30, -1e30, -1e30],
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("kind", ["labels", "probs"])
@pytest.mark.parametrize(
    "copies", [1, CE_LANE_CLASSES // 5 + 1], ids=["rows in lanes", "row at a time"]
)
@pytest.mark.parametrize("repeats", [1, LANES], ids=["partial pass", "full passes"])
def test_cross_entropy_extreme_logits(dtype, smoothing, weighted, kind, copies, repeats):
    # The classes are repeated ``copies`` times (target mass spread over the
    # copies), which keeps every property checked below; the rows ``repeats``
    # times, so that rows in lanes also go through whole transposed passes.
    logits = np.tile(np.array(EXTREME_LOGITS, dtype=dtype), (repeats, copies))
    if kind == "labels":
        target = np.tile([3, 3, 0, 0, 2], repeats)
    else:
        # No mass on the -inf classes of rows 0 and 1: 0 * log 0 counts as 0.
        target = np.array([[0.5, 0.2, 0.3, 0.0, 0.0], [0.0, 0.3, 0.0, 0.5, 0.2]] * 3, dtype=dtype)
        target = np.tile(target[:5], (repeats, copies)) / dtype(copies)
    # A zero weight on class 3, which is -inf in row 0.
    weight = np.tile([1.0, 2.0, 0.5, 0.0, 1.0], copies) if weighted else None
    expected_losses, expected_grad = reference_cross_entropy(
        logits, target, weight, -100, smoothing
    )
    grad = np.empty_like(logits)

    _, losses = _run_ce(logits, target, weight, smoothing, grad)

    np.testing.assert_allclose(losses, expected_losses, rtol=1e-6)
    np.testing.assert_allclose(grad, 0.5 * expected_grad, rtol=1e-6, atol=1e-7)
    # Repeated rows get the same bits, wherever they fall in a pass.
    losses, grad = losses.reshape(repeats, 5), grad.reshape(repeats, 5, -1)
    np.testing.assert_array_equal(losses, np.broadcast_to(losses[0], losses.shape))
    np.testing.assert_array_equal(grad, np.broadcast_to(grad[0], grad.shape))
    losses, grad = losses[0], grad[0]
    # The all -inf row and the row holding a NaN are NaN throughout; the other
    # gradients are finite.
    assert np.isnan(losses[2]) and np.isnan(losses[3])
    assert np.isnan(grad[2]).all() and np.isnan(grad[3]).all()
    assert np.isfinite(grad[[0, 1, 4]]).all()
    # A loss is infinite exactly when target mass (the label, or the smoothing
    # share) meets a -inf logit whose class weight is not 0: row 0's class 3
    # has weight 0 when weighted, row 1's -inf classes never do.
    mass_on_minus_inf = kind == "labels" or smoothing > 0
    assert np.isinf(losses[0]) == (mass_on_minus_inf and not weighted)
    assert np.isinf(losses[1]) == (smoothing > 0)
    assert np.isfinite(losses[4])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "classes", [5, CE_LANE_CLASSES + 2, CE_LANE_CLASSES + LANES + 8],
    ids=["rows in lanes", "row at a time, 2 in the last chunk", "row at a time, 8 in it"],
)
def test_the_row_max_in_any_class(dtype, classes):
    # Row r's max is class r, so that each class, the last chunk's included, holds one
    # row's max; a max missed would make an exponential's argument positive.
    import fastloss as fl

    logits = (50 * np.eye(classes)).astype(dtype)
    labels = np.arange(classes)[::-1].copy()
    probs = np.full_like(logits, 1 / classes)
    calls = [
        lambda backend: fl.softmax_cross_entropy_with_grad(logits, labels, reduction="none",
                                                           backend=backend),
        lambda backend: fl.softmax_cross_entropy_with_grad(logits, probs, reduction="none",
                                                           backend=backend),
        lambda backend: fl.softmax_entropy_with_grad(logits, reduction="none", backend=backend),
        lambda backend: (fl.softmax(logits, backend=backend),),
        lambda backend: (fl.log_softmax(logits, backend=backend),),
    ]
    for call in calls:
        for got, want in zip(call("numba"), call("numpy"), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-30)


# ------------------------------------------------------------------ fast exp

# Relative error bound of the float32 exp where its result is a normal float.
EXP_MAX_RELATIVE_ERROR = 1.5 * 2.0**-24
SMALLEST_SUBNORMAL = 2.0**-149


@numba.njit
def _exp_float32_all(values, out):
    for i in range(values.size):
        out[i] = ce_module._exp_float32(values[i])


def _fast_exp(values):
    values = np.asarray(values, dtype=np.float32)
    out = np.empty_like(values)
    _exp_float32_all(values, out)
    return out


def test_fast_exp_error_over_dense_sweep():
    x = np.linspace(-104.0, 0.0, 4_000_001, dtype=np.float32)
    exact = np.exp(x.astype(np.float64))
    approx = _fast_exp(x).astype(np.float64)
    normal = exact >= np.finfo(np.float32).tiny

    relative = np.abs(approx[normal] - exact[normal]) / exact[normal]
    assert relative.max() <= EXP_MAX_RELATIVE_ERROR
    assert np.abs(approx[~normal] - exact[~normal]).max() <= SMALLEST_SUBNORMAL


def test_fast_exp_special_values():
    x = [0.0, -0.0, -np.inf, -1e30, -104.0, -200.0, np.inf, 89.0, np.nan]
    out = _fast_exp(x)
    assert out[0] == 1.0 and out[1] == 1.0
    assert np.all(out[2:6] == 0.0)
    assert np.all(out[6:8] == np.inf)
    assert np.isnan(out[8])


@numba.njit
def _exp_nonpositive_all(values, out):
    for i in range(values.size):
        out[i] = ce_module._exp_nonpositive_float32(values[i])


def test_nonpositive_exp_has_the_bits_of_the_general_one():
    # Every 257th float32 from -0 down to -110 by bit pattern (all binades, tiny ones
    # included), a dense sweep over the range where results turn subnormal and then 0,
    # and special values.
    minus_110 = np.float32(-110.0).view(np.uint32)
    x = np.concatenate([
        np.arange(0x80000000, minus_110, 257, dtype=np.uint32).view(np.float32),
        np.linspace(-110.0, -80.0, 1_000_001, dtype=np.float32),
        np.float32([0.0, -0.0, -np.inf, -1e30, -104.0, -103.97, -87.34, np.nan]),
    ])
    out = np.empty_like(x)
    _exp_nonpositive_all(x, out)
    assert np.array_equal(out.view(np.int32), _fast_exp(x).view(np.int32))


@numba.njit
def _exp_nonpositive_float64_all(values, out):
    for i in range(values.size):
        out[i] = vector_math.exp_nonpositive(values[i])


def test_float64_nonpositive_exp_within_two_ulp():
    # The float64 e**x of the elementwise functors (BCE of logits, kl_div's log target) and of
    # the softmax family, against long double, where the result is normal; the losses'
    # tolerances would not see a truncated series or a wrong digit of ln 2.
    x = np.concatenate([np.linspace(-745.0, 0.0, 2_000_001), -np.linspace(0.0, 0.35, 100_001)])
    out = np.empty_like(x)
    _exp_nonpositive_float64_all(x, out)
    exact = np.exp(x.astype(np.longdouble))
    normal = exact >= np.finfo(np.float64).tiny
    ulp = np.spacing(exact[normal].astype(np.float64)).astype(np.longdouble)
    assert (np.abs(out[normal] - exact[normal]) / ulp).max() <= 2.0


def test_float64_nonpositive_exp_rounds_a_subnormal_result_once():
    # Below -708.4 e**x is subnormal: 2**n scales the mantissa exactly and one product rounds,
    # so each result is within one subnormal step (2**-1074) of long double's.
    x = np.concatenate([np.linspace(-745.2, -708.3, 1_000_001), [-745.0, -745.2]])
    out = np.empty_like(x)
    _exp_nonpositive_float64_all(x, out)
    exact = np.exp(x.astype(np.longdouble))
    assert (out < np.finfo(np.float64).tiny).sum() > 900_000
    assert (np.abs(out - exact) / np.longdouble(2.0**-1074)).max() <= 1.0
    assert out[-2] == 5e-324 and out[-1] == 0.0  # the smallest subnormal and below its half


@numba.njit(error_model="numpy")  # as the kernels: 1 / 0 is inf
def _exp_float64_all(values, out):
    for i in range(values.size):
        out[i] = vector_math.exp(values[i])


def test_float64_exp_within_four_ulp_and_its_limits():
    # Any sign (log_softmax_backward's exp of its output): e**-|x|, inverted for x > 0.
    x = np.linspace(-700.0, 709.0, 1_000_001)
    out = np.empty_like(x)
    _exp_float64_all(x, out)
    exact = np.exp(x.astype(np.longdouble))
    ulp = np.spacing(exact.astype(np.float64)).astype(np.longdouble)
    assert (np.abs(out - exact) / ulp).max() <= 4.0
    edges = np.array([0.0, -0.0, 710.0, np.inf, -np.inf, np.nan, -746.0])
    out = np.empty_like(edges)
    _exp_float64_all(edges, out)
    np.testing.assert_array_equal(out, [1.0, 1.0, np.inf, np.inf, 0.0, np.nan, 0.0])


# ------------------------------------------------------------------ fast log


@numba.njit
def _log_all(values, out):
    for i in range(values.size):
        out[i] = ce_module._log(values[i])


def _fast_log(values):
    values = np.asarray(values, dtype=np.float64)
    out = np.empty_like(values)
    _log_all(values, out)
    return out


def test_fast_log_within_one_ulp():
    rng = np.random.default_rng(8)
    # Where the kernels use it (a sum of exponentials, in [1, k]), the
    # significand boundaries around sqrt(2), and the whole normal range.
    x = np.concatenate([
        np.linspace(1.0, 1e6, 2_000_001),
        np.sqrt(2.0) * (1.0 + np.linspace(-1e-6, 1e-6, 100_001)),
        np.exp(rng.uniform(-700.0, 700.0, 1_000_000)),
        [np.finfo(np.float64).tiny, np.finfo(np.float64).max, 1.0 + 2.0**-52, 1.0 - 2.0**-53],
    ])
    exact = np.log(x.astype(np.longdouble))
    ulp = np.spacing(np.abs(exact.astype(np.float64)))
    error = np.abs(_fast_log(x).astype(np.longdouble) - exact) / ulp
    assert error.max() <= 1.0


def test_fast_log_special_values():
    out = _fast_log([1.0, 2.0, 0.5, np.inf, np.nan])
    assert out[0] == 0.0
    assert out[1] == math.log(2.0) and out[2] == -math.log(2.0)
    assert out[3] == np.inf and np.isnan(out[4])


@numba.njit
def _log_nonnegative_all(values, out):
    for i in range(values.size):
        out[i] = vector_math.log_nonnegative(values[i])


def test_float32_log_within_one_ulp_over_every_binade():
    # Every 61st float32 from the smallest subnormal to the largest finite one, and the
    # values the elementwise losses meet at their ends.
    x = np.concatenate([
        np.arange(1, 0x7F800000, 61, dtype=np.uint32).view(np.float32),
        np.float32([1.0, 2.0, 0.5, 2.0**-149, np.finfo(np.float32).tiny]),
    ])
    out = np.empty_like(x)
    _log_nonnegative_all(x, out)
    exact = np.log(x.astype(np.float64))
    ulp = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    assert (np.abs(out - exact) / ulp).max() <= 1.0
    assert out[-5] == 0.0 and out[-4] == np.float32(math.log(2.0))


def test_float64_log_of_subnormals_and_zero():
    # Subnormals as exact as normal floats (KL divergence's x log x of a tiny target);
    # log 0 (and -0) is log 2**-1077: finite, below the smallest subnormal's.
    x = np.concatenate([np.geomspace(5e-324, 2.2250738585072014e-308, 4001),
                        [np.nextafter(2.2250738585072014e-308, 0), 0.0, -0.0]])
    out = np.empty_like(x)
    _log_nonnegative_all(x, out)
    exact = np.log(x[:-2].astype(np.longdouble))
    ulp = np.spacing(np.abs(exact).astype(np.float64)).astype(np.longdouble)
    assert (np.abs(out[:-2] - exact) / ulp).max() <= 1.0
    assert out[-2] == out[-1] == pytest.approx(-1077 * math.log(2.0), rel=1e-15)


def test_float32_log_special_values():
    x = np.float32([0.0, -0.0, np.inf, np.nan])
    out = np.empty_like(x)
    _log_nonnegative_all(x, out)
    # log 0 is log 2**-150: finite, so that 0 * log 0 is 0, and below BCE's clamp at -100.
    assert out[0] == out[1] == np.float32(math.log(2.0**-150))
    assert out[2] == np.inf and np.isnan(out[3])


@numba.njit
def _log1p_unit_all(values, out):
    for i in range(values.size):
        e = values[i]
        one = vector_math.like(e, 1.0)
        out[i] = vector_math.log1p_unit(e, one / (one + e))


def test_bce_with_logits_of_targets_outside_zero_one_is_the_references():
    # PyTorch takes such targets; the weight 1 + (pos_weight - 1) t stays exactly 1 without
    # pos_weight, as the reference's, also where 1 - t rounds (t = 1e8: log 2 at x = 0).
    import fastloss as fl

    x = np.float32([-3.0, 0.0, 2.0, 0.5, -1.0])
    for t in (np.full(5, 1e8, np.float32), np.float32([-4.3, -0.7, 2.5, 3.1, -1e-3])):
        np.testing.assert_array_equal(
            fl.binary_cross_entropy_with_logits(x, t, reduction="none", backend="numba"),
            fl.binary_cross_entropy_with_logits(x, t, reduction="none", backend="numpy"))


@pytest.mark.parametrize("dtype", DTYPES)
def test_log1p_unit_within_one_and_a_half_ulp(dtype):
    # BCE with logits' softplus, log(1 + e) for e = e^-|x| in [0, 1]: every 61st float32
    # of [0, 1] (a float32 polynomial), or as many float64 values spread the same way.
    e = np.arange(0, 0x3F800001, 61, dtype=np.uint32).view(np.float32).astype(dtype)
    e = np.concatenate([e, dtype([0.0, 1.0, 2.0**-126, 2.0**-149, 0.5, 2.0**-24, np.nan])])
    out = np.empty_like(e)
    _log1p_unit_all(e, out)
    exact = np.log1p(e.astype(np.longdouble))
    ulp = np.spacing(exact.astype(dtype)).astype(np.longdouble)
    finite = ~np.isnan(e)
    assert (np.abs(out[finite] - exact[finite]) / ulp[finite]).max() <= 1.5
    assert out[-7] == 0.0 and np.isnan(out[-1])


# --------------------------------------------------------------- determinism


def test_serial_and_threaded_copies_give_the_same_bits(monkeypatch):
    from fastloss.backends.numba import elementwise
    from fastloss.backends.numba.binary_cross_entropy import binary_cross_entropy

    rng = np.random.default_rng(7)
    pred = rng.standard_normal(300_001).astype(np.float32)
    target = rng.standard_normal(pred.size).astype(np.float32)
    logits = (4 * rng.standard_normal((20_001, 10))).astype(np.float32)
    labels = rng.integers(0, 10, 20_001)
    # Binary cross-entropy's hard labels, one soft target mid-array: both of its functors.
    probs = rng.random(pred.size).astype(np.float32)
    hard = (rng.random(pred.size) < 0.5).astype(np.float32)
    hard[150_007] = 0.25

    def run():
        grad, ce_grad, bce_grad = (np.empty_like(pred), np.empty_like(logits),
                                   np.empty_like(probs))
        return (mse(pred, target, grad, None, pred.size), grad,
                softmax_cross_entropy(logits, labels, None, ce_grad, None, -100, 0.1, 9.0),
                ce_grad, ce_module.label_summary(labels, np.ones(10), 10, 3),
                binary_cross_entropy(probs, hard, bce_grad, None, probs.size), bce_grad)

    threaded = run()
    monkeypatch.setattr(elementwise, "SERIAL_ELEMENTS", pred.size)
    monkeypatch.setattr(ce_module, "SERIAL_ELEMENTS", logits.size)
    monkeypatch.setattr(ce_module, "LABEL_SERIAL", labels.size)
    serial = run()
    for total in (0, 2, 5):
        assert float(threaded[total]).hex() == float(serial[total]).hex()
    for array in (1, 3, 6):
        assert threaded[array].tobytes() == serial[array].tobytes()
    assert threaded[4] == serial[4]

_DETERMINISM_SCRIPT = """
import hashlib, json
import numba
import numpy as np
from fastloss.backends.numba.mse import mse
from fastloss.backends.numba.multi_margin import multi_margin
from fastloss.backends.numba.softmax_cross_entropy import softmax_cross_entropy
from fastloss.backends.numba.softmax_entropy import softmax_entropy

def digest(array):
    return hashlib.sha256(array.tobytes()).hexdigest()

rng = np.random.default_rng(2024)
pred = rng.standard_normal(1_000_003).astype(np.float32)
target = rng.standard_normal(pred.size).astype(np.float32)
# One row at a time (1001 classes) and rows in lanes (10 classes, several
# blocks of passes and a partial last pass), for cross-entropy, the softmax
# entropy and multi_margin.
cases = []
for rows, classes in ((300, 1001), (70001, 10)):
    logits = (rng.standard_normal((rows, classes)) * 4).astype(np.float32)
    labels = rng.integers(0, classes, rows)
    probs = rng.random(logits.shape).astype(np.float32)
    probs /= probs.sum(axis=1, keepdims=True)
    cases += [(logits, labels, rng.random(classes)), (logits, probs, None)]
runs = []
for _ in range(2):
    grad = np.empty_like(pred)
    result = [float(mse(pred, target, grad, None, pred.size)).hex(), digest(grad)]
    for logits, target_, weight_ in cases:
        grad = np.empty_like(logits)
        losses = np.empty(logits.shape[0])
        total = softmax_cross_entropy(logits, target_, weight_, grad, losses, -100, 0.1, 300)
        result += [float(total).hex(), digest(grad), digest(losses)]
        if weight_ is not None:  # labels: the other row losses over the same rows
            total = softmax_entropy(logits, grad, losses, 300)
            result += [float(total).hex(), digest(grad), digest(losses)]
            total = multi_margin(logits, target_, weight_, grad, losses, 2, 0.5, 300)
            result += [float(total).hex(), digest(grad), digest(losses)]
    runs.append(result)
print(json.dumps({"threads": numba.get_num_threads(), "runs": runs}))
"""


def test_same_bits_at_any_thread_count():
    root = Path(mse_module.__file__).resolve().parents[3]
    results = {}
    for threads in (1, 2, 4):
        env = dict(os.environ, NUMBA_NUM_THREADS=str(threads))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
        completed = subprocess.run(
            [sys.executable, "-c", _DETERMINISM_SCRIPT],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert completed.returncode == 0, completed.stderr
        report = json.loads(completed.stdout.strip().splitlines()[-1])
        assert report["threads"] == threads
        first, second = report["runs"]
        assert first == second, f"two runs differ at {threads} threads"
        results[threads] = first
    assert results[1] == results[2] == results[4]


# -------------------------------------------------------------- label checks


@pytest.mark.parametrize("weighted", [False, True], ids=["count", "weight sum"])
@pytest.mark.parametrize("size", [0, 5, 2 * ce_module.BLOCK_ELEMENTS + 5])
def test_label_summary_matches_numpy(weighted, size):
    numpy_summary = _registry.hook("label_summary", "numpy")
    rng = np.random.default_rng(size)
    labels = rng.integers(0, 10, size)
    labels[::3] = -100
    weight = rng.random(10) if weighted else None

    first, kept = ce_module.label_summary(labels, weight, 10, -100)
    expected_first, expected_kept = numpy_summary(labels, weight, 10, -100)

    assert first == expected_first == -1
    assert type(kept) is type(expected_kept)
    assert kept == pytest.approx(expected_kept, rel=1e-12)
    for position in (size - 1, size // 2, 1) if size > 2 else ():
        labels[position] = [10, -1][position % 2]
        # The first invalid label wins, whichever block it is in.
        assert ce_module.label_summary(labels, weight, 10, -100)[0] == position
        assert numpy_summary(labels, weight, 10, -100)[0] == position


# ------------------------------------------------------------------ the on-disk cache

_SHARED_EDIT_SCRIPT = """
import numpy as np
import fastloss as fl
z = np.linspace(-3.0, 2.0, 6 * 40, dtype=np.float32).reshape(6, 40)
loss, grad = fl.softmax_entropy_with_grad(z, backend="numba")
print(float(loss).hex(), grad.tobytes().hex()[:64])
"""


def test_an_edit_of_a_shared_file_reaches_a_cached_kernel(tmp_path):
    """Numba's cache keys a function by its own file only. The softmax entropy's
    kernel takes its exponential from softmax_cross_entropy.py, and its row
    functions are not cached apart from it: an edit there must change its
    results in the next process, not load the stale cached code."""
    package = Path(ce_module.__file__).resolve().parents[2]
    copy = tmp_path / "fastloss"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    env = dict(os.environ, PYTHONPATH=str(tmp_path), NUMBA_CACHE_DIR=str(tmp_path / "cache"))

    def entropy():
        completed = subprocess.run([sys.executable, "-c", _SHARED_EDIT_SCRIPT], env=env,
                                   capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert completed.returncode == 0, completed.stderr
        return completed.stdout.split()

    before = entropy()
    # The kernel is in the cache, so the edit below is what makes the next process compile.
    assert list((tmp_path / "cache").rglob("softmax_entropy._kernel__*.nbi"))
    assert entropy() == before
    shared = copy / "backends" / "numba" / "softmax_cross_entropy.py"
    text = shared.read_text()
    coefficient = "_P5 = _F32(5.0000001201e-1)"  # of the float32 exponential
    assert coefficient in text
    shared.write_text(text.replace(coefficient, "_P5 = _F32(0.45)"))
    assert entropy() != before


@pytest.mark.parametrize("rows", [2**16, 200_000])
def test_a_weighted_mean_over_many_rows_keeps_float64s_digits(rows):
    # Rows of one equal loss and one label weight: a mean of log 2 exactly. Summed one row at
    # a time in a block (nll's losses, and the labels' weights that a weighted mean divides
    # by), the float64 result was about 1e-12 off; in lanes, about 1e-14.
    import fastloss as fl

    weight = np.array([0.5024484685327427, 1.0])
    logits, labels = np.zeros((rows, 2)), np.zeros(rows, np.int64)
    log_probs = logits - math.log(2.0)
    for loss, grad in (fl.softmax_cross_entropy_with_grad(logits, labels, weight=weight,
                                                          backend="numba"),
                       fl.nll_with_grad(log_probs, labels, weight=weight, backend="numba"),
                       fl.nll_with_grad(log_probs, labels, backend="numba")):
        assert abs(loss / math.log(2.0) - 1) < 2e-14
        assert abs(grad[0, 0] * rows / -(0.5 if grad[0, 1] > 0 else 1.0) - 1) < 2e-14
