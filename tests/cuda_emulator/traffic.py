"""Global-memory traffic of each CUDA kernel, counted on the emulator, and an H100 roofline model.

    cd tests && python -m cuda_emulator.traffic      # prints the Markdown table of bench/RESULTS.md

Counts come from emulated launches at a small shape of each case, per element
of the main input; the prediction scales them to the benchmark shape and
divides by the H100 SXM's 3.35 TB/s of HBM3 bandwidth. It is a model: no
GPU ran it, and real kernels also pay launch latency, tail effects and cache
misses that it leaves out.
"""

from __future__ import annotations

import numpy as np

import fastloss as fl
from fastloss.backends.cuda import multi_margin as cuda_margin
from fastloss.backends.cuda import nll as cuda_nll
from fastloss.backends.cuda import softmax as cuda_softmax
from fastloss.backends.cuda import softmax_entropy as cuda_entropy

from . import emulator

H100_BYTES_PER_SECOND = 3.35e12

# (title, function, counted shape, modelled shape)
CASES = [
    ("mse_with_grad", "mse", (64, 1024), (32768, 1024)),
    ("mse", "mse-forward", (64, 1024), (32768, 1024)),
    ("softmax_cross_entropy_with_grad, labels, k = 10", "ce", (2048, 10), (262144, 10)),
    ("softmax_cross_entropy_with_grad, labels, k = 1000", "ce", (64, 1000), (16384, 1000)),
    ("softmax_cross_entropy_with_grad, labels, k = 4096", "ce", (16, 4096), (4096, 4096)),
    ("softmax_cross_entropy_with_grad, labels, k = 32000", "ce", (4, 32000), (4096, 32000)),
    ("softmax_cross_entropy_with_grad, probabilities, k = 1000", "ce-probs", (64, 1000),
     (16384, 1000)),
    ("softmax, k = 1000", "softmax", (64, 1000), (16384, 1000)),
    ("softmax, k = 32000", "softmax", (4, 32000), (4096, 32000)),
    ("log_softmax, k = 1000", "log_softmax", (64, 1000), (16384, 1000)),
    ("softmax_backward, k = 1000", "softmax_backward", (64, 1000), (16384, 1000)),
    ("log_softmax_backward, k = 1000", "log_softmax_backward", (64, 1000), (16384, 1000)),
    ("log_softmax_backward, k = 32000", "log_softmax_backward", (4, 32000), (4096, 32000)),
    ("nll (launcher, with gradient), k = 10", "nll", (2048, 10), (262144, 10)),
    ("nll (launcher, with gradient), k = 1000", "nll", (64, 1000), (16384, 1000)),
    ("nll (launcher, with gradient), k = 32000", "nll", (4, 32000), (4096, 32000)),
    ("softmax_entropy (launcher, with gradient), k = 10", "entropy", (2048, 10), (262144, 10)),
    ("softmax_entropy (launcher, with gradient), k = 1000", "entropy", (64, 1000),
     (16384, 1000)),
    ("softmax_entropy (launcher, with gradient), k = 4096", "entropy", (16, 4096), (4096, 4096)),
    ("softmax_entropy (launcher, with gradient), k = 32000", "entropy", (4, 32000),
     (4096, 32000)),
    ("softmax_entropy (launcher, no gradient), k = 32000", "entropy-forward", (4, 32000),
     (4096, 32000)),
    ("multi_margin (launcher, p = 1, with gradient), k = 10", "margin", (2048, 10),
     (262144, 10)),
    ("multi_margin (launcher, p = 1, with gradient), k = 1000", "margin", (64, 1000),
     (16384, 1000)),
    ("multi_margin (launcher, p = 1, with gradient), k = 4096", "margin", (16, 4096),
     (4096, 4096)),
    ("multi_margin (launcher, p = 1, with gradient), k = 32000", "margin", (4, 32000),
     (4096, 32000)),
    ("multi_margin (launcher, p = 1, no gradient), k = 32000", "margin-forward", (4, 32000),
     (4096, 32000)),
]


def _run(kind: str, shape: tuple[int, int], cupy) -> list[emulator.Launch]:
    rng = np.random.default_rng(0)
    x = cupy.asarray(rng.standard_normal(shape).astype(np.float32))
    with emulator.recording(count_traffic=True) as record:
        if kind == "mse":
            fl.mse_with_grad(x, cupy.zeros(shape, np.float32), backend="cuda")
        elif kind == "mse-forward":
            fl.mse(x, cupy.zeros(shape, np.float32), backend="cuda")
        elif kind in ("softmax", "log_softmax"):
            getattr(cuda_softmax, kind)(x, cupy.empty(shape, np.float32))
        elif kind in ("softmax_backward", "log_softmax_backward"):
            getattr(cuda_softmax, kind)(x, x, cupy.empty(shape, np.float32))
        elif kind == "nll":
            labels = cupy.asarray(rng.integers(0, shape[1], shape[0]))
            cuda_nll.nll(x, labels, None, cupy.empty(shape, np.float32), None, -100, shape[0])
        elif kind == "entropy":
            cuda_entropy.softmax_entropy(x, cupy.empty(shape, np.float32), None, shape[0])
        elif kind == "entropy-forward":
            cuda_entropy.softmax_entropy(x, None, None, shape[0])
        elif kind in ("margin", "margin-forward"):
            labels = cupy.asarray(rng.integers(0, shape[1], shape[0]))
            grad = cupy.empty(shape, np.float32) if kind == "margin" else None
            cuda_margin.multi_margin(x, labels, None, grad, None, 1, 1.0, shape[0])
        elif kind == "ce":
            labels = cupy.asarray(rng.integers(0, shape[1], shape[0]))
            fl.softmax_cross_entropy_with_grad(x, labels, backend="cuda")
        else:
            probs = rng.random(shape)
            probs = cupy.asarray((probs / probs.sum(1, keepdims=True)).astype(np.float32))
            fl.softmax_cross_entropy_with_grad(x, probs, backend="cuda")
    return record.launches


def rows() -> list[dict]:
    table = []
    with emulator.activate() as cupy:
        for title, kind, shape, modelled in CASES:
            launches = _run(kind, shape, cupy)
            elements = shape[0] * shape[1]
            instruction = sum(sum(lt.loaded.values()) + sum(lt.stored.values()) for lt in launches)
            sectors = sum(sum(lt.read.values()) + sum(lt.written.values()) for lt in launches)
            per_element = sectors / elements
            modelled_bytes = per_element * modelled[0] * modelled[1]
            table.append(dict(
                title=title, launches=len(launches), shape=shape, modelled=modelled,
                instruction_bytes=instruction / elements, sector_bytes=per_element,
                h100_us=modelled_bytes / H100_BYTES_PER_SECOND * 1e6,
            ))
    return table


def markdown(table: list[dict]) -> str:
    lines = [
        "| kernel (float32) | launches | bytes / element, instructions | bytes / element, "
        "32-byte sectors | modelled shape | H100 model, µs |",
        "|---|---|---|---|---|---|",
    ]
    for row in table:
        modelled = "×".join(map(str, row["modelled"]))
        lines.append(
            f"| `{row['title']}` | {row['launches']} | {row['instruction_bytes']:.2f} | "
            f"{row['sector_bytes']:.2f} | {modelled} | {row['h100_us']:.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(rows()))
