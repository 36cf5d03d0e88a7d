"""What the benchmarks run: fastloss's backends, the peers it is measured against, the memory floor.

Every contender is an ``Impl``: ``prepare(inputs)`` does the untimed set-up (tensor views, one-hot
targets, output buffers) and returns a thunk that computes one op and, on a GPU, waits for it.
An op of a loss is ``"forward"`` (the loss), ``"gradient"`` (d loss / d input) or ``"fused"``
(both). Every loss is the mean over elements or rows, PyTorch's default, so that the losses of all
contenders can be checked against one float64 reference. The softmax functions (``softmax``,
``log_softmax`` and their ``_backward`` VJPs) are benchmarked as losses are, under their own
names, with one op, ``"call"``: the function of arrays, its output into ``out=``.

This module knows no loss by name: each ``fastloss.bench.specs.<loss>`` declares a :class:`Spec`
(inputs, bytes moved, float64 reference, the NumPy expression, PyTorch's call, its own peers), and
a loss without one is an error. The peers every loss has:

- ``numpy-expr`` / ``cupy-expr``: the expression a user writes (from the spec).
- ``torch``: ``torch.nn.functional`` forward and autograd backward, on the CPU or the GPU; for
  a softmax function PyTorch's kernel of it (``torch.softmax``, ``aten._softmax_backward_data``).
- ``floor``: ``np.copyto`` (on a GPU ``cp.copyto``) of a float32 array of half the bytes the op
  must move, i.e. reading and writing exactly those bytes once. On the CPU that copy runs on one
  thread, as NumPy does: a kernel on every core can be faster.

Specs add their own (``Spec.peers``): the seeds' crysx_nn-style functions for MSE and
cross-entropy, Liger-Kernel's Triton cross-entropy on a GPU, and the arithmetic bounds of the
losses with an exponential or a log per element (``fastloss.bench.bounds``: ``exp-only``,
``log-only``), whose answers are not the loss's.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

OPS = ("forward", "gradient", "fused", "call")
LOSS_OPS = OPS[:3]
DEVICES = ("cpu", "cuda")
DTYPE = np.float32
# The arithmetic bounds' names (fastloss.bench.bounds): chosen with --peers as peers are.
BOUND_NAMES = ("exp-only", "log-only")
PEER_NAMES = ("numpy-expr", "cupy-expr", "crysx-fastmath", "crysx-prange", "crysx", "crysx-cupy",
              "torch", "fastloss-torch", "liger", *BOUND_NAMES)
# Contenders whose answer is not the op's, so that nothing checks it as one.
UNCHECKED = ("floor", "bound")
DEFAULT_CLASSES = 32000
ELEMENTWISE_COLUMNS = 1024
# The element count of a loss's row-width sweep (Spec.sweep).
SWEEP_ELEMENTS = 2_621_440


# ---------------------------------------------------------------------------------------------
# A loss's bench spec: each fastloss/bench/specs/<loss>.py defines SPEC


@dataclass(frozen=True)
class Peer:
    """A peer of one loss: ``prepare(op)`` gives the ``Impl.prepare`` of that op, or None
    where the peer has no such op; ``devices`` where it runs; ``needs`` modules it imports
    besides NumPy and Numba; ``bound``: it computes only the op's arithmetic, not its answer
    (``fastloss.bench.bounds``)."""

    name: str
    prepare: Callable[[str], Callable | None]
    devices: tuple[str, ...] = DEVICES
    needs: tuple[str, ...] = ()
    bound: bool = False


@dataclass(frozen=True)
class Spec:
    """What the benchmarks need to know about one loss.

    ``make(xp, rng, shape)``: the (first, second) inputs in DTYPE (second may be labels, or
    None for a loss of one array, such as the softmax entropy).
    ``bytes(op, shape, itemsize)``: what the op must move. ``reference(xp, first, second)``:
    the summed loss of a block of rows, ``first`` made float64 (of a function: its output for
    the block, in float64). ``count(shape)``: what a mean divides by (None for a function).
    ``expression[op](xp, first, second)``: the NumPy/CuPy expression a user writes.
    ``torch(F, first, second)``: PyTorch's loss of tensors (of a function: its output).
    ``width``: a row's length for sizes given as element counts (None: the --classes option).
    ``options``: fastloss keywords. ``sweep``: row widths to run at SWEEP_ELEMENTS elements.
    ``ops``: the ops it has (LOSS_OPS, or ``("call",)`` for a function).
    ``variant_of``: the loss whose fastloss functions a variant times with other inputs or
    options (label smoothing, probability targets); None for a loss's own spec. A variant
    runs only where ``--losses`` names it.
    ``torch_drop_in``: ``fastloss.torch`` has what ``torch`` calls, under PyTorch's names:
    the ``fastloss-torch`` peer runs ``torch(fastloss.torch, first, second)``, what a
    PyTorch user gets from the drop-in (its checks, its hand-over of tensors, autograd).
    """

    loss: str
    make: Callable
    bytes: Callable[[str, tuple[int, int], int], int]
    reference: Callable
    count: Callable[[tuple[int, int]], int] | None
    expression: dict[str, Callable]
    torch: Callable
    sizes: tuple[str, ...]
    quick_sizes: tuple[str, ...]
    width: int | None = ELEMENTWISE_COLUMNS
    peers: tuple[Peer, ...] = ()
    # Row widths swept at a fixed number of elements, for losses whose cost per
    # element depends on the width (short rows leave vector lanes idle and pay
    # a row's set-up more often).
    sweep: tuple[int, ...] = ()
    options: dict = field(default_factory=dict)
    ops: tuple[str, ...] = LOSS_OPS
    variant_of: str | None = None
    torch_drop_in: bool = False


@functools.cache
def specs() -> dict[str, Spec]:
    """Every loss with a module ``fastloss.bench.specs.<loss>``, by name, in name order."""
    from fastloss.bench import specs as package

    found = {}
    for name in sorted(module.name for module in pkgutil.iter_modules(package.__path__)):
        spec = importlib.import_module(f"{package.__name__}.{name}").SPEC
        if spec.loss != name:
            raise ValueError(f"{package.__name__}.{name} declares the spec of {spec.loss!r}")
        found[spec.loss] = spec
    return found


def own_losses() -> list[str]:
    """The specs' losses and softmax functions that are not variants (``Spec.variant_of``): the
    report's default rows."""
    return [loss for loss, found in specs().items() if found.variant_of is None]


def spec(loss: str) -> Spec:
    """The spec of ``loss``; an unknown loss is a ValueError, never another loss's inputs."""
    try:
        return specs()[loss]
    except KeyError:
        raise ValueError(
            f"no bench spec for loss {loss!r}: add fastloss/bench/specs/{loss}.py with SPEC; "
            f"known: {', '.join(specs())}"
        ) from None


def elementwise_bytes(op: str, shape: tuple[int, int], itemsize: int = 4) -> int:
    """An elementwise loss reads input and target once and writes the gradient once."""
    block = shape[0] * shape[1] * itemsize
    return 2 * block if op == "forward" else 3 * block


def elementwise_spec(loss: str, make, per_element, gradient, torch, **extra) -> Spec:
    """The spec of an elementwise loss from its float64 ``per_element(xp, x, t)`` loss (the
    reference, and the NumPy expression's loss as ``mean``) and the expression's
    ``gradient(xp, x, t)`` of the mean."""

    def forward(xp, first, second):
        return xp.mean(per_element(xp, first, second))

    def fused(xp, first, second):
        return forward(xp, first, second), gradient(xp, first, second)

    return Spec(
        loss=loss, make=make, bytes=elementwise_bytes,
        reference=lambda xp, first, second: float(per_element(xp, first, second).sum()),
        count=lambda shape: shape[0] * shape[1],
        expression={"forward": forward, "gradient": gradient, "fused": fused},
        torch=torch,
        sizes=("16x1024", "128x1024", "1024x1024", "8192x1024", "32768x1024"),
        quick_sizes=("8192x1024",), **extra,
    )


def function_spec(name: str, make, arrays: int, call, torch) -> Spec:
    """The spec of a softmax function ``fastloss.<name>``: op ``"call"`` only, moving ``arrays``
    arrays of the input's shape once each (inputs read, output written), ``call(xp, first,
    second)`` both the NumPy/CuPy expression and, on float64 input, the reference; ``torch(F,
    first, second)`` PyTorch's kernel."""
    return Spec(
        loss=name, make=make,
        bytes=lambda op, shape, itemsize=4: arrays * shape[0] * shape[1] * itemsize,
        reference=call, count=None, expression={"call": call}, torch=torch,
        sizes=("256x32000", "1024x32000"), quick_sizes=("1024x32000",), width=None,
        ops=("call",),
    )


def normal_pair(xp, rng, shape):
    return (rng.standard_normal(shape, dtype=DTYPE), rng.standard_normal(shape, dtype=DTYPE))


# ---------------------------------------------------------------------------------------------
# Inputs, sizes and the bytes an op must move


@dataclass
class Inputs:
    """``first``: predictions or logits, ``second``: targets or int64 labels, ``xp``: numpy/cupy."""

    loss: str
    device: str
    shape: tuple[int, int]
    xp: Any
    first: Any
    second: Any


def array_module(device: str):
    if device == "cuda":
        import cupy

        return cupy
    return np


def make_inputs(loss: str, shape: tuple[int, int], device: str, seed: int = 0) -> Inputs:
    xp = array_module(device)
    first, second = spec(loss).make(xp, xp.random.default_rng(seed), shape)
    return Inputs(loss, device, tuple(shape), xp, first, second)


def shape_for(loss: str, size: str | int, classes: int = DEFAULT_CLASSES) -> tuple[int, int]:
    """``"ROWSxCOLS"`` as given; an element count as ``(rows, cols)`` with cols a row's width.

    A row's width is the loss's spec's (1024 for the elementwise losses, the seeds' ``(N, k)``
    layout) or ``classes`` (cross-entropy); a count is rounded up to whole rows (as the row-width
    sweep's, so that ``--against`` gets the sweep's shapes), and one below a row's width is a
    single shorter row.
    """
    text = str(size).lower().replace("_", "")
    width = spec(loss).width or classes
    try:
        if "x" in text:
            rows, cols = (int(part) for part in text.split("x"))
        else:
            elements = int(float(text))
            cols = min(width, elements)
            rows = -(-elements // cols) if cols > 0 else 0
    except (ValueError, OverflowError):
        raise ValueError(f"size {size!r} is neither ROWSxCOLS nor an element count") from None
    if rows < 1 or cols < 1:
        raise ValueError(f"size {size!r} gives an empty {loss} input")
    return rows, cols


def sweep_shapes(widths: tuple[int, ...],
                 elements: int = SWEEP_ELEMENTS) -> list[tuple[int, int]]:
    """``(rows, k)`` for each row width k, with at least ``elements`` elements."""
    return [(-(-elements // width), width) for width in widths]


def shape_label(shape: tuple[int, int]) -> str:
    return f"{shape[0]}x{shape[1]}"


def op_bytes(loss: str, op: str, shape: tuple[int, int], itemsize: int = 4) -> int:
    """The bytes an op cannot avoid moving: each input read once, the gradient written once."""
    return spec(loss).bytes(op, shape, itemsize)


def sync(device: str) -> None:
    if device == "cuda":
        import cupy

        cupy.cuda.runtime.deviceSynchronize()


def synced(thunk: Callable[[], Any], device: str) -> Callable[[], Any]:
    if device == "cpu":
        return thunk

    def run():
        result = thunk()
        sync(device)
        return result

    return run


def loss_value(result, op: str) -> float | None:
    """The loss of an op's result as a Python float (``None`` for a gradient-only op)."""
    if op == "gradient":
        return None
    loss = result[0] if op == "fused" else result
    return float(loss)


# ---------------------------------------------------------------------------------------------
# The catalogue


@dataclass(frozen=True)
class Impl:
    """One contender for one (loss, op, device); ``missing`` says why it cannot run here. A
    floor's or a bound's answer is not the op's, and is not checked (``UNCHECKED``)."""

    name: str
    kind: str  # "fastloss", "peer", "floor" or "bound" (a peer computing the op's arithmetic)
    loss: str
    op: str
    device: str
    prepare: Callable[[Inputs], Callable[[], Any]]
    missing: str | None = None
    backend: str | None = None


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


# fastloss's extra that brings a module, where it has one.
EXTRAS = {"torch": "torch", "cupy": "cuda", "dask": "dask", "distributed": "distributed"}


def not_installed(module: str) -> str:
    """``"<module> not installed (pip install <what brings it>)"``: one line, how to add it."""
    package = f"'fastloss[{EXTRAS[module]}]'" if module in EXTRAS else module
    return f"{module} not installed (pip install {package})"


def missing_module(*modules: str) -> str | None:
    """``not_installed`` of the first of ``modules`` that is not installed, else None."""
    return next((not_installed(module) for module in modules if not installed(module)), None)


FASTLOSS_SUFFIXES = {"forward": "", "gradient": "_grad", "fused": "_with_grad", "call": ""}


def backend_status() -> dict[str, tuple[bool, str]]:
    """``{backend: (available, reason)}`` for fastloss's concrete backends."""
    from fastloss import _registry

    return {name: tuple(_registry.backend_status(name)) for name in _registry.BACKENDS}


def torch_missing(device: str) -> str | None:
    if not installed("torch"):
        return not_installed("torch")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            return "torch has no CUDA device"
    return None


def backend_device(backend: str) -> str:
    return "cuda" if backend == "cuda" else "cpu"


def cuda_missing() -> str | None:
    """``None`` when GPU cases can run: fastloss's cuda backend is available."""
    ok, reason = backend_status().get("cuda", (False, "fastloss has no cuda backend"))
    return None if ok else f"no CUDA device: {reason}"


def _fastloss(backend: str, loss: str, op: str):
    def prepare(inputs: Inputs):
        import fastloss

        the_spec = spec(loss)
        function = getattr(fastloss, (the_spec.variant_of or loss) + FASTLOSS_SUFFIXES[op])
        arrays = (inputs.first,) if inputs.second is None else (inputs.first, inputs.second)
        options = the_spec.options
        if op == "forward":
            return synced(lambda: function(*arrays, backend=backend, **options), inputs.device)
        out = inputs.xp.empty_like(inputs.first)
        return synced(
            lambda: function(*arrays, backend=backend, out=out, **options), inputs.device,
        )

    return prepare


def _expression(loss: str, op: str):
    formula = spec(loss).expression[op]

    def prepare(inputs: Inputs):
        xp, first, second = inputs.xp, inputs.first, inputs.second
        return synced(lambda: formula(xp, first, second), inputs.device)

    return prepare


def _torch(loss: str, op: str, functional: str = "torch.nn.functional"):
    """PyTorch's loss through the module ``functional`` (torch.nn.functional, or the drop-in
    fastloss.torch), its backward pass for the gradient."""
    def prepare(inputs: Inputs):
        import torch

        F = importlib.import_module(functional)
        formula = spec(loss).torch
        first = torch.as_tensor(inputs.first)
        second = None if inputs.second is None else torch.as_tensor(inputs.second)
        if op in ("forward", "call"):
            return synced(lambda: formula(F, first, second), inputs.device)
        leaf = first.detach().requires_grad_()

        def backward():
            # A training step's zero_grad(set_to_none=True): each step allocates a fresh gradient.
            leaf.grad = None
            value = formula(F, leaf, second)
            value.backward()
            return leaf.grad if op == "gradient" else (value.detach(), leaf.grad)

        return synced(backward, inputs.device)

    return prepare


def floor_elements(loss: str, op: str, shape: tuple[int, int]) -> int:
    """Elements of the float32 array whose copy moves exactly the op's bytes (read + write)."""
    return max(1, op_bytes(loss, op, shape) // (2 * np.dtype(DTYPE).itemsize))


def _floor(loss: str, op: str):
    def prepare(inputs: Inputs):
        xp = inputs.xp
        count = floor_elements(loss, op, inputs.shape)
        source = xp.ones(count, dtype=DTYPE)
        destination = xp.zeros(count, dtype=DTYPE)
        return synced(lambda: xp.copyto(destination, source), inputs.device)

    return prepare


def implementations(loss: str, op: str, device: str) -> list[Impl]:
    """Every contender for (loss, op, device), the unavailable ones with their reason; an op
    the loss's spec has not is a ValueError."""
    ops = spec(loss).ops
    if op not in ops:
        raise ValueError(f"{loss} has no op {op!r}; its ops: {', '.join(ops)}")
    impls = []
    for backend, (ok, reason) in backend_status().items():
        if backend_device(backend) == device:
            missing = None if ok else (f"no CUDA device: {reason}" if device == "cuda" else reason)
            impls.append(
                Impl(f"fastloss[{backend}]", "fastloss", loss, op, device,
                     _fastloss(backend, loss, op), missing, backend)
            )
    gpu_missing = cuda_missing() if device == "cuda" else None
    no_torch = None if gpu_missing else torch_missing(device)  # spares importing torch for nothing

    def peer(name, prepare, missing=None, kind="peer"):
        impls.append(Impl(name, kind, loss, op, device, prepare, gpu_missing or missing))

    peer("cupy-expr" if device == "cuda" else "numpy-expr", _expression(loss, op))
    for extra in spec(loss).peers:
        prepare = extra.prepare(op) if device in extra.devices else None
        if prepare is not None:
            others = missing_module(*(module for module in extra.needs if module != "torch"))
            peer(extra.name, prepare, (no_torch if "torch" in extra.needs else None) or others,
                 "bound" if extra.bound else "peer")
    peer("torch", _torch(loss, op), no_torch)
    if spec(loss).torch_drop_in:
        peer("fastloss-torch", _torch(loss, op, "fastloss.torch"), no_torch)
    impls.append(Impl("floor", "floor", loss, op, device, _floor(loss, op), gpu_missing))
    return impls
