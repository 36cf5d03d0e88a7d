"""out= overlapping an input other than by being it (a shifted view of the input's buffer):
the result of a separate out, on every backend and through every front, as NumPy's ufuncs."""

import numpy as np
import pytest
from conftest import to_backend, to_host

import fastloss as fl
from fastloss import _backend

ROWS, CLASSES = 130, 7  # two passes of 64 rows in lanes, and a short third
_rng = np.random.default_rng(0)
LOGITS = _rng.standard_normal((ROWS, CLASSES)).astype(np.float32)
PROBS = fl.softmax(_rng.standard_normal((ROWS, CLASSES)).astype(np.float32), backend="numpy")
LABELS = _rng.integers(0, CLASSES, ROWS)

# name -> (call(inputs, labels, out, backend), float inputs); out overlaps each in turn.
CALLS = {
    "mse_grad": (lambda a, y, out, b: fl.mse_grad(*a, out=out, backend=b), (LOGITS, PROBS)),
    "binary_cross_entropy_grad": (
        lambda a, y, out, b: fl.binary_cross_entropy_grad(*a, out=out, backend=b),
        (PROBS, PROBS[::-1].copy()),
    ),
    "kl_div_grad": (lambda a, y, out, b: fl.kl_div_grad(*a, out=out, backend=b),
                    (LOGITS, PROBS)),
    "softmax_cross_entropy_grad labels": (
        lambda a, y, out, b: fl.softmax_cross_entropy_grad(*a, y, out=out, backend=b),
        (LOGITS,),
    ),
    "softmax_cross_entropy_grad probabilities": (
        lambda a, y, out, b: fl.softmax_cross_entropy_grad(*a, out=out, backend=b),
        (LOGITS, PROBS),
    ),
    "nll_grad": (lambda a, y, out, b: fl.nll_grad(*a, y, out=out, backend=b), (LOGITS,)),
    "multi_margin_grad": (lambda a, y, out, b: fl.multi_margin_grad(*a, y, out=out, backend=b),
                          (LOGITS,)),
    "softmax_entropy_grad": (lambda a, y, out, b: fl.softmax_entropy_grad(*a, out=out, backend=b),
                             (LOGITS,)),
    "softmax": (lambda a, y, out, b: fl.softmax(*a, out=out, backend=b), (LOGITS,)),
    "log_softmax": (lambda a, y, out, b: fl.log_softmax(*a, out=out, backend=b), (LOGITS,)),
    "softmax_backward": (lambda a, y, out, b: fl.softmax_backward(*a, out=out, backend=b),
                         (PROBS, LOGITS)),
}
CASES = [(name, position) for name, (_, inputs) in CALLS.items() for position in
         range(len(inputs))]


@pytest.mark.parametrize("name", CALLS)
@pytest.mark.parametrize("strides", [(0, 0), (4, 4), (0, 4)],
                         ids=["one element", "rows shifted by one", "one row"])
@pytest.mark.parametrize("cpu_backend", ["numpy", "numba"])
def test_out_whose_elements_share_memory_is_refused(cpu_backend, name, strides):
    """An out= that overlaps itself would keep one of the values written to each shared
    element (PyTorch refuses it too); nothing is written before the error."""
    call, inputs = CALLS[name]
    buffer = np.zeros(ROWS * CLASSES, np.float32)
    out = np.lib.stride_tricks.as_strided(buffer, shape=(ROWS, CLASSES), strides=strides)
    with pytest.raises(ValueError, match="out must not overlap itself"):
        call(inputs, LABELS, out, cpu_backend)
    assert not buffer.any()


@pytest.mark.parametrize("cpu_backend", ["numpy", "numba"])
def test_out_of_interleaved_elements_apart_is_written(cpu_backend, monkeypatch):
    # Columns interleaved with rows (byte offsets 0, 12, 8, 20, 16, 28): no two elements
    # share memory, though no order of the axes shows it from the strides alone.
    buffer = np.zeros(8, np.float32)
    out = np.lib.stride_tricks.as_strided(buffer, shape=(3, 2), strides=(8, 12))
    x, target = np.arange(6, dtype=np.float32).reshape(3, 2), np.zeros((3, 2), np.float32)
    assert fl.mse_grad(x, target, out=out, backend=cpu_backend) is out
    np.testing.assert_array_equal(out, fl.mse_grad(x, target, backend=cpu_backend))
    # Past the elements decided exactly, such a view is refused unwritten.
    monkeypatch.setattr(_backend, "_EXACT_OVERLAP_ELEMENTS", 5)
    buffer[:] = 0
    with pytest.raises(ValueError, match="out must not overlap itself"):
        fl.mse_grad(x, target, out=out, backend=cpu_backend)
    assert not buffer.any()


@pytest.mark.parametrize("name, position", CASES, ids=[f"{n}-input{p}" for n, p in CASES])
def test_out_over_a_shifted_input_gives_the_separate_result(backend, name, position):
    call, inputs = CALLS[name]
    labels = to_backend(LABELS, backend)
    arrays = [to_backend(a, backend) for a in inputs]
    expected = to_host(call(arrays, labels, to_backend(np.empty_like(LOGITS), backend), backend))
    # The input's values in rows 0..ROWS-1 of a buffer, out in rows 1..ROWS of it.
    buffer = to_backend(np.concatenate([inputs[position], inputs[position][-1:]]), backend)
    arrays[position], out = buffer[:-1], buffer[1:]
    assert call(arrays, labels, out, backend) is out
    np.testing.assert_array_equal(to_host(out), expected)


@pytest.mark.parametrize("cpu_backend", ["numpy", "numba"])
def test_an_out_with_an_axis_of_one_is_not_an_overlap(cpu_backend):
    """An axis of one element repeats no memory, whatever its stride: an out= made with
    ``[:, None]`` (stride 0 there) is written, not refused as overlapping itself."""
    x = LOGITS[:, :1].copy()
    # reduction="none" takes the full path, which checks out= (the common path's own check
    # accepts only a C-contiguous out).
    for call in (lambda out: fl.mse_with_grad(x, PROBS[:, :1].copy(), reduction="none",
                                              out=out, backend=cpu_backend)[1],
                 lambda out: fl.nll_with_grad(x, np.zeros(ROWS, np.int64), reduction="none",
                                              out=out, backend=cpu_backend)[1]):
        expected = call(None)
        out = np.zeros(ROWS, np.float32)[:, None]
        assert out.strides == (4, 0)
        assert call(out) is out
        np.testing.assert_array_equal(out, expected)


def test_class_weights_in_out_memory_are_read_before_it_is_written(backend):
    """Weights that are a view of out= (its first row) are an input the kernel reads while it
    writes out: the gradient goes through a buffer, and equals that of a separate weight."""
    logits = LOGITS.astype(np.float64)
    weight = np.linspace(0.5, 2.0, CLASSES)
    labels = to_backend(LABELS, backend)
    expected = to_host(fl.softmax_cross_entropy_grad(
        to_backend(logits, backend), labels, weight=to_backend(weight, backend),
        backend=backend))
    out = to_backend(np.zeros_like(logits), backend)
    out[0] = to_backend(weight, backend)
    got = fl.softmax_cross_entropy_grad(to_backend(logits, backend), labels, weight=out[0],
                                        out=out, backend=backend)
    assert got is out
    np.testing.assert_array_equal(to_host(out), expected)
