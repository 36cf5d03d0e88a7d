"""The emulated CUDA matrix: boundary shapes, every dtype, every option, against the NumPy backend.

Shared by ``tests/test_cuda_emulator.py`` (the checked build, full sizes) and
the sanitizer runs (``python -m cuda_emulator.cases``, small sizes), so both
see the same cases. Importing this module imports neither torch nor numba.
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass

import numpy as np

import fastloss as fl

# Class counts at the launch-mode boundaries: row groups of 1 to 32 lanes (the
# fewest whose tiles of TILE = 16 classes hold the row: 1 up to 16 classes, 2 up
# to 32, ...) up to 32 * TILE = 512 classes, one block per row above, streamed
# past 256 threads * TILE = 4096.
CLASSES = (1, 2, 3, 5, 10, 16, 17, 31, 33, 64, 65, 100, 256, 257, 512, 513, 4096, 4097, 50000)
DTYPES = ("float16", "bfloat16", "float32", "float64")
# |loss - reference| <= RTOL * |reference| (+ ATOL for the gradient), per dtype:
# the result is rounded once from float64 (MSE, float64) or computed in float32.
RTOL = {"float64": 1e-12, "float32": 2e-5, "float16": 2e-3, "bfloat16": 1.6e-2}
ATOL = {"float64": 1e-15, "float32": 1e-7, "float16": 2e-5, "bfloat16": 2e-4}
# The least fraction of a half-precision cross-entropy gradient that must be
# exactly the float64 result rounded once (measured: 99.99% and above).
HALF_EXACT = {"float16": 0.999, "bfloat16": 0.999}
# The same for a softmax-family result. Its elements share one float32 row constant
# (log-sum, dot product, sum), so misses come a row at a time: 99.99% over the
# whole matrix, 99.89% in its worst case (log_softmax, 7x1000, float16).
SOFTMAX_HALF_EXACT = 0.998


def sectors_per_byte(row_lanes: int) -> float:
    """The most 32-byte sectors per byte that a pass over rows of whole 16-byte packets
    may ask for: a warp reads each tile step of a row group (``row_lanes`` lanes, 0 for a
    block a row: 32 per warp) as one span of 16 * lanes bytes, which touches at most
    16 * lanes / 32 + 1 sectors; a lone packet touches one, half of it unused. A GPU's L1
    serves the second touch of a sector; the emulator's count does not assume it."""
    lanes = row_lanes or 32
    return min(2.0, 1.0 + 2.0 / lanes)


def rows_over_grid_strides(monkeypatch, classes: int) -> int:
    """Caps the row kernels' grid at three blocks and returns a row count of ``classes``
    classes over which every block loops as a capped grid does at millions of rows: twice
    and more, the last round leaving some row groups without a row."""
    from fastloss.backends.cuda import softmax_cross_entropy as cuda_ce

    monkeypatch.setattr(cuda_ce, "MAX_BLOCKS", 3)
    _, threads, row_lanes = cuda_ce.launch_shape(1, classes)
    return 3 * (threads // row_lanes if row_lanes else 1) * 2 + 5


def numpy_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


@dataclass(frozen=True)
class CrossEntropyCase:
    rows: int
    classes: int
    dtype: str = "float32"
    targets: str = "labels"  # or "probabilities"
    reduction: str = "mean"
    weighted: bool = False
    label_smoothing: float = 0.0
    in_place: bool = False
    misaligned: bool = False
    extreme: bool = False

    @property
    def id(self) -> str:
        flags = [name for name in ("weighted", "in_place", "misaligned", "extreme")
                 if getattr(self, name)]
        if self.label_smoothing:
            flags.append(f"smooth{self.label_smoothing}")
        return "-".join([f"{self.rows}x{self.classes}", self.dtype, self.targets,
                         self.reduction, *flags])


@dataclass(frozen=True)
class MseCase:
    size: int
    dtype: str = "float32"
    reduction: str = "mean"
    in_place: bool = False
    misaligned: bool = False

    @property
    def id(self) -> str:
        flags = [name for name in ("in_place", "misaligned") if getattr(self, name)]
        return "-".join([str(self.size), self.dtype, self.reduction, *flags])


@dataclass(frozen=True)
class ElementwiseCase:
    """One elementwise loss other than MSE (whose bit-exact matrix is ``MseCase``)."""

    loss: str
    size: int
    dtype: str = "float32"
    reduction: str = "mean"
    in_place: bool = False
    misaligned: bool = False
    weighted: bool = False

    @property
    def id(self) -> str:
        flags = [name for name in ("in_place", "misaligned", "weighted") if getattr(self, name)]
        return "-".join([self.loss, str(self.size), self.dtype, self.reduction, *flags])


@dataclass(frozen=True)
class SoftmaxCase:
    """One of ``fastloss.backends.cuda.softmax``'s functions on ``(rows, classes)`` inputs."""

    function: str  # one of SOFTMAX_FUNCTIONS
    rows: int
    classes: int
    dtype: str = "float32"
    in_place: bool = False  # out is the last input
    misaligned: bool = False
    extreme: bool = False

    @property
    def id(self) -> str:
        flags = [name for name in ("in_place", "misaligned", "extreme") if getattr(self, name)]
        return "-".join([self.function, f"{self.rows}x{self.classes}", self.dtype, *flags])


SOFTMAX_FUNCTIONS = ("softmax", "log_softmax", "softmax_backward", "log_softmax_backward")
# Row modes: 1 to 32 lanes a row up to 512 classes, a block a row above, streamed
# (read twice) past 4096.
SOFTMAX_CLASSES = (1, 2, 10, 31, 100, 512, 513, 1000, 4096, 4097, 5000)


# Each elementwise loss's inputs (float64 before rounding), options, and the
# options that take per-element arrays when a case is weighted.
ELEMENTWISE = {
    "l1": ("normal", {}, ()),
    "smooth_l1": ("normal", {"beta": 0.5}, ()),
    "huber": ("normal", {"delta": 0.75}, ()),
    "binary_cross_entropy_with_logits": ("logits", {}, ("weight", "pos_weight")),
    "binary_cross_entropy": ("probs", {}, ("weight",)),
    "hinge": ("signs", {"margin": 0.5}, ()),
    "kl_div": ("logits", {}, ()),
}


def cross_entropy_cases(small: bool = False) -> list[CrossEntropyCase]:
    rows = 3 if small else 37
    cases = [CrossEntropyCase(rows, k, dtype) for k in CLASSES for dtype in DTYPES]
    wide = 2 if small else 5
    cases += [
        CrossEntropyCase(wide, k, "float32", targets, reduction, weighted, smoothing)
        for k in (31, 513, 4097)
        for targets, reduction, weighted, smoothing in itertools.product(
            ("labels", "probabilities"), ("mean", "sum", "none"), (False, True), (0.0, 0.1))
    ]
    cases += [
        CrossEntropyCase(rows, k, dtype, targets, in_place=True, misaligned=True)
        for k in (31, 513, 4097) for dtype in ("float16", "float64")
        for targets in ("labels", "probabilities")
    ]
    cases += [CrossEntropyCase(4, k, dtype, extreme=True, label_smoothing=0.1, reduction="none")
              for k in (5, 600, 5000) for dtype in DTYPES]
    return cases


def mse_cases(small: bool = False) -> list[MseCase]:
    sizes = (1, 7, 33, 4099) if small else (1, 7, 33, 4099, 300_007)
    cases = [MseCase(n, dtype, reduction) for n in sizes for dtype in DTYPES
             for reduction in ("mean", "sum", "none")]
    cases += [MseCase(4099, dtype, in_place=True, misaligned=True) for dtype in DTYPES]
    return cases


def elementwise_cases(small: bool = False) -> list[ElementwiseCase]:
    sizes = (1, 33, 4099) if small else (1, 7, 33, 4099, 300_007)
    cases = [ElementwiseCase(loss, n, dtype, reduction) for loss in ELEMENTWISE
             for n in sizes for dtype in DTYPES
             for reduction in (("mean", "none") if small else ("mean", "sum", "none"))]
    cases += [ElementwiseCase(loss, 4099, dtype, in_place=True, misaligned=True,
                              weighted=bool(ELEMENTWISE[loss][2]))
              for loss in ELEMENTWISE for dtype in ("float16", "float64")]
    cases += [ElementwiseCase(loss, n, "float32", reduction, weighted=True)
              for loss in ELEMENTWISE if ELEMENTWISE[loss][2]
              for n in (33, 4099) for reduction in ("mean", "none")]
    return cases


def softmax_cases(small: bool = False) -> list[SoftmaxCase]:
    classes = (1, 31, 513, 4097) if small else SOFTMAX_CLASSES
    dtypes = ("float16", "float64") if small else DTYPES
    cases = [SoftmaxCase(f, 3 if small else 7, k, dtype)
             for f in SOFTMAX_FUNCTIONS for k in classes for dtype in dtypes]
    if not small:
        cases += [SoftmaxCase(f, n, k) for f in SOFTMAX_FUNCTIONS
                  for n in (0, 1, 300) for k in (10, 1000)]
        cases += [SoftmaxCase(f, 7, k, dtype, in_place=True, misaligned=True)
                  for f in SOFTMAX_FUNCTIONS for k in (31, 513, 5000)
                  for dtype in ("float16", "float64")]
    cases += [SoftmaxCase(f, 8, k, dtype, extreme=True) for f in SOFTMAX_FUNCTIONS
              for k in ((600,) if small else (5, 600, 5000))
              for dtype in (("float32",) if small else DTYPES)]
    return cases


@dataclass(frozen=True)
class NllCase:
    """``fastloss.backends.cuda.nll.nll`` on ``(rows, classes)`` log-probabilities."""

    rows: int
    classes: int
    dtype: str = "float32"
    weighted: bool = False
    device_divisor: bool = True  # a "mean"'s 0-d device array; else the number 2.5
    grad: bool = True
    loss_out: bool = True
    in_place: bool = False
    misaligned: bool = False
    invalid: bool = False  # labels k, -1 and 2**40 (NaN rows)
    extreme: bool = False  # -inf log-probabilities at a label and elsewhere
    ignore_index: int = -100

    @property
    def id(self) -> str:
        flags = [name for name in ("weighted", "in_place", "misaligned", "invalid", "extreme")
                 if getattr(self, name)]
        flags += [] if self.device_divisor else ["number"]
        flags += [] if self.grad else ["no-grad"]
        flags += [] if self.loss_out else ["no-loss-out"]
        flags += [] if self.ignore_index == -100 else [f"ignore{self.ignore_index}"]
        return "-".join(["nll", f"{self.rows}x{self.classes}", self.dtype, *flags])


NLL_CLASSES = (1, 2, 10, 31, 513, 1000, 5000)


def nll_cases(small: bool = False) -> list[NllCase]:
    classes = (1, 10, 1000, 5000) if small else NLL_CLASSES
    dtypes = ("float16", "float64") if small else DTYPES
    rows = 3 if small else 7
    cases = [NllCase(rows, k, dtype) for k in classes for dtype in dtypes]
    cases += [NllCase(rows, k, "float32", weighted, device, invalid=invalid)
              for k in (10, 1000, 5000) for weighted in (False, True)
              for device in (False, True) for invalid in (False, True)]
    cases += [NllCase(rows, k, dtype, in_place=True, misaligned=True, weighted=True)
              for k in (10, 1000, 5000) for dtype in ("float16", "bfloat16", "float64")]
    cases += [NllCase(7, k, dtype, extreme=True, device_divisor=False)
              for k in (5, 1000, 5000) for dtype in dtypes]
    cases += [NllCase(rows, k, grad=grad, loss_out=not grad)
              for k in (10, 5000) for grad in (False, True)]
    cases += [NllCase(rows, 10, ignore_index=0, invalid=True, weighted=True),
              NllCase(rows, 1000, ignore_index=3, invalid=True)]
    if not small:
        cases += [NllCase(n, k, device_divisor=n > 0) for n in (0, 1, 300) for k in (10, 1000)]
        cases += [NllCase(300, 5000, "bfloat16", weighted=True, invalid=True)]
    return cases


def nll_inputs(case: NllCase):
    """``(log_probs, labels, weight)`` of ``case``: log-softmax rows in its dtype, every
    fourth label ignored; invalid labels in rows 1, 2 and 3 (of those there are);
    extreme cases have 7 rows or more."""
    rng = np.random.default_rng(case.rows * 7919 + case.classes + case.extreme)
    log_probs = softmax_reference("log_softmax", 3 * rng.standard_normal((case.rows,
                                                                           case.classes)))
    labels = rng.integers(0, case.classes, case.rows)
    labels[::4] = case.ignore_index
    if case.invalid:
        labels[1:4] = [case.classes, -1, 2**40][: len(labels[1:4])]
    if case.extreme:  # row 5 all -inf (its loss +inf), row 6 -inf beside its label
        log_probs[5, :] = -np.inf
        log_probs[6, (labels[6] + 1) % case.classes] = -np.inf
    weight = rng.uniform(0.5, 2.0, case.classes) if case.weighted else None
    return log_probs.astype(numpy_dtype(case.dtype)), labels, weight


def nll_reference(log_probs, labels, weight, ignore_index: int, divisor: float):
    """``(row losses, gradient)`` in float64, PyTorch's nll_loss with NaN rows for
    labels neither ignored nor in ``[0, k)``."""
    log_probs = np.asarray(log_probs, np.float64)
    rows, classes = log_probs.shape
    weight = np.ones(classes) if weight is None else np.asarray(weight, np.float64)
    ignored = labels == ignore_index
    valid = ~ignored & (labels >= 0) & (labels < classes)
    invalid = ~ignored & ~valid
    index = np.nonzero(valid)[0]
    w = weight[labels[index]]
    loss = np.zeros(rows)
    grad = np.zeros((rows, classes))
    with np.errstate(invalid="ignore", divide="ignore"):
        loss[index] = -(w * log_probs[index, labels[index]])
        grad[index, labels[index]] = -(w / np.float64(divisor))
    loss[invalid] = np.nan
    grad[invalid] = np.nan
    return loss, grad


def nll_divisor(labels, weight, classes: int, ignore_index: int) -> float:
    """A "mean"'s divisor: the weights (or count) of the rows not ignored (an
    invalid label counts with its clipped class, as mean_divisor does)."""
    kept = np.clip(labels[labels != ignore_index], 0, classes - 1)
    return float(kept.size if weight is None else np.asarray(weight)[kept].sum())


def run_nll(case: NllCase, cupy) -> None:
    """The launcher on ``case`` against :func:`nll_reference`: row losses and the
    gradient bit for bit (each one rounding of a float64 formula), the loss within the
    dtype's tolerance (the kernel sums the rows in its own order)."""
    from fastloss.backends.cuda import nll as cuda_nll
    from fastloss.backends.cuda import softmax_cross_entropy as cuda_ce

    log_probs, labels, weight = nll_inputs(case)
    device_log_probs = device_copy(cupy, log_probs, case.misaligned)
    device_labels = cupy.asarray(labels)
    device_weight = None if weight is None else cupy.asarray(weight)
    if case.device_divisor:
        divisor = nll_divisor(labels, weight, case.classes, case.ignore_index)
        device_divisor = cuda_ce.mean_divisor(device_labels, device_weight, case.classes,
                                              case.ignore_index)
        # Summed in another order: the reference takes the device's bits.
        np.testing.assert_allclose(_as_float64(device_divisor), divisor, rtol=1e-14)
        divisor = float(_as_float64(device_divisor))
    else:
        divisor = device_divisor = 2.5
    grad_out = None
    if case.grad:
        grad_out = (device_log_probs if case.in_place
                    else device_copy(cupy, np.full_like(log_probs, 7), case.misaligned))
    loss_out = cupy.asarray(np.full(case.rows, 7.0)) if case.loss_out else None
    loss = cuda_nll.nll(device_log_probs, device_labels, device_weight, grad_out, loss_out,
                        case.ignore_index, device_divisor)
    want_rows, want_grad = nll_reference(log_probs, labels, weight, case.ignore_index, divisor)
    assert fl_host(loss).dtype == log_probs.dtype and fl_host(loss).shape == ()
    with np.errstate(invalid="ignore", divide="ignore"):
        want_loss = want_rows.sum() / divisor
    _check(f"loss {case.id}", loss, want_loss, case.dtype)
    if loss_out is not None:
        _check_exact(f"loss_out {case.id}", loss_out, want_rows, "float64")
    if grad_out is not None:
        assert fl_host(grad_out).dtype == log_probs.dtype
        _check_exact(f"grad {case.id}", grad_out, want_grad, case.dtype)
        signed = ~np.isnan(want_grad)  # zeros are +0
        assert (np.signbit(_as_float64(grad_out)) == np.signbit(want_grad))[signed].all()


@dataclass(frozen=True)
class EntropyCase:
    """``fastloss.backends.cuda.softmax_entropy.softmax_entropy`` on ``(rows, classes)`` logits."""

    rows: int
    classes: int
    dtype: str = "float32"
    mean: bool = True  # divisor = rows ("mean"; 1 for no rows), else 1 ("sum")
    device_divisor: bool = False  # the divisor as a 0-d float64 device array
    grad: bool = True
    loss_out: bool = True
    in_place: bool = False
    misaligned: bool = False
    extreme: bool = False

    @property
    def id(self) -> str:
        flags = [name for name in ("in_place", "misaligned", "extreme", "device_divisor")
                 if getattr(self, name)]
        flags += [] if self.mean else ["sum"]
        flags += [] if self.grad else ["no-grad"]
        flags += [] if self.loss_out else ["no-loss-out"]
        return "-".join(["entropy", f"{self.rows}x{self.classes}", self.dtype, *flags])

    @property
    def divisor(self) -> float:
        return float(self.rows or 1) if self.mean else 1.0


# Row modes: 1 to 32 lanes a row up to 512 classes, a block a row above, streamed
# (read twice for the gradient) past 4096.
ENTROPY_CLASSES = (1, 2, 10, 31, 100, 512, 513, 1000, 4096, 4097, 5000)


def entropy_cases(small: bool = False) -> list[EntropyCase]:
    classes = (1, 10, 513, 5000) if small else ENTROPY_CLASSES
    dtypes = ("float16", "float64") if small else DTYPES
    rows = 3 if small else 7
    cases = [EntropyCase(rows, k, dtype) for k in classes for dtype in dtypes]
    cases += [EntropyCase(rows, k, dtype, in_place=True, misaligned=True)
              for k in (10, 513, 5000) for dtype in ("float16", "bfloat16", "float64")]
    cases += [EntropyCase(8, k, dtype, extreme=True, mean=False)
              for k in ((5, 600) if small else (1, 5, 600, 5000))
              for dtype in (("float32",) if small else DTYPES)]
    cases += [EntropyCase(rows, k, grad=grad, loss_out=not grad)
              for k in (10, 5000) for grad in (False, True)]
    cases += [EntropyCase(rows, k, device_divisor=True) for k in (10, 1000)]
    if not small:
        cases += [EntropyCase(n, k, mean=mean) for n in (0, 1, 300) for k in (10, 1000)
                  for mean in (False, True)]
        cases += [EntropyCase(300, 5000, "bfloat16", in_place=True)]
    return cases


def entropy_inputs(case: EntropyCase) -> np.ndarray:
    """The logits of ``case`` in its dtype. Extreme rows (8 of them): a huge logit
    (entropy 0), a -inf entry, a row of -huge (uniform: log k), a row of only -inf
    (NaN), a NaN entry (NaN row), a tie of two huge logits, a +inf entry (NaN row),
    and huge, -huge and -inf entries together."""
    rng = np.random.default_rng(case.rows * 7919 + case.classes + 3 * case.extreme)
    z = 3 * rng.standard_normal((case.rows, case.classes))
    if case.extreme:
        huge = 6e4 if case.dtype == "float16" else 1e30  # near the top of each range
        last = case.classes - 1
        z[0, 0], z[1, last], z[2], z[3] = huge, -np.inf, -huge, -np.inf
        z[4, last // 2], z[5, -2:], z[6, 0] = np.nan, huge, np.inf
        z[7, ::3], z[7, 1::3], z[7, 0] = -np.inf, -huge, huge
    return z.astype(numpy_dtype(case.dtype))


def entropy_reference(z, divisor: float) -> tuple[np.ndarray, np.ndarray]:
    """``(row entropies, gradient)`` in float64: p = softmax(z), H = -sum p log p,
    dH/dz = -p (log p + H) / divisor, with 0 wherever p == 0 (no 0 * -inf); a row of
    only -inf, or with NaN or +inf, is NaN (as softmax). H is summed as
    log s + sum e (m - z) / s (e = exp(z - m), s = sum e), which equals -sum p log p
    but is exact where the answer is: a row of equal logits gets log p + H = 0, not
    the float64 rounding error of a sum that bfloat16 would keep."""
    z = np.asarray(z, np.float64)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        shifted = z - z.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        total = exp.sum(axis=1, keepdims=True)
        p = exp / total
        log_p = shifted - np.log(total)
        gap = np.where(exp == 0, 0.0, -exp * shifted).sum(axis=1, keepdims=True)
        entropy = (np.log(total) + gap / total)[:, 0]
        grad = np.where(p == 0, 0.0, -p * (log_p + entropy[:, None])) / np.float64(divisor)
    return entropy, grad


def run_entropy(case: EntropyCase, cupy) -> None:
    """The launcher on ``case`` against :func:`entropy_reference`: NaN exactly where the
    reference has NaN; row entropies and the loss within the dtype's tolerance; the
    gradient within it too (an absolute part scaled by max(1, H) / divisor, the size
    of the terms that cancel in log p + H), and for halves the float64 result rounded
    once in at least SOFTMAX_HALF_EXACT of places."""
    from fastloss.backends.cuda import softmax_entropy as cuda_entropy

    z = entropy_inputs(case)
    device_z = device_copy(cupy, z, case.misaligned)
    divisor = case.divisor
    device_divisor = cupy.asarray(np.array(divisor)) if case.device_divisor else divisor
    grad_out = None
    if case.grad:
        grad_out = (device_z if case.in_place
                    else device_copy(cupy, np.full_like(z, 7), case.misaligned))
    loss_out = cupy.asarray(np.full(case.rows, 7.0)) if case.loss_out else None
    loss = cuda_entropy.softmax_entropy(device_z, grad_out, loss_out, device_divisor)
    want_rows, want_grad = entropy_reference(z, divisor)
    assert fl_host(loss).dtype == z.dtype and fl_host(loss).shape == ()
    _check(f"loss {case.id}", loss, want_rows.sum() / divisor, case.dtype, ATOL[case.dtype])
    if loss_out is not None:
        got_rows = _as_float64(loss_out)
        assert (np.isnan(got_rows) == np.isnan(want_rows)).all(), f"loss_out {case.id}: NaN"
        np.testing.assert_allclose(got_rows, want_rows, rtol=RTOL[case.dtype],
                                   atol=ATOL[case.dtype], err_msg=f"loss_out {case.id}")
    if grad_out is None:
        return
    got, rounded = _as_float64(grad_out), round_once(want_grad, case.dtype)
    assert got.shape == rounded.shape and fl_host(grad_out).dtype == z.dtype
    nan = np.isnan(rounded)
    assert (np.isnan(got) == nan).all(), f"grad {case.id}: NaN where the reference has none, or not"
    scale = np.maximum(1.0, np.nan_to_num(want_rows))[:, None] / divisor
    with np.errstate(invalid="ignore"):
        bound = RTOL[case.dtype] * np.abs(rounded) + 4 * ATOL[case.dtype] * scale
        off = ~((got == rounded) | (np.abs(got - rounded) <= bound) | nan)
    assert not off.any(), (
        f"grad {case.id}: {int(off.sum())} values off, e.g. {got[off][:3]} for {rounded[off][:3]}")
    if case.dtype in HALF_EXACT and got.size:
        exact = np.mean((got == rounded) | nan)
        assert exact >= SOFTMAX_HALF_EXACT, (
            f"grad {case.id}: only {exact:.4%} of the gradient is the float64 result rounded once")


@dataclass(frozen=True)
class MarginCase:
    """``fastloss.backends.cuda.multi_margin.multi_margin`` on ``(rows, classes)`` input."""

    rows: int
    classes: int
    dtype: str = "float32"
    p: int = 1
    margin: float = 1.0
    weighted: bool = False
    mean: bool = True  # divisor = rows ("mean"; 1 for no rows), else 1 ("sum")
    device_divisor: bool = False  # the divisor as a 0-d float64 device array
    grad: bool = True
    loss_out: bool = True
    in_place: bool = False
    misaligned: bool = False
    invalid: bool = False  # labels k, -1 and 2**40 in rows 1 to 3 (NaN rows)
    ties: bool = False  # integer inputs with h_j == 0 exactly (margin 1)
    extreme: bool = False  # +-1e30 (float16: +-6e4) and +-inf

    @property
    def id(self) -> str:
        flags = [name for name in ("weighted", "in_place", "misaligned", "invalid", "ties",
                                   "extreme", "device_divisor") if getattr(self, name)]
        flags += [] if self.mean else ["sum"]
        flags += [] if self.grad else ["no-grad"]
        flags += [] if self.loss_out else ["no-loss-out"]
        return "-".join(["margin", f"{self.rows}x{self.classes}", self.dtype, f"p{self.p}",
                         f"m{self.margin:g}", *flags])

    @property
    def divisor(self) -> float:
        return float(self.rows or 1) if self.mean else 1.0


# The spacing of each dtype's subnormals: the gradient's float result rounded again to
# a half is off by one of these where it is subnormal (float16 below 6.1e-5).
SUBNORMAL_STEP = {"float16": 2.0**-24, "bfloat16": 2.0**-133, "float32": 2.0**-149,
                  "float64": 0.0}
# Row modes: 1 to 32 lanes a row up to 512 classes, a block a row above, streamed
# (read twice for the gradient) past 4096.
MARGIN_CLASSES = (1, 2, 10, 100, 513, 1000, 4096, 4097, 5000)


def margin_cases(small: bool = False) -> list[MarginCase]:
    classes = (1, 10, 513, 5000) if small else MARGIN_CLASSES
    dtypes = ("float16", "float64") if small else DTYPES
    rows = 3 if small else 7
    cases = [MarginCase(rows, k, dtype, p, margin) for k in classes for dtype in dtypes
             for p in (1, 2) for margin in ((1.0,) if small else (1.0, 0.3))]
    cases += [MarginCase(rows, k, "float32", p, weighted=True, invalid=True)
              for k in (10, 1000, 5000) for p in (1, 2)]
    cases += [MarginCase(rows, k, dtype, 2, 0.3, weighted=True, in_place=True, misaligned=True)
              for k in (10, 513, 5000) for dtype in ("float16", "bfloat16", "float64")]
    cases += [MarginCase(rows, k, dtype, p, ties=True, mean=False)
              for k in (2, 10, 1000, 5000) for dtype in dtypes for p in (1, 2)]
    cases += [MarginCase(8, k, dtype, p, extreme=True, mean=False)
              for k in ((5, 600) if small else (2, 5, 600, 5000))
              for dtype in (("float32",) if small else DTYPES) for p in (1, 2)]
    cases += [MarginCase(rows, k, grad=grad, loss_out=not grad)
              for k in (10, 5000) for grad in (False, True)]
    cases += [MarginCase(rows, k, p=2, device_divisor=True) for k in (10, 1000)]
    if not small:
        cases += [MarginCase(n, k, p=p, mean=mean, weighted=True)
                  for n in (0, 1, 300) for k in (10, 1000) for mean in (False, True)
                  for p in (1, 2)]
        cases += [MarginCase(300, 5000, "bfloat16", 2, 0.3, in_place=True, invalid=True)]
    return cases


def margin_inputs(case: MarginCase):
    """``(x, labels, weight)`` of ``case``: x in its dtype. Ties: small integers with
    x[r, j] = x[r, y] - 1 in every other class (h_j == 0 exactly). Extreme (8 rows or
    more): a huge x_y, a huge x_j, -huge x_y, +inf x_j, +inf x_y, -inf x_y, -inf x_j."""
    rng = np.random.default_rng(case.rows * 7919 + case.classes + 3 * case.extreme + case.p)
    x = 2 * rng.standard_normal((case.rows, case.classes))
    labels = rng.integers(0, case.classes, case.rows)
    rows = np.arange(case.rows)
    if case.ties:
        x = rng.integers(-3, 4, (case.rows, case.classes)).astype(np.float64)
        target = x[rows, labels].copy()
        x[:, ::2] = (target - 1.0)[:, None]
        x[rows, labels] = target
    if case.extreme:
        huge = 6e4 if case.dtype == "float16" else 1e30
        other = (labels + 1) % case.classes
        x[0, labels[0]] = huge
        x[1, other[1]] = huge
        x[2, labels[2]] = -huge
        x[3, other[3]] = np.inf
        x[4, labels[4]] = np.inf
        x[5, labels[5]] = -np.inf
        x[6, other[6]] = -np.inf
        x[7, other[7]], x[7, labels[7]] = -huge, huge
    if case.invalid:
        labels[1:4] = [case.classes, -1, 2**40][: len(labels[1:4])]
    weight = rng.uniform(0.5, 2.0, case.classes) if case.weighted else None
    return x.astype(numpy_dtype(case.dtype)), labels, weight


def margin_reference(x, labels, weight, p: int, margin: float, divisor: float):
    """``(row losses, gradient)`` in float64, PyTorch's multi_margin_loss on 2-D input:
    h_j = (margin - x_y) + x_j for j != y, terms where h_j > 0 (a NaN h adds nothing),
    NaN rows for labels outside [0, k)."""
    x = np.asarray(x, np.float64)
    rows, classes = x.shape
    weight = np.ones(classes) if weight is None else np.asarray(weight, np.float64)
    valid = (labels >= 0) & (labels < classes)
    y = np.where(valid, labels, 0)
    index = np.arange(rows)
    with np.errstate(invalid="ignore", over="ignore"):
        h = (margin - x[index, y])[:, None] + x
        active = (h > 0) & (np.arange(classes)[None, :] != y[:, None])
        w = weight[y]
        terms = np.where(active, h if p == 1 else h * h, 0.0)
        loss = w * terms.sum(axis=1) / classes
        scale = w * p / classes / np.float64(divisor)
        grad = np.where(active, scale[:, None] * (1.0 if p == 1 else h), 0.0)
        # As the kernel forms it: p = 1, scale times the count of terms; p = 2, the sum of
        # the terms' slopes (a sum of h may overflow where the gradient does not). As
        # PyTorch's 0 - terms, +0 when there are none.
        slopes = scale * active.sum(axis=1) if p == 1 else grad.sum(axis=1)
        grad[index, y] = 0.0 - slopes
    loss[~valid] = np.nan
    grad[~valid] = np.nan
    return loss, grad


def run_margin(case: MarginCase, cupy) -> None:
    """The launcher on ``case`` against :func:`margin_reference`: NaN exactly where the
    reference has NaN; row losses, the loss and the gradient within the dtype's
    tolerance plus the error of h_j formed in the compute type (float for halves and
    float32), eps * |margin| + |x_y| + |x_j| per term."""
    from fastloss.backends.cuda import multi_margin as cuda_margin

    x, labels, weight = margin_inputs(case)
    device_x = device_copy(cupy, x, case.misaligned)
    divisor = case.divisor
    device_divisor = cupy.asarray(np.array(divisor)) if case.device_divisor else divisor
    device_weight = None if weight is None else cupy.asarray(weight)
    grad_out = None
    if case.grad:
        grad_out = (device_x if case.in_place
                    else device_copy(cupy, np.full_like(x, 7), case.misaligned))
    loss_out = cupy.asarray(np.full(case.rows, 7.0)) if case.loss_out else None
    loss = cuda_margin.multi_margin(device_x, cupy.asarray(labels), device_weight, grad_out,
                                    loss_out, case.p, case.margin, device_divisor)
    want_rows, want_grad = margin_reference(x, labels, weight, case.p, case.margin, divisor)
    assert fl_host(loss).dtype == x.dtype and fl_host(loss).shape == ()
    # The error of h_j in the compute type, per row: eps * (|m| + |x_y| + max |x_j|).
    eps = 2.0**-52 if case.dtype == "float64" else 2.0**-23
    xf = np.abs(np.where(np.isfinite(x.astype(np.float64)), x.astype(np.float64), 0.0))
    valid = (labels >= 0) & (labels < case.classes)
    y = np.where(valid, labels, 0)
    size = abs(case.margin) + xf[np.arange(case.rows), y] + (xf.max(1) if x.size else 0.0)
    w = (np.ones(case.classes) if weight is None else weight)[y]
    h_max = np.nan_to_num(size, posinf=0.0)
    row_atol = 4 * eps * w * size * (1 + 2 * h_max * (case.p - 1)) + ATOL[case.dtype]
    with np.errstate(invalid="ignore", over="ignore"):
        want_loss = want_rows.sum() / divisor
        loss_atol = np.nan_to_num(row_atol).sum() / divisor + ATOL[case.dtype]
    _check(f"loss {case.id}", loss, want_loss, case.dtype, loss_atol)
    if loss_out is not None:
        got_rows = _as_float64(loss_out)
        assert (np.isnan(got_rows) == np.isnan(want_rows)).all(), f"loss_out {case.id}: NaN"
        with np.errstate(invalid="ignore"):
            off = ~((got_rows == want_rows) | np.isnan(want_rows)
                    | (np.abs(got_rows - want_rows)
                       <= RTOL[case.dtype] * np.abs(want_rows) + row_atol))
        assert not off.any(), f"loss_out {case.id}: {got_rows[off][:3]} for {want_rows[off][:3]}"
    if grad_out is None:
        return
    got, rounded = _as_float64(grad_out), round_once(want_grad, case.dtype)
    assert got.shape == rounded.shape and fl_host(grad_out).dtype == x.dtype
    nan = np.isnan(rounded)
    assert (np.isnan(got) == nan).all(), f"grad {case.id}: NaN where the reference has none, or not"
    scale = (w * case.p / max(case.classes, 1) / divisor)[:, None]
    per_term = 4 * eps * scale * np.nan_to_num(size, posinf=0.0)[:, None] * (case.p - 1)
    bound = np.broadcast_to(per_term, got.shape).copy()
    if got.size:
        bound[np.arange(case.rows), y] *= case.classes
    with np.errstate(invalid="ignore"):
        bound = (bound + RTOL[case.dtype] * np.abs(rounded) + ATOL[case.dtype] * scale
                 + SUBNORMAL_STEP[case.dtype])
        off = ~((got == rounded) | (np.abs(got - rounded) <= bound) | nan)
    assert not off.any(), (
        f"grad {case.id}: {int(off.sum())} values off, e.g. {got[off][:3]} for {rounded[off][:3]}")
    if case.ties and (case.p == 1 or case.dtype == "float64"):
        # Exact inputs: every value is the float64 result rounded once (for p = 2 in
        # float, w p / (k d) * h is rounded to float first, then to the dtype), but for
        # p = 2 the label's, a sum of such rounded slopes in the kernel's order.
        got_grad = _as_float64(grad_out).copy()
        if case.p == 2 and got_grad.size:
            got_grad[np.arange(case.rows), y] = want_grad[np.arange(case.rows), y]
        _check_exact(f"grad {case.id}", got_grad, want_grad, case.dtype)
    signed = ~nan  # zeros are +0, as PyTorch's
    assert (np.signbit(got) == np.signbit(rounded))[signed].all(), f"grad {case.id}: signs"


def elementwise_inputs(case: ElementwiseCase):
    """``(x, target, options)`` of ``case`` in its dtype (options' arrays too)."""
    rng = np.random.default_rng(case.size * 31 + len(case.loss))
    kind, options, arrays = ELEMENTWISE[case.loss]
    dtype = numpy_dtype(case.dtype)
    if kind == "probs":
        x, target = rng.uniform(0.01, 0.99, case.size), rng.random(case.size)
    elif kind == "signs":
        x, target = 2 * rng.standard_normal(case.size), np.sign(rng.random(case.size) - 0.5)
    else:
        x = 3 * rng.standard_normal(case.size)
        target = rng.random(case.size) if kind == "logits" else rng.standard_normal(case.size)
    options = dict(options)
    if case.weighted:
        options.update({name: rng.uniform(0.5, 2.0, case.size).astype(dtype) for name in arrays})
    return x.astype(dtype), target.astype(dtype), options


def run_elementwise(case: ElementwiseCase, cupy) -> None:
    """A loss on the device against the NumPy backend on the same (rounded) values, within
    the dtype's tolerance (the functors use exp and log, whose last bits the GPU decides)."""
    x, target, options = elementwise_inputs(case)
    function = getattr(fl, f"{case.loss}_with_grad")
    exact = {name: value.astype(np.float64) if isinstance(value, np.ndarray) else value
             for name, value in options.items()}
    want_loss, want_grad = function(x.astype(np.float64), target.astype(np.float64),
                                    reduction=case.reduction, backend="numpy", **exact)
    device_x = device_copy(cupy, x, case.misaligned)
    device_target = device_copy(cupy, target, case.misaligned)
    device_options = {name: device_copy(cupy, value, case.misaligned)
                      if isinstance(value, np.ndarray) else value
                      for name, value in options.items()}
    out = device_x if case.in_place else None
    loss, grad = function(device_x, device_target, reduction=case.reduction, backend="cuda",
                          out=out, **device_options)
    assert fl_host(grad).dtype == x.dtype and fl_host(loss).dtype == x.dtype
    if case.in_place:
        assert grad is out
    scale = np.nanmax(np.abs(want_grad), initial=0.0)
    _check(f"loss {case.id}", loss, want_loss, case.dtype, ATOL[case.dtype])
    _check(f"grad {case.id}", grad, want_grad, case.dtype, ATOL[case.dtype] * max(scale, 1.0))


def device_copy(cupy, host: np.ndarray, misaligned: bool):
    """``host`` on the device; ``misaligned`` offsets it by one element from its allocation."""
    if not misaligned:
        return cupy.asarray(host)
    flat = cupy.empty(host.size + 1, dtype=host.dtype)[1:]
    flat[...] = cupy.asarray(host.reshape(-1))
    return flat.reshape(host.shape)


def _as_float64(x) -> np.ndarray:
    return np.asarray(fl_host(x), dtype=np.float64)


def fl_host(x):
    """A device or host result as a NumPy array."""
    return x.get() if hasattr(x, "get") else np.asarray(x)


def round_once(values, dtype: str) -> np.ndarray:
    """float64 ``values`` rounded once, to nearest even, to ``dtype`` (as float64)."""
    values = np.asarray(values, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        if dtype != "bfloat16":  # NumPy's casts from float64 round once
            return values.astype(dtype).astype(np.float64)
        # ml_dtypes goes float64 -> float32 -> bfloat16, two roundings. One: round
        # to float32 toward zero, mark an inexact result in its last bit (16 bits
        # below bfloat16's), then round to bfloat16.
        single = values.astype(np.float32)
        away = np.abs(single.astype(np.float64)) > np.abs(values)
        single[away] = np.nextafter(single[away], np.float32(0))
        bits = single.view(np.uint32)
        bits[single.astype(np.float64) != values] |= 1
        rounded = single.astype(numpy_dtype("bfloat16")).astype(np.float64)
    return np.where(np.isnan(values), np.nan, rounded)


def _check(name: str, got, want, dtype: str, atol: float = 0.0) -> None:
    """``got`` against the float64 ``want`` rounded once to ``dtype`` (as the kernels round)."""
    want, got = round_once(want, dtype), _as_float64(got)
    assert got.shape == want.shape, (name, got.shape, want.shape)
    same_nan = np.isnan(got) == np.isnan(want)
    assert same_nan.all(), f"{name}: NaN where the reference has none, or the reverse"
    np.testing.assert_allclose(got, want, rtol=RTOL[dtype], atol=atol, err_msg=name,
                               equal_nan=True)


def _ce_inputs(case: CrossEntropyCase):
    rng = np.random.default_rng(case.rows * 7919 + case.classes)
    dtype = numpy_dtype(case.dtype)
    logits = (3 * rng.standard_normal((case.rows, case.classes))).astype(dtype)
    if case.extreme:
        huge = 6e4 if case.dtype == "float16" else 1e30  # near the top of each range
        logits[0, 0], logits[1 % case.rows, -1] = huge, -np.inf
        logits[2 % case.rows, :] = -huge
        logits[3 % case.rows, case.classes // 2] = np.inf if case.classes > 1 else 0
    if case.targets == "labels":
        target = rng.integers(0, case.classes, case.rows)
        target[:: 4] = -100
    else:
        target = rng.random((case.rows, case.classes))
        target = (target / target.sum(axis=1, keepdims=True)).astype(dtype)
    weight = rng.uniform(0.5, 2.0, case.classes) if case.weighted else None
    return logits, target, weight


def run_cross_entropy(case: CrossEntropyCase, cupy) -> None:
    """The cuda backend on ``case`` against the NumPy backend on the same (rounded) values."""
    logits, target, weight = _ce_inputs(case)
    options = dict(reduction=case.reduction, label_smoothing=case.label_smoothing)
    exact = logits.astype(np.float64)
    exact_target = target if case.targets == "labels" else target.astype(np.float64)
    want_loss, want_grad = fl.softmax_cross_entropy_with_grad(
        exact, exact_target, weight=weight, backend="numpy", **options)
    device_logits = device_copy(cupy, logits, case.misaligned)
    device_target = device_copy(cupy, target, case.misaligned and case.targets != "labels")
    device_weight = None if weight is None else cupy.asarray(weight)
    out = device_logits if case.in_place else None
    loss, grad = fl.softmax_cross_entropy_with_grad(
        device_logits, device_target, weight=device_weight, backend="cuda", out=out, **options)
    assert fl_host(grad).dtype == logits.dtype and fl_host(loss).dtype == logits.dtype
    if case.in_place:
        assert grad is out
    scale = np.nanmax(np.abs(want_grad), initial=0.0)
    _check(f"loss {case.id}", loss, want_loss, case.dtype)
    _check(f"grad {case.id}", grad, want_grad, case.dtype, ATOL[case.dtype] * max(scale, 1.0))
    if case.dtype in HALF_EXACT:
        # Computed in float32 and rounded once: float32's error rarely moves a
        # half across a rounding boundary, a wrong rounding mode does so half the time.
        # One miss is allowed in any matrix (one is 0.17% of 37 x 16).
        got, want = _as_float64(grad), round_once(want_grad, case.dtype)
        misses = np.count_nonzero((got != want) & ~(np.isnan(got) & np.isnan(want)))
        assert misses <= max(1, (1 - HALF_EXACT[case.dtype]) * got.size), (
            f"grad {case.id}: {misses} of {got.size} gradient elements are not the float64 "
            f"result rounded once to {case.dtype}")


def _check_exact(name: str, got, want, dtype: str) -> None:
    got, want = _as_float64(got), round_once(want, dtype)
    assert got.shape == want.shape, (name, got.shape, want.shape)
    mismatch = ~((got == want) | (np.isnan(got) & np.isnan(want)))
    assert not mismatch.any(), (
        f"{name}: {int(mismatch.sum())} values not the float64 result rounded once to {dtype}, "
        f"e.g. {got[mismatch][:3]} for {want[mismatch][:3]}"
    )


def run_mse(case: MseCase, cupy) -> None:
    """MSE on the device against NumPy in float64; per-element losses and a "sum"'s
    gradient (2 * diff, exact in float64) must be that result rounded once, bit for bit."""
    rng = np.random.default_rng(case.size)
    dtype = numpy_dtype(case.dtype)
    pred = rng.standard_normal(case.size).astype(dtype)
    target = rng.standard_normal(case.size).astype(dtype)
    want_loss, want_grad = fl.mse_with_grad(pred.astype(np.float64), target.astype(np.float64),
                                            reduction=case.reduction, backend="numpy")
    device_pred = device_copy(cupy, pred, case.misaligned)
    device_target = device_copy(cupy, target, case.misaligned)
    out = device_pred if case.in_place else None
    loss, grad = fl.mse_with_grad(device_pred, device_target, reduction=case.reduction,
                                  backend="cuda", out=out)
    if case.reduction == "none":
        _check_exact(f"loss {case.id}", loss, want_loss, case.dtype)
    else:
        _check(f"loss {case.id}", loss, want_loss, case.dtype)
    if case.reduction == "mean":
        _check(f"grad {case.id}", grad, want_grad, case.dtype, ATOL[case.dtype])
    else:
        _check_exact(f"grad {case.id}", grad, want_grad, case.dtype)


def softmax_inputs(case: SoftmaxCase) -> tuple[np.ndarray, ...]:
    """The inputs of ``case`` in its dtype: logits; or a softmax (log-softmax) and a gradient.

    Extreme rows: huge logits and ties at the top, -inf entries, a row of only -inf
    (NaN), NaN and +inf entries (NaN rows); for the VJPs, a one-hot softmax, huge and
    NaN gradients, a NaN in the softmax, and a row of zero probabilities.
    """
    rng = np.random.default_rng(case.rows * 7919 + case.classes)
    shape, last = (case.rows, case.classes), case.classes - 1
    huge = 6e4 if case.dtype == "float16" else 1e30  # near the top of each range
    z = 3 * rng.standard_normal(shape)
    if case.function in ("softmax", "log_softmax"):
        if case.extreme:
            z[0, 0], z[1, last], z[2], z[3] = huge, -np.inf, -huge, -np.inf
            z[4, last // 2], z[5, -2:], z[6, 0] = np.nan, huge, np.inf
        return (z.astype(numpy_dtype(case.dtype)),)
    logp = softmax_reference("log_softmax", z)
    grad = rng.standard_normal(shape)
    if case.extreme:
        logp[0], logp[0, 0] = -np.inf, 0.0
        grad[1, 0], grad[2, last // 2] = huge / 8, np.nan
        logp[3, last // 2], logp[4] = np.nan, -np.inf
    x = np.exp(logp) if case.function == "softmax_backward" else logp
    return x.astype(numpy_dtype(case.dtype)), grad.astype(numpy_dtype(case.dtype))


def softmax_reference(function: str, x, grad=None) -> np.ndarray:
    """The float64 NumPy formula of ``function`` (PyTorch's: a row of only -inf is NaN)."""
    x = np.asarray(x, np.float64)
    grad = None if grad is None else np.asarray(grad, np.float64)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        if function == "softmax_backward":
            return x * (grad - (x * grad).sum(axis=1, keepdims=True))
        if function == "log_softmax_backward":
            return grad - np.exp(x) * grad.sum(axis=1, keepdims=True)
        shifted = x - x.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        if function == "softmax":
            return exp / exp.sum(axis=1, keepdims=True)
        return shifted - np.log(exp.sum(axis=1, keepdims=True))


def _softmax_error_scale(function: str, x: np.ndarray, grad=None) -> np.ndarray:
    """Per row, the size of the terms that cancel in ``function``'s result (1 where
    nothing cancels: softmax is in [0, 1], log-softmax adds two non-positive terms)."""
    rows = x.shape[0]
    with np.errstate(invalid="ignore", over="ignore"):
        if function == "softmax_backward":
            dot = (x.astype(np.float64) * grad).sum(axis=1)
        elif function == "log_softmax_backward":
            dot = grad.astype(np.float64).sum(axis=1)
        else:
            return np.ones((rows, 1))
        biggest = np.abs(grad.astype(np.float64)).max(axis=1, initial=0.0)
    return np.maximum(1.0, biggest + np.abs(dot))[:, None]


def run_softmax(case: SoftmaxCase, cupy) -> None:
    """``case``'s function on the device against the float64 formula on the same
    (rounded) inputs: NaN exactly where the formula has NaN, else within the dtype's
    tolerance (an absolute part scaled by the terms that cancel); half results are
    the float64 result rounded once in at least SOFTMAX_HALF_EXACT of places."""
    from fastloss.backends.cuda import softmax as cuda_softmax

    inputs = softmax_inputs(case)
    want = softmax_reference(case.function, *inputs)
    device_inputs = [device_copy(cupy, x, case.misaligned) for x in inputs]
    out = device_inputs[-1] if case.in_place else cupy.empty(inputs[0].shape, inputs[0].dtype)
    getattr(cuda_softmax, case.function)(*device_inputs, out)
    got, rounded = _as_float64(out), round_once(want, case.dtype)
    assert got.shape == want.shape and fl_host(out).dtype == inputs[0].dtype
    nan = np.isnan(rounded)
    assert (np.isnan(got) == nan).all(), f"{case.id}: NaN where the formula has none, or not"
    atol = 4 * ATOL[case.dtype] * _softmax_error_scale(case.function, *inputs)
    with np.errstate(invalid="ignore"):
        bound = RTOL[case.dtype] * np.abs(rounded) + atol
        off = ~((got == rounded) | (np.abs(got - rounded) <= bound) | nan)
    assert not off.any(), (
        f"{case.id}: {int(off.sum())} values off, e.g. {got[off][:3]} for {rounded[off][:3]}")
    if case.dtype in HALF_EXACT and got.size:
        exact = np.mean((got == rounded) | nan)
        assert exact >= SOFTMAX_HALF_EXACT, (
            f"{case.id}: only {exact:.4%} of the result is the float64 result rounded once")


def race_cases() -> tuple[list[CrossEntropyCase], list[MseCase], list[ElementwiseCase],
                          list[SoftmaxCase], list[NllCase], list[EntropyCase],
                          list[MarginCase]]:
    """The cases ThreadSanitizer runs (it is slow): every block reduction, in-place results."""
    cross_entropy = [
        CrossEntropyCase(2, k, dtype, targets, "mean", True, 0.1, in_place=True)
        for k in (31, 513, 4097) for dtype in ("float32", "float64")
        for targets in ("labels", "probabilities")
    ]
    elementwise = [ElementwiseCase(loss, 4099, "float32", in_place=True,
                                   weighted=bool(ELEMENTWISE[loss][2])) for loss in ELEMENTWISE]
    softmax = [SoftmaxCase(f, 2, k, in_place=True) for f in SOFTMAX_FUNCTIONS
               for k in (31, 513, 4097)]
    # Shuffle and shared-memory hand-overs of the label, in place over the read.
    nll = [NllCase(5, k, dtype, weighted=True, in_place=True) for k in (10, 1000, 5000)
           for dtype in ("float16", "float64")]
    nll += [NllCase(300, 10, grad=False), NllCase(300, 10)]  # several blocks of row groups
    # Group and block reductions, in place over the read (streamed past 4096), and the
    # block partials of several blocks of row groups.
    entropy = [EntropyCase(3, k, dtype, in_place=True) for k in (10, 1000, 5000)
               for dtype in ("float16", "float64")]
    entropy += [EntropyCase(300, 10)]
    # The label hand-over and the group and block reductions, in place over the read
    # (streamed past 4096), and the block partials of several blocks of row groups.
    margin = [MarginCase(3, k, dtype, 2, weighted=True, in_place=True) for k in (10, 1000, 5000)
              for dtype in ("float16", "float64")]
    margin += [MarginCase(300, 10, invalid=True)]
    return cross_entropy, [MseCase(4099, "float32", "mean", in_place=True),
                           MseCase(33, "float16", "none", in_place=True)], elementwise, softmax, \
        nll, entropy, margin


def main() -> int:
    """Runs the small matrix on the emulator build named by FASTLOSS_EMULATOR_VARIANT
    (under ThreadSanitizer, :func:`race_cases`)."""
    from cuda_emulator import emulator

    if emulator.variant() == "tsan":
        cross_entropy, mse, elementwise, softmax, nll, entropy, margin = race_cases()
    else:
        cross_entropy, mse = cross_entropy_cases(small=True), mse_cases(small=True)
        elementwise, softmax = elementwise_cases(small=True), softmax_cases(small=True)
        nll, entropy = nll_cases(small=True), entropy_cases(small=True)
        margin = margin_cases(small=True)
    failures = 0
    with emulator.activate() as cupy:
        for case in cross_entropy:
            failures += _report(run_cross_entropy, case, cupy)
        for case in mse:
            failures += _report(run_mse, case, cupy)
        for case in elementwise:
            failures += _report(run_elementwise, case, cupy)
        for case in softmax:
            failures += _report(run_softmax, case, cupy)
        for case in nll:
            failures += _report(run_nll, case, cupy)
        for case in entropy:
            failures += _report(run_entropy, case, cupy)
        for case in margin:
            failures += _report(run_margin, case, cupy)
        failures += _report(lambda _, cupy: _labels_checked(cupy), "check_labels", cupy)
    print(f"{failures} failed", flush=True)
    return 1 if failures else 0


def _labels_checked(cupy) -> None:
    logits = cupy.asarray(np.zeros((3, 4), np.float32))
    labels = cupy.asarray(np.array([0, 4, 1]))
    try:
        fl.softmax_cross_entropy(logits, labels, backend="cuda", check_labels=True)
    except ValueError:
        return
    raise AssertionError("check_labels=True accepted a label of 4 with 4 classes")


def _report(function, case, cupy) -> int:
    try:
        function(case, cupy)
    except AssertionError as exc:
        print(f"FAILED {getattr(case, 'id', case)}: {exc}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
