"""Calls every CUDA kernel entry over awkward shapes on a GPU, for NVIDIA's compute-sanitizer.

    compute-sanitizer --tool memcheck python tests/gpu_sanitize.py
    compute-sanitizer --tool racecheck python tests/gpu_sanitize.py small

Every loss and softmax function of ``fastloss.bench``'s specs, float32 and float64, each
of its ops (loss, gradient, both; "mean", "sum" and "none"; ``out=`` given), over shapes
that cross the launch modes (one lane a row up to 16 classes, row groups up to 512, a block
a row, streamed rows). Arrays are plain ``cudaMalloc`` allocations, not CuPy's pool, so
that memcheck knows each one's bounds. ``small`` runs fewer shapes (racecheck is slow).
Prints one line per call that raised and a count; exits 1 if any did.
"""

import sys

import cupy
import numpy as np

import fastloss
from fastloss.bench import peers

SHAPES = [(1, 1), (3, 7), (129, 2), (65, 10), (33, 100), (9, 300), (5, 1000), (2, 5000),
          (1, 40000), (70, 1024)]
SMALL_SHAPES = [(1, 1), (3, 7), (65, 10), (9, 300), (5, 1000), (1, 9000)]


def calls(loss: str, first, second):
    """``(label, function, keywords)`` of each op of ``loss``."""
    spec = peers.spec(loss)
    if spec.ops == ("call",):
        yield "", getattr(fastloss, loss), {}
        yield " out=", getattr(fastloss, loss), {"out": cupy.empty_like(first)}
        return
    for suffix in ("", "_grad", "_with_grad"):
        for reduction in ("mean", "sum", "none"):
            options = dict(spec.options, reduction=reduction)
            if suffix:
                options["out"] = cupy.empty_like(first)
            yield f"{suffix} {reduction}", getattr(fastloss, loss + suffix), options


def main(shapes) -> int:
    cupy.cuda.set_allocator(None)
    failures = count = 0
    for loss in peers.specs():
        for shape in shapes:
            inputs = peers.make_inputs(loss, shape, "cpu")
            for dtype in (np.float32, np.float64):
                first = cupy.asarray(inputs.first.astype(dtype))
                second = inputs.second
                if second is not None:
                    second = cupy.asarray(second.astype(dtype) if second.dtype.kind == "f"
                                          else second)
                arrays = (first,) if second is None else (first, second)
                for label, function, options in calls(loss, first, second):
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
