"""Calls every CUDA kernel entry over awkward shapes, for NVIDIA's compute-sanitizer on a GPU.

    compute-sanitizer --tool memcheck python tests/gpu_sanitize.py
    compute-sanitizer --tool racecheck python tests/gpu_sanitize.py small

Every loss and softmax function of ``fastloss.bench``'s specs, in float16, float32 and
float64, each of its ops (loss, gradient, both; "mean", "sum" and "none"; ``out=`` given),
over shapes that cross the launch modes (one lane a row up to 16 classes, row groups up to
512, a block a row, streamed rows, more rows than a one-block label divisor takes);
cross-entropy also with probability targets, and with class weights, an ignored class and
label smoothing. On a GPU the arrays are plain ``cudaMalloc`` allocations, not CuPy's pool,
so that memcheck knows each one's bounds. ``small`` runs fewer shapes (racecheck is slow).
Prints one line per call that raised and a count; exits 1 if any did.
"""

import sys

import numpy as np

import fastloss
from fastloss.bench import peers

SHAPES = [(1, 1), (3, 7), (129, 2), (65, 10), (33, 100), (9, 300), (5, 1000), (2, 5000),
          (1, 40000), (70, 1024), (4097, 3), (9000, 2)]
SMALL_SHAPES = [(1, 1), (3, 7), (65, 10), (9, 300), (5, 1000), (1, 9000), (4097, 3)]
DTYPES = (np.float16, np.float32, np.float64)


def calls(cupy, loss: str, first, second):
    """``(label, function, arrays, keywords)`` of each op of ``loss`` (arrays of ``cupy``)."""
    spec = peers.spec(loss)
    arrays = (first,) if second is None else (first, second)
    if spec.ops == ("call",):
        yield "", getattr(fastloss, loss), arrays, {}
        out = cupy.empty(first.shape, first.dtype)
        yield " out=", getattr(fastloss, loss), arrays, {"out": out}
        return
    for suffix in ("", "_grad", "_with_grad"):
        for reduction in ("mean", "sum", "none"):
            options = dict(spec.options, reduction=reduction)
            if suffix:
                options["out"] = cupy.empty(first.shape, first.dtype)
            yield f"{suffix} {reduction}", getattr(fastloss, loss + suffix), arrays, options
    if loss == "softmax_cross_entropy":
        rows, classes = first.shape
        host = np.random.default_rng(rows).random((rows, classes))
        probabilities = cupy.asarray((host / host.sum(axis=1, keepdims=True)).astype(first.dtype))
        weight = cupy.asarray(np.linspace(0.5, 2.0, classes))
        function = fastloss.softmax_cross_entropy_with_grad
        for reduction in ("mean", "none"):
            out = cupy.empty(first.shape, first.dtype)
            yield (f" probabilities {reduction}", function, (first, probabilities),
                   {"reduction": reduction, "out": out, "weight": weight})
            yield (f" weighted ignore_index=0 smoothing {reduction}", function, arrays,
                   {"reduction": reduction, "out": out, "weight": weight, "ignore_index": 0,
                    "label_smoothing": 0.1})


def main(shapes, plain_allocations: bool = True) -> int:
    import cupy  # here, not at the top: the tests' host emulator swaps the module in

    if plain_allocations:
        cupy.cuda.set_allocator(None)
    failures = count = 0
    for loss in peers.own_losses():
        for shape in shapes:
            inputs = peers.make_inputs(loss, shape, "cpu")
            for dtype in DTYPES:
                first = cupy.asarray(inputs.first.astype(dtype))
                second = inputs.second
                if second is not None:
                    second = cupy.asarray(second.astype(dtype) if second.dtype.kind == "f"
                                          else second)
                for label, function, arrays, options in calls(cupy, loss, first, second):
                    count += 1
                    try:
                        function(*arrays, backend="cuda", **options)
                        cupy.cuda.Device().synchronize()
                    except Exception as exc:  # noqa: BLE001 - report every call that fails
                        failures += 1
                        print(f"FAIL {loss}{label} {shape} {np.dtype(dtype).name}: "
                              f"{type(exc).__name__}: {exc}"[:300])
    print(f"{count} calls, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(SMALL_SHAPES if sys.argv[1:] == ["small"] else SHAPES))
