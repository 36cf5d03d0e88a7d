"""PyTorch losses computed by fastloss's fused loss-and-gradient kernels.

``mse_loss``, ``l1_loss``, ``smooth_l1_loss``, ``huber_loss``,
``binary_cross_entropy_with_logits``, ``binary_cross_entropy``, ``kl_div``,
``nll_loss``, ``multi_margin_loss`` and ``cross_entropy`` take
``torch.nn.functional``'s arguments and give its results (2-D input, class
axis last for the losses over classes); ``MSELoss``, ``L1Loss``,
``SmoothL1Loss``, ``HuberLoss``, ``BCEWithLogitsLoss``, ``BCELoss``,
``KLDivLoss``, ``NLLLoss``, ``MultiMarginLoss`` and ``CrossEntropyLoss`` are
the matching modules. Options other than ``weight`` are keyword-only
(``huber_loss`` and ``multi_margin_loss`` take them positionally, as PyTorch
does, having no deprecated ones before them): PyTorch's deprecated
``size_average`` / ``reduce`` are not accepted, so no positional option can
land in their place.
The forward pass calls the fused kernel once and keeps the gradient it wrote;
the backward pass only scales that gradient by ``grad_output``, so forward +
backward read the input once (on the CPU, a backward pass that frees its graph
hands the gradient over itself, scaled in place unless ``grad_output`` is a
scalar 1: ``loss.backward()``, ``(loss / steps).backward()``, weighted sums of
``reduction="none"`` losses). When no gradient is needed
(``torch.no_grad()``, or no input requires grad) the forward pass computes
the loss alone.

- CPU tensors are handed to the NumPy-side backend (numba) without a copy.
  The gradient of a CPU loss is written into a NumPy array that a tensor
  views: NumPy asks Linux for huge pages for large arrays (PyTorch's
  allocator does not), whose first touch then costs a fraction. Such a
  ``.grad`` is an ordinary tensor, but for one thing: its storage cannot be
  resized (``resize_``).
  bfloat16 has no NumPy dtype: a bfloat16 CPU tensor is computed through a
  float32 copy and its gradient rounded to bfloat16.
- CUDA tensors are handed to the cuda backend through DLPack and computed on
  PyTorch's current stream, float16 and bfloat16 included (bfloat16 needs a
  CuPy that can import it, i.e. with ``ml_dtypes``; otherwise it too is
  computed through a float32 copy).
- Not supported, with an error rather than a wrong answer: cross-entropy
  input with more than 2 dims (move the class axis last and flatten), input
  and target of different shapes for the elementwise losses (PyTorch would
  broadcast), a gradient with respect to cross-entropy's probability target
  or to the target or weights of the BCE losses, double
  backward (``create_graph=True``), forward-mode AD (``torch.func.jvp``,
  dual tensors), the other ``torch.func`` transforms in eager mode (``vmap``,
  ``grad``, ``jacrev``, ``hessian`` of a fastloss loss), uint64 class labels
  (PyTorch takes int64 or uint8), and devices other than CPU and CUDA (meta
  tensors give the results' shapes only).

Each loss is a ``torch.library.custom_op`` (``fastloss::cross_entropy``,
``fastloss::mse_loss``, ...) with a fake implementation and an autograd
formula, so ``torch.compile`` (``fullgraph=True``, ``dynamic=True``) traces
it without a graph break. Under ``torch.autocast`` it computes in float32,
as PyTorch's own losses do (also binary cross-entropy of probabilities,
which PyTorch refuses under CUDA autocast). ``vocab_parallel_cross_entropy``
(collectives) is not a custom op.

This module imports torch; ``import fastloss`` alone never does.
"""

from __future__ import annotations

import functools

import numpy as np

try:
    import torch
    from torch.autograd import forward_ad
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError(
        "fastloss.torch needs PyTorch: pip install 'fastloss[torch]'"
    ) from exc

import fastloss
from fastloss import _registry, _validate
from fastloss.losses.huber import check_delta as _check_delta
from fastloss.losses.kl_div import REDUCTIONS as _KL_DIV_REDUCTIONS
from fastloss.losses.smooth_l1 import check_beta as _check_beta

# Vocabulary-parallel cross-entropy over torch.distributed lives in its own module.
from fastloss.torch_distributed import NOT_CLASS_INDICES as _NOT_CLASS_INDICES
from fastloss.torch_distributed import vocab_parallel_cross_entropy

__all__ = [
    "mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss", "binary_cross_entropy_with_logits",
    "binary_cross_entropy", "cross_entropy", "MSELoss", "L1Loss", "SmoothL1Loss", "HuberLoss",
    "BCEWithLogitsLoss", "BCELoss", "CrossEntropyLoss", "kl_div", "KLDivLoss", "nll_loss",
    "NLLLoss", "multi_margin_loss", "MultiMarginLoss", "vocab_parallel_cross_entropy",
]

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# The float dtypes NumPy holds, and their NumPy dtypes.
_NUMPY_DTYPES = {torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64}


# ---------------------------------------------------------------------------
# Tensor <-> array bridges


def _device_type(tensor: torch.Tensor) -> str:
    """``tensor.device.type``, without making a device object for a CPU or CUDA tensor
    (a microsecond or two of a small call, where it came up several times)."""
    return "cpu" if tensor.is_cpu else "cuda" if tensor.is_cuda else tensor.device.type


def _check_device(tensor: torch.Tensor, name: str, input: torch.Tensor) -> None:
    if not (tensor.is_cpu and input.is_cpu) and tensor.device != input.device:
        raise TypeError(
            f"{name} is on {tensor.device} but input is on {input.device}: "
            f"move it with {name}.to(input.device)"
        )


@functools.cache
def _cupy_holds_bfloat16() -> bool:
    """Whether CuPy can view a bfloat16 tensor (it needs ml_dtypes for the dtype). The
    probe launches no kernel (``empty``): the first call may come under graph capture."""
    import cupy

    try:
        cupy.from_dlpack(torch.empty(1, dtype=torch.bfloat16, device="cuda"))
    except (NotImplementedError, TypeError, ValueError, BufferError, RuntimeError):
        return False
    return True


class _Bridge:
    """Views of tensors as arrays of the backend that computes them, and back.

    One per call: on CUDA it enters the tensor's device and PyTorch's current
    stream, so that CuPy's kernels and the DLPack hand-overs are ordered with
    PyTorch's work without a synchronisation.
    """

    def __init__(self, input: torch.Tensor):
        self.device = input.device
        if self.device.type not in ("cpu", "cuda"):
            raise TypeError(
                f"fastloss.torch computes CPU and CUDA tensors; input is on {self.device}"
            )
        self.cuda = self.device.type == "cuda"
        if self.cuda:
            _registry.resolve("cuda")  # ValueError with the reason (no CuPy, no NVRTC, ...)
        self.dtype = input.dtype
        self.compute_dtype = self.dtype
        if self.dtype == torch.bfloat16 and not (self.cuda and _cupy_holds_bfloat16()):
            # No array library here holds bfloat16: compute from a float32 copy
            # and round the results once, as the kernels do for half inputs.
            self.compute_dtype = torch.float32
        self._contexts = ()

    def __enter__(self):
        if self.cuda:
            import cupy

            stream = torch.cuda.current_stream(self.device)
            from_external = getattr(cupy.cuda.Stream, "from_external", None)
            if from_external is not None:
                cupy_stream = from_external(stream)
            else:
                cupy_stream = cupy.cuda.ExternalStream(stream.cuda_stream, self.device.index)
            self._contexts = (cupy.cuda.Device(self.device.index), cupy_stream)
            for context in self._contexts:
                context.__enter__()
        return self

    def __exit__(self, *exc_info):
        for context in reversed(self._contexts):
            context.__exit__(*exc_info)
        self._contexts = ()

    def array(self, tensor: torch.Tensor | None):
        """A zero-copy NumPy (CPU) or CuPy (CUDA) view of ``tensor``'s data."""
        if tensor is None:
            return None
        if tensor.dtype == self.dtype and self.compute_dtype != self.dtype:
            tensor = tensor.detach().to(self.compute_dtype)
        if self.cuda:
            import cupy

            return cupy.from_dlpack(tensor.detach().resolve_conj().resolve_neg())
        return _host_array(tensor)

    def empty_grad(self, input: torch.Tensor) -> tuple[torch.Tensor, object]:
        """A contiguous gradient buffer owned by PyTorch, and its array view."""
        grad = torch.empty_like(input, dtype=self.compute_dtype,
                                memory_format=torch.contiguous_format)
        return grad, self.array(grad)

    def tensor(self, array) -> torch.Tensor:
        """A loss from fastloss (NumPy scalar/array, CuPy array) as a tensor of input's dtype."""
        if not self.cuda:
            return self.in_input_dtype(_host_tensor(array))
        if array.dtype.name == "bfloat16":
            # Export through 16-bit integers: not every CuPy exports bfloat16.
            import cupy

            return torch.from_dlpack(array.view(cupy.uint16)).view(torch.bfloat16)
        return torch.from_dlpack(array).to(self.dtype)

    def in_input_dtype(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` in input's dtype (itself when it has it: ``to`` costs a microsecond)."""
        return tensor if tensor.dtype == self.dtype else tensor.to(self.dtype)


def _host_array(tensor: torch.Tensor) -> np.ndarray:
    """A NumPy view of a CPU tensor, detached; a resolved copy where a conjugate or
    negative bit is set."""
    return tensor.numpy(force=True)


def _host_tensor(array) -> torch.Tensor:
    """A NumPy loss (a new scalar or array) as a tensor: a view of it costs a fifth of
    ``torch.as_tensor``."""
    return torch.from_numpy(np.asarray(array))


def _check_real_weight(weight, name: str, bool_allowed: bool = True) -> None:
    """TypeError unless ``weight`` is a tensor of a real dtype, as PyTorch's elementwise
    weights may be (bool only where ``bool_allowed``)."""
    if (not isinstance(weight, torch.Tensor) or weight.is_complex()
            or (not bool_allowed and weight.dtype == torch.bool)):
        got = weight.dtype if isinstance(weight, torch.Tensor) else type(weight).__name__
        kind = "real" if bool_allowed else "non-bool real"
        raise TypeError(f"{name} must be a {kind} torch.Tensor or None; got {got}")


def _check_float_input(input: torch.Tensor) -> None:
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"input must be a torch.Tensor; got {type(input).__name__}")
    if input.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            "input must be a floating-point tensor (float16, bfloat16, float32, float64); "
            f"got {input.dtype}"
        )


def _kernel_dtype(tensor: torch.Tensor) -> torch.dtype:
    """The dtype ``tensor`` reaches the kernels in: float32 for a half or float32
    tensor under autocast on its device (as PyTorch's own losses), else its own."""
    device = _device_type(tensor)
    if (tensor.dtype != torch.float64 and device in ("cpu", "cuda")
            and torch.is_autocast_enabled(device)):
        return torch.float32
    return tensor.dtype


def _refuse_double_backward(name: str, instead: str | None = None) -> None:
    # Under create_graph=True a constant gradient would silently drop this
    # loss's second derivative from any higher-order gradient.
    if torch.is_grad_enabled():
        raise RuntimeError(
            f"fastloss.torch.{name} does not support double backward (create_graph=True): "
            f"use {instead or f'torch.nn.functional.{name}'} where higher-order gradients "
            "are needed"
        )


def _factor(grad: torch.Tensor, grad_output: torch.Tensor) -> torch.Tensor:
    """``grad_output`` shaped to multiply ``grad``: a scalar, an element's factor
    (an elementwise loss's "none"), or a row loss's per-row factors given a class axis."""
    return grad_output.unsqueeze(-1) if 0 < grad_output.dim() < grad.dim() else grad_output


def _scale(grad: torch.Tensor, grad_output: torch.Tensor | None) -> torch.Tensor:
    """``grad * grad_output``, a new tensor, never the stored buffer scaled in place: autograd
    may keep it as .grad and add into it, and with retain_graph a later backward would then
    read a changed gradient. ``grad_output`` None (see ``_hand_over``): ``grad`` itself."""
    return grad if grad_output is None else grad * _factor(grad, grad_output)


# Private, as torch's own compiled autograd reads them; None where a release lacks them.
_AUTOGRAD = getattr(torch._C, "_autograd", None)
_KEEPS_GRAPH = getattr(_AUTOGRAD, "_get_current_graph_task_keep_graph", None)
_SAVED_TENSORS_HOOKS = getattr(_AUTOGRAD, "_top_saved_tensors_default_hooks", None)


def _save_grad_for_backward(ctx, grad: torch.Tensor) -> None:
    """Saves the forward pass's gradient, noting whether no saved-tensors hooks (which may
    keep what they pack) saw it."""
    ctx.save_for_backward(grad)
    ctx.saved_privately = (_SAVED_TENSORS_HOOKS is not None
                           and _SAVED_TENSORS_HOOKS(False) is None)


def _hand_over(ctx, grad: torch.Tensor, grad_output: torch.Tensor) -> torch.Tensor | None:
    """None where an eager backward hands autograd the stored gradient ``grad`` itself,
    without a new buffer (whose first touch cost as much as the kernel): scaled in place by
    ``grad_output`` (a row loss's per row) unless that is a scalar exactly 1
    (``loss.backward()``), for a CPU ``grad_output`` in a plain backward pass that frees its
    graph, nothing else holding the gradient: ``(loss / steps).backward()``, sums of scaled
    losses, ``(losses * weights).sum().backward()`` of ``reduction="none"``.
    Else ``grad_output``, for ``_scale``: under a retained graph (a later pass reads the
    stored gradient), saved-tensors hooks, torch.func transforms (``is_grads_batched``),
    compiled autograd, and on CUDA (not changed there: no GPU has run an in-place scale)."""
    if (grad_output.is_cpu and ctx.saved_privately
            and not torch.compiler.is_compiling() and not _batched(grad_output)
            and _KEEPS_GRAPH is not None and not _KEEPS_GRAPH()):
        if grad_output.dim() or grad_output.item() != 1:
            grad.mul_(_factor(grad, grad_output))
        return None
    return grad_output


# ---------------------------------------------------------------------------
# Elementwise losses

# Losses of ``input - target``: their gradient with respect to the target is
# minus the one with respect to the input. The others do not differentiate
# their target.
_OF_DIFFERENCE = ("mse", "l1", "smooth_l1", "huber")


def _elementwise_arguments(name, input, target, reduction, weights):
    """Checks PyTorch-side arguments of elementwise loss ``name``; returns the reduction."""
    _check_float_input(input)
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor; got {type(target).__name__}")
    if target.shape != input.shape:
        raise ValueError(
            f"target must have the shape of input {tuple(input.shape)}; got {tuple(target.shape)} "
            "(fastloss does not broadcast: expand the target explicitly if that is meant)"
        )
    if _kernel_dtype(target) != _kernel_dtype(input):
        raise TypeError(f"target must have input's dtype {input.dtype}; got {target.dtype}")
    _check_device(target, "target", input)
    if name not in _OF_DIFFERENCE and torch.is_grad_enabled() and target.requires_grad:
        raise NotImplementedError(
            f"fastloss.torch does not differentiate {name} with respect to its target; pass "
            "target.detach(), or use torch.nn.functional where that gradient is needed"
        )
    for option, weight in weights.items():
        if weight is None:
            continue
        # Computed in input's dtype, as PyTorch computes it; PyTorch refuses a bool pos_weight.
        _check_real_weight(weight, option, bool_allowed=option != "pos_weight")
        _check_device(weight, option, input)
        if torch.is_grad_enabled() and weight.requires_grad:
            raise NotImplementedError(f"fastloss.torch does not differentiate {option}")
    return _validate.check_reduction(
        reduction, _KL_DIV_REDUCTIONS if name == "kl_div" else _validate.REDUCTIONS
    )


# Each loss is a ``torch.library.custom_op`` (``fastloss::<functional name>``)
# returning ``(loss, grad)``: torch.compile traces it as one opaque node from
# its fake implementation, the backward only scales the saved gradient, and
# autocast computes it in float32, as PyTorch's own losses do. A plain eager
# call (no compiling, no autocast, a plain CPU or CUDA tensor) runs the same
# computation and formula through a torch.autograd.Function instead: the
# op's Python dispatch costs about 50 us a forward and backward, more than
# the kernels at small sizes. ``with_grad=False`` (no gradient wanted)
# computes the loss alone and returns an empty gradient.


def _loss_and_grad(input, with_grad, compute):
    """``(loss, grad)`` tensors from ``compute(array, out)`` on ``input``'s device:
    ``array`` views a tensor as the backend's array, ``out`` is the gradient's
    array (None: the loss alone) and the result is fastloss's loss."""
    if input.is_cpu and input.dtype in _NUMPY_DTYPES:
        # NumPy holds the dtype, and the kernels give the loss in it: views both ways,
        # without a _Bridge (its set-up and calls cost about 5 us of a small call).
        if not with_grad:
            return _host_tensor(compute(_host_array, None)), input.new_empty(0)
        # A NumPy array under the gradient tensor: NumPy asks for huge pages for large
        # arrays (madvise), PyTorch's allocator does not, and where transparent huge pages
        # are on request the first touch of a fresh 128 MiB buffer took 54 ms against 20.
        grad = np.empty(input.shape, _NUMPY_DTYPES[input.dtype])
        return _host_tensor(compute(_host_array, grad)), torch.from_numpy(grad)
    with _Bridge(input) as bridge:
        if not with_grad:
            return bridge.tensor(compute(bridge.array, None)), input.new_empty(0)
        grad, grad_array = bridge.empty_grad(input)
        loss = compute(bridge.array, grad_array)
        return bridge.tensor(loss), bridge.in_input_dtype(grad)


def _plain_eager(input: torch.Tensor) -> bool:
    device = _device_type(input)
    return (type(input) in (torch.Tensor, torch.nn.Parameter) and device in ("cpu", "cuda")
            and not torch.compiler.is_compiling() and not torch.is_autocast_enabled(device))


class _Op:
    """A loss as a custom op, and as a torch.autograd.Function for plain eager calls.

    ``compute(input, ..., with_grad)`` gives ``(loss, grad)``, ``fake`` their
    shapes, and ``grads(grad, grad_output, needs_input_grad)`` the gradients
    of every argument of ``compute`` from the saved ``grad``.
    """

    def __init__(self, name: str, compute, fake, grads):
        self.name, self.compute, self.grads = name, compute, grads
        self.op = torch.library.custom_op(f"fastloss::{name}", compute, mutates_args=())
        self.op.register_fake(fake)
        self.op.register_autograd(self._op_backward, setup_context=_save_grad)
        for device_type in ("cpu", "cuda"):
            torch.library.register_autocast(self.op, device_type, torch.float32)

    def _op_backward(self, ctx, grad_output, _):
        _refuse_double_backward(self.name)
        return self.grads(ctx.saved_tensors[0], grad_output, ctx.needs_input_grad)

    def __call__(self, input: torch.Tensor, *args) -> torch.Tensor:
        """The loss of ``compute(input, *args)``, differentiable when ``with_grad``."""
        _refuse_tangents(self.name, input, *args)
        if not torch.compiler.is_compiling():
            _refuse_transforms(self.name, input, *args)
        if torch.jit.is_tracing():
            # A trace keeps with_grad as a constant, which must hold for every later call.
            return self.op(input, *args[:-1], True)[0]
        if not _plain_eager(input):
            return self.op(input, *args)[0]
        if args[-1]:
            return _EagerFunction.apply(self, input, *args)
        return self.compute(input, *args)[0]


# torch.func's own tests (private: None where a release lacks them, and nothing is refused).
_WRAPPED = getattr(getattr(torch._C, "_functorch", None), "is_functorch_wrapped_tensor", None)
_LEGACY_BATCHED = getattr(getattr(torch._C, "_functorch", None), "is_legacy_batchedtensor", None)
_TRANSFORMS_ACTIVE = getattr(torch._C, "_are_functorch_transforms_active", None)


def _batched(tensor: torch.Tensor) -> bool:
    """Whether a transform wraps ``tensor`` (torch.func's, or the vmap of
    ``torch.autograd.grad(..., is_grads_batched=True)``); True where a release lacks the tests."""
    if _WRAPPED is None or _LEGACY_BATCHED is None:
        return True
    return _WRAPPED(tensor) or _LEGACY_BATCHED(tensor)


def _refuse_transforms(name: str, *args) -> None:
    """NotImplementedError when a torch.func transform (vmap, grad, jacrev, ...) wraps a tensor
    argument: a batched tensor has no storage for the kernels, and the eager
    torch.autograd.Function has no ``setup_context`` to be transformed. Tensors a transform
    does not wrap (captured from outside it) are an ordinary call."""
    if _WRAPPED is None or _TRANSFORMS_ACTIVE is None or not _TRANSFORMS_ACTIVE():
        return
    if any(isinstance(arg, torch.Tensor) and _WRAPPED(arg) for arg in args):
        raise NotImplementedError(
            f"fastloss.torch {name} does not run under torch.func transforms (vmap, grad, "
            "jacrev, hessian, ...); use torch.nn.functional there"
        )


def _refuse_tangents(name: str, *args) -> None:
    """NotImplementedError for a forward-mode AD tangent on any tensor argument: the loss
    would drop it, as if its derivative were zero."""
    if forward_ad._current_level < 0:  # outside forward_ad.dual_level(): no tangent
        return
    for arg in args:
        if isinstance(arg, torch.Tensor) and forward_ad.unpack_dual(arg).tangent is not None:
            raise NotImplementedError(
                f"fastloss.torch {name} has no forward-mode AD (jvp); use torch.nn.functional "
                "for forward-mode derivatives"
            )


def _save_grad(ctx, inputs, output):
    ctx.save_for_backward(output[1])
    ctx.mark_non_differentiable(output[1])


class _EagerFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, op, *args):
        loss, grad = op.compute(*args)
        _save_grad_for_backward(ctx, grad)
        ctx.op = op
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        _refuse_double_backward(ctx.op.name)
        grad = ctx.saved_tensors[0]
        grads = ctx.op.grads(grad, _hand_over(ctx, grad, grad_output),
                             ctx.needs_input_grad[1:])
        return None, *grads


# The option a loss's single float argument stands for.
_OPTION = {"smooth_l1": ("beta", float), "huber": ("delta", float), "kl_div": ("log_target", bool)}


def _elementwise_op(name: str):
    """The custom op of elementwise loss ``name``."""
    def compute(input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None,
                pos_weight: torch.Tensor | None, reduction: str, option: float,
                with_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
        options = {}
        if name in _OPTION:
            key, kind = _OPTION[name]
            options[key] = kind(option)

        def run(array, out):
            for key, value in (("weight", weight), ("pos_weight", pos_weight)):
                if value is not None:
                    options[key] = array(value.detach().to(input.dtype))
            if out is None:
                return getattr(fastloss, name)(array(input), array(target), reduction=reduction,
                                               **options)
            return getattr(fastloss, f"{name}_with_grad")(
                array(input), array(target), reduction=reduction, out=out, **options)[0]

        return _loss_and_grad(input, with_grad, run)

    def fake(input, target, weight, pos_weight, reduction, option, with_grad):
        loss = input.new_empty(input.shape if reduction == "none" else ())
        return loss, input.new_empty(input.shape if with_grad else (0,))

    def grads(grad, grad_output, needs_input_grad):
        grad_input = _scale(grad, grad_output)
        grad_target = -grad_input if needs_input_grad[1] else None
        return grad_input, grad_target, None, None, None, None, None

    return _Op(_FUNCTIONAL_NAMES[name], compute, fake, grads)


def _elementwise(name, input, target, reduction, option=0.0, weight=None, pos_weight=None):
    """``name``'s loss of tensors, through autograd when a gradient may be needed."""
    reduction = _elementwise_arguments(name, input, target, reduction,
                                       {"weight": weight, "pos_weight": pos_weight})
    with_grad = torch.is_grad_enabled() and (input.requires_grad or target.requires_grad)
    return _ELEMENTWISE_OPS[name](input, target, weight, pos_weight, reduction, float(option),
                                  with_grad)


_FUNCTIONAL_NAMES = {
    "mse": "mse_loss", "l1": "l1_loss", "smooth_l1": "smooth_l1_loss", "huber": "huber_loss",
    "binary_cross_entropy_with_logits": "binary_cross_entropy_with_logits",
    "binary_cross_entropy": "binary_cross_entropy", "kl_div": "kl_div",
}
_ELEMENTWISE_OPS = {name: _elementwise_op(name) for name in _FUNCTIONAL_NAMES}
_SHARED = """
    ``input`` and ``target``: tensors of the same shape, floating dtype and
    device (CPU or CUDA); no broadcasting. ``reduction``: ``"mean"``,
    ``"sum"`` or ``"none"``. Returns the loss in ``input``'s dtype,
    differentiable (once) with respect to ``input``{target}.
    Raises ValueError for shapes and options, TypeError for dtypes and devices.
"""
_AND_TARGET = " and ``target``"
_NOT_TARGET = " (a target that requires grad is NotImplementedError)"


def _weighted(name, input, target, reduction, option, weight, mean_over_weight):
    """PyTorch's weighted form of loss ``name`` (its ``weight=`` of recent releases), by its
    own formula over fastloss's per-element losses: ``loss * weight``, summed for "sum", over
    ``weight.sum()`` (``mean_over_weight``, as mse and l1) or over the count (huber) for
    "mean". Differentiable with respect to ``weight`` too, as in PyTorch."""
    _check_float_input(input)
    # Promoted with the losses' dtype as PyTorch does (an integer or bool mask too).
    _check_real_weight(weight, "weight")
    if weight.shape != input.shape:
        raise ValueError(
            f"weight must have the shape of input {tuple(input.shape)}; got {tuple(weight.shape)}"
        )
    _check_device(weight, "weight", input)
    reduction = _validate.check_reduction(reduction)
    weighted = _elementwise(name, input, target, "none", option) * weight
    if reduction == "none":
        return weighted
    if reduction == "sum":
        return weighted.sum()
    return weighted.sum() / weight.sum() if mean_over_weight else weighted.mean()


def mse_loss(
    input: torch.Tensor, target: torch.Tensor, *, reduction: str = "mean",
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    if weight is not None:
        return _weighted("mse", input, target, reduction, 0.0, weight, mean_over_weight=True)
    return _elementwise("mse", input, target, reduction)


def l1_loss(
    input: torch.Tensor, target: torch.Tensor, *, reduction: str = "mean",
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    if weight is not None:
        return _weighted("l1", input, target, reduction, 0.0, weight, mean_over_weight=True)
    return _elementwise("l1", input, target, reduction)


def smooth_l1_loss(
    input: torch.Tensor, target: torch.Tensor, *, reduction: str = "mean", beta: float = 1.0
) -> torch.Tensor:
    return _elementwise("smooth_l1", input, target, reduction, _check_beta(beta))


def huber_loss(
    input: torch.Tensor, target: torch.Tensor, reduction: str = "mean", delta: float = 1.0,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    if weight is not None:
        return _weighted("huber", input, target, reduction, _check_delta(delta), weight,
                         mean_over_weight=False)
    return _elementwise("huber", input, target, reduction, _check_delta(delta))


def binary_cross_entropy_with_logits(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    *,
    reduction: str = "mean",
    pos_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    return _elementwise("binary_cross_entropy_with_logits", input, target, reduction,
                        weight=weight, pos_weight=pos_weight)


def binary_cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    *,
    reduction: str = "mean",
) -> torch.Tensor:
    return _elementwise("binary_cross_entropy", input, target, reduction, weight=weight)


def kl_div(
    input: torch.Tensor, target: torch.Tensor, *, reduction: str = "mean",
    log_target: bool = False,
) -> torch.Tensor:
    if not isinstance(log_target, bool):
        raise TypeError(f"log_target must be a bool; got {log_target!r}")
    return _elementwise("kl_div", input, target, reduction, log_target)


for _function, _what, _target in (
    (mse_loss, "mse_loss", _AND_TARGET),
    (l1_loss, "l1_loss", _AND_TARGET),
    (smooth_l1_loss, "smooth_l1_loss", _AND_TARGET),
    (huber_loss, "huber_loss", _AND_TARGET),
    (binary_cross_entropy_with_logits, "binary_cross_entropy_with_logits", _NOT_TARGET),
    (binary_cross_entropy, "binary_cross_entropy", _NOT_TARGET),
    (kl_div, "kl_div", _NOT_TARGET),
):
    _function.__doc__ = (
        f"``torch.nn.functional.{_what}`` computed by fastloss's fused kernel.\n"
        + _SHARED.format(target=_target)
    )
_WEIGHTED = """
    ``weight`` (PyTorch's, of input's shape, any real dtype) multiplies each
    element's loss; "mean" {mean}. It is computed as PyTorch computes it, from
    the fused kernel's per-element losses (two more passes over the input's
    size), and is differentiable too. The result's dtype is then the promotion
    of input's and weight's; under autocast the per-element losses are float32,
    where PyTorch's weighted mse and l1 stay in the autocast dtype.
"""
mse_loss.__doc__ += _WEIGHTED.format(mean="is then over ``weight.sum()``")
l1_loss.__doc__ += _WEIGHTED.format(mean="is then over ``weight.sum()``")
huber_loss.__doc__ += _WEIGHTED.format(
    mean="stays over the number of elements (PyTorch's rule for\n    Huber, unlike mse's and l1's)"
)
binary_cross_entropy_with_logits.__doc__ += """
    ``weight`` (broadcastable to input) and ``pos_weight`` (``(C,)`` over the
    last axis, or broadcastable), of any real dtype (not bool for ``pos_weight``,
    as PyTorch), are taken in input's dtype and not differentiated. Logits of +-inf give
    the limit where PyTorch gives NaN.
"""
kl_div.__doc__ += """
    ``reduction`` may also be ``"batchmean"`` (the sum over ``input.size(0)``, a 0-d
    input's the sum);
    ``log_target``: the target holds log-probabilities.
"""
binary_cross_entropy.__doc__ += """
    ``weight`` (broadcastable to input, of any real dtype, taken in input's
    dtype) is not differentiated. Probabilities
    outside [0, 1] are a ValueError on the CPU and NaN on CUDA.
"""


# ---------------------------------------------------------------------------
# Softmax cross-entropy


def _cross_entropy_arguments(input, target, weight, reduction):
    """Checks PyTorch-side arguments; returns (input, target), a batch axis added if unbatched."""
    _check_float_input(input)
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor; got {type(target).__name__}")
    _validate.check_reduction(reduction)
    _check_device(target, "target", input)
    if weight is not None:
        if not isinstance(weight, torch.Tensor) or not weight.is_floating_point():
            got = weight.dtype if isinstance(weight, torch.Tensor) else type(weight).__name__
            raise TypeError(f"weight must be a floating-point torch.Tensor or None; got {got}")
        _check_device(weight, "weight", input)
        if torch.is_grad_enabled() and weight.requires_grad:  # PyTorch refuses too
            raise NotImplementedError("fastloss.torch does not differentiate weight")
    if input.dim() > 2:
        raise ValueError(
            f"input of shape {tuple(input.shape)} is not supported: fastloss takes (N, C) or (C,) "
            "logits with the class axis last. For (N, C, d1, ...) input use "
            "input.movedim(1, -1).reshape(-1, C) and target.reshape(-1) "
            "(or target.movedim(1, -1).reshape(-1, C) for probabilities)"
        )
    if input.dim() == 0:
        raise ValueError("input must have shape (N, C) or (C,); got a 0-d tensor")
    label_shaped = (target.shape == input.shape[:-1]
                    or (input.dim() == 1 and target.shape == (1,)))
    if target.is_floating_point():
        if target.shape != input.shape and label_shaped:  # PyTorch: a dtype error too
            raise TypeError(
                f"target of shape {tuple(target.shape)} holds class indices, which must be "
                f"integers; got dtype {target.dtype} (convert with target.long(), or give "
                f"probabilities of input's shape {tuple(input.shape)})"
            )
        if target.shape != input.shape:
            raise ValueError(
                f"probability target must have the shape of input {tuple(input.shape)}; "
                f"got {tuple(target.shape)}"
            )
        if _kernel_dtype(target) != _kernel_dtype(input):
            raise TypeError(
                f"probability target must have input's dtype {input.dtype}; got {target.dtype}"
            )
        if torch.is_grad_enabled() and target.requires_grad:
            raise NotImplementedError(
                "fastloss.torch.cross_entropy does not differentiate with respect to a "
                "probability target; pass target.detach(), or use "
                "torch.nn.functional.cross_entropy for learned soft targets"
            )
    elif target.dtype in _NOT_CLASS_INDICES:
        raise TypeError(
            "target must hold class indices of an integer dtype other than uint64 (as in "
            f"PyTorch), or float probabilities; got {target.dtype}"
        )
    elif not label_shaped:
        shapes = "() or (1,)" if input.dim() == 1 else str(tuple(input.shape[:-1]))
        raise ValueError(
            f"class-index target must have shape {shapes} for input of shape "
            f"{tuple(input.shape)}; got {tuple(target.shape)}"
        )
    else:
        target = target.long()
    if input.dim() == 1:  # unbatched: probabilities (C,) -> (1, C), a label () or (1,) -> (1,)
        target = target.unsqueeze(0) if target.is_floating_point() else target.reshape(1)
        return input.unsqueeze(0), target
    return input, target


def _cross_entropy_compute(input: torch.Tensor, target: torch.Tensor,
                           weight: torch.Tensor | None, ignore_index: int, reduction: str,
                           label_smoothing: float,
                           with_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    options = {"ignore_index": ignore_index, "reduction": reduction,
               "label_smoothing": label_smoothing}

    def run(array, out):
        # The kernels take float64 weights; (C,) is too small for the copy to matter.
        weights = None if weight is None else array(weight.detach().double())
        if out is None:
            return fastloss.softmax_cross_entropy(array(input), array(target), weight=weights,
                                                  **options)
        return fastloss.softmax_cross_entropy_with_grad(array(input), array(target),
                                                        weight=weights, out=out, **options)[0]

    return _loss_and_grad(input, with_grad, run)


def _cross_entropy_fake(input, target, weight, ignore_index, reduction, label_smoothing,
                        with_grad):
    loss = input.new_empty(input.shape[:1] if reduction == "none" else ())
    return loss, input.new_empty(input.shape if with_grad else (0,))


def _row_loss_grads(grad, grad_output, needs_input_grad):
    """The gradients of a loss over rows (the input's only)."""
    return (_scale(grad, grad_output), *(None,) * (len(needs_input_grad) - 1))


_CROSS_ENTROPY = _Op("cross_entropy", _cross_entropy_compute, _cross_entropy_fake,
                     _row_loss_grads)


def _nll_compute(input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None,
                 ignore_index: int, reduction: str,
                 with_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    def run(array, out):
        options = {"weight": None if weight is None else array(weight.detach().double()),
                   "ignore_index": ignore_index, "reduction": reduction}
        if out is None:
            return fastloss.nll(array(input), array(target), **options)
        return fastloss.nll_with_grad(array(input), array(target), out=out, **options)[0]

    return _loss_and_grad(input, with_grad, run)


def _nll_fake(input, target, weight, ignore_index, reduction, with_grad):
    return _cross_entropy_fake(input, target, weight, ignore_index, reduction, 0.0, with_grad)


_NLL = _Op("nll_loss", _nll_compute, _nll_fake, _row_loss_grads)


def _multi_margin_compute(input: torch.Tensor, target: torch.Tensor,
                          weight: torch.Tensor | None, p: int, margin: float, reduction: str,
                          with_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    def run(array, out):
        options = {"weight": None if weight is None else array(weight.detach().double()),
                   "p": p, "margin": margin, "reduction": reduction}
        if out is None:
            return fastloss.multi_margin(array(input), array(target), **options)
        return fastloss.multi_margin_with_grad(array(input), array(target), out=out,
                                               **options)[0]

    return _loss_and_grad(input, with_grad, run)


def _multi_margin_fake(input, target, weight, p, margin, reduction, with_grad):
    return _cross_entropy_fake(input, target, weight, 0, reduction, 0.0, with_grad)


_MULTI_MARGIN = _Op("multi_margin_loss", _multi_margin_compute, _multi_margin_fake,
                    _row_loss_grads)


def cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """``torch.nn.functional.cross_entropy`` computed by fastloss's fused kernel.

    ``input``: ``(N, C)`` or ``(C,)`` logits, floating dtype, CPU or CUDA.
    ``target``: class indices of shape ``(N,)``, or ``()`` or ``(1,)`` for a ``(C,)``
    input (``ignore_index`` honoured), or probabilities of ``input``'s shape and dtype
    (not differentiated). ``weight``: ``(C,)`` per-class weights or None.
    Returns the loss in ``input``'s dtype, per row for ``reduction="none"``,
    differentiable with respect to ``input`` (once). Raises ValueError for
    shapes, labels and options (including inputs with more than 2 dims),
    TypeError for dtypes and devices, NotImplementedError for a target that
    requires grad. On CUDA a label out of range is not checked (that would
    synchronise): its row's loss and gradient are NaN.
    """
    squeeze = isinstance(input, torch.Tensor) and input.dim() == 1
    input2d, target2d = _cross_entropy_arguments(input, target, weight, reduction)
    loss = _CROSS_ENTROPY(
        input2d, target2d, weight, _validate.check_int(ignore_index, "ignore_index"), reduction,
        _validate.check_probability(label_smoothing, "label_smoothing"),
        torch.is_grad_enabled() and input.requires_grad,
    )
    return loss.squeeze(0) if squeeze and reduction == "none" else loss


def nll_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> torch.Tensor:
    """``torch.nn.functional.nll_loss`` computed by fastloss's fused kernel.

    ``input``: ``(N, C)`` or ``(C,)`` log-probabilities, floating dtype, CPU or CUDA.
    ``target``: integer class indices of shape ``(N,)``, or ``()`` or ``(1,)`` for a
    ``(C,)`` input (``ignore_index`` honoured). ``weight``: ``(C,)`` per-class weights or
    None. Returns the loss in ``input``'s dtype, per row for ``reduction="none"``,
    differentiable with respect to ``input`` (once). Raises ValueError for shapes, labels
    and options, TypeError for dtypes (a floating-point target too) and devices. On CUDA a
    label out of range is not checked: its row's loss and gradient are NaN.
    """
    if isinstance(target, torch.Tensor) and target.is_floating_point():
        raise TypeError(
            f"target holds class indices, which must be integers; got dtype {target.dtype}"
        )
    squeeze = isinstance(input, torch.Tensor) and input.dim() == 1
    input2d, target2d = _cross_entropy_arguments(input, target, weight, reduction)
    loss = _NLL(input2d, target2d, weight, _validate.check_int(ignore_index, "ignore_index"),
                reduction, torch.is_grad_enabled() and input.requires_grad)
    return loss.squeeze(0) if squeeze and reduction == "none" else loss


def multi_margin_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    p: int = 1,
    margin: float = 1.0,
    weight: torch.Tensor | None = None,
    *,
    reduction: str = "mean",
) -> torch.Tensor:
    """``torch.nn.functional.multi_margin_loss`` computed by fastloss's fused kernel.

    ``input``: ``(N, C)`` or ``(C,)`` scores, floating dtype, CPU or CUDA. ``target``:
    integer class indices of shape ``(N,)``, or ``()`` or ``(1,)`` for a ``(C,)`` input.
    ``p``: 1 or 2; ``margin``: a float; ``weight``: ``(C,)`` per-class weights or None.
    Returns the loss in ``input``'s dtype, per row for ``reduction="none"``, differentiable
    with respect to ``input`` (once). Raises ValueError for shapes, labels and options,
    TypeError for dtypes (a floating-point target too) and devices. On CUDA a label out of
    range is not checked: its row's loss and gradient are NaN.
    """
    if isinstance(target, torch.Tensor) and target.is_floating_point():
        raise TypeError(
            f"target holds class indices, which must be integers; got dtype {target.dtype}"
        )
    p = _validate.check_margin_power(p)
    # PyTorch keeps the batch axis of a (1,) target with a (C,) input.
    squeeze = (isinstance(input, torch.Tensor) and input.dim() == 1
               and not (isinstance(target, torch.Tensor) and target.dim() == 1))
    input2d, target2d = _cross_entropy_arguments(input, target, weight, reduction)
    loss = _MULTI_MARGIN(input2d, target2d, weight, p, _validate.check_real(margin, "margin"),
                         reduction, torch.is_grad_enabled() and input.requires_grad)
    return loss.squeeze(0) if squeeze and reduction == "none" else loss


# ---------------------------------------------------------------------------
# Modules


class _ReductionLoss(torch.nn.Module):
    """A loss module with a checked ``reduction``."""

    def __init__(self, reduction: str):
        super().__init__()
        self.reduction = _validate.check_reduction(reduction)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


class MSELoss(_ReductionLoss):
    """``torch.nn.MSELoss`` computed by :func:`mse_loss`."""

    def __init__(self, *, reduction: str = "mean"):
        super().__init__(reduction)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return mse_loss(input, target, reduction=self.reduction)


class L1Loss(_ReductionLoss):
    """``torch.nn.L1Loss`` computed by :func:`l1_loss`."""

    def __init__(self, *, reduction: str = "mean"):
        super().__init__(reduction)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return l1_loss(input, target, reduction=self.reduction)


class SmoothL1Loss(_ReductionLoss):
    """``torch.nn.SmoothL1Loss`` computed by :func:`smooth_l1_loss`."""

    def __init__(self, *, reduction: str = "mean", beta: float = 1.0):
        super().__init__(reduction)
        self.beta = _check_beta(beta)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return smooth_l1_loss(input, target, reduction=self.reduction, beta=self.beta)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, beta={self.beta}"


class HuberLoss(_ReductionLoss):
    """``torch.nn.HuberLoss`` computed by :func:`huber_loss`."""

    def __init__(self, reduction: str = "mean", delta: float = 1.0):
        super().__init__(reduction)
        self.delta = _check_delta(delta)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return huber_loss(input, target, reduction=self.reduction, delta=self.delta)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, delta={self.delta}"


class BCEWithLogitsLoss(_ReductionLoss):
    """``torch.nn.BCEWithLogitsLoss`` computed by :func:`binary_cross_entropy_with_logits`.

    ``weight`` and ``pos_weight`` are buffers, so they follow ``.to(device)``.
    """

    weight: torch.Tensor | None
    pos_weight: torch.Tensor | None

    def __init__(self, weight: torch.Tensor | None = None, *, reduction: str = "mean",
                 pos_weight: torch.Tensor | None = None):
        super().__init__(reduction)
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return binary_cross_entropy_with_logits(input, target, self.weight,
                                                reduction=self.reduction,
                                                pos_weight=self.pos_weight)


class BCELoss(_ReductionLoss):
    """``torch.nn.BCELoss`` computed by :func:`binary_cross_entropy`.

    ``weight`` is a buffer, so it follows ``.to(device)``.
    """

    weight: torch.Tensor | None

    def __init__(self, weight: torch.Tensor | None = None, *, reduction: str = "mean"):
        super().__init__(reduction)
        self.register_buffer("weight", weight)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return binary_cross_entropy(input, target, self.weight, reduction=self.reduction)


class NLLLoss(_ReductionLoss):
    """``torch.nn.NLLLoss`` computed by :func:`nll_loss`.

    ``weight`` is a buffer, so it follows the module's ``.to(device)``.
    """

    weight: torch.Tensor | None

    def __init__(self, weight: torch.Tensor | None = None, *, ignore_index: int = -100,
                 reduction: str = "mean"):
        super().__init__(reduction)
        self.register_buffer("weight", weight)
        self.ignore_index = _validate.check_int(ignore_index, "ignore_index")

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return nll_loss(input, target, self.weight, ignore_index=self.ignore_index,
                        reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}, {super().extra_repr()}"


class MultiMarginLoss(_ReductionLoss):
    """``torch.nn.MultiMarginLoss`` computed by :func:`multi_margin_loss`.

    ``weight`` is a buffer, so it follows the module's ``.to(device)``.
    """

    weight: torch.Tensor | None

    def __init__(self, p: int = 1, margin: float = 1.0, weight: torch.Tensor | None = None,
                 *, reduction: str = "mean"):
        super().__init__(reduction)
        self.p = _validate.check_margin_power(p)
        self.margin = _validate.check_real(margin, "margin")
        self.register_buffer("weight", weight)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return multi_margin_loss(input, target, self.p, self.margin, self.weight,
                                 reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"p={self.p}, margin={self.margin}, {super().extra_repr()}"


class KLDivLoss(torch.nn.Module):
    """``torch.nn.KLDivLoss`` computed by :func:`kl_div`."""

    def __init__(self, *, reduction: str = "mean", log_target: bool = False):
        super().__init__()
        _validate.check_reduction(reduction, _KL_DIV_REDUCTIONS)
        if not isinstance(log_target, bool):
            raise TypeError(f"log_target must be a bool; got {log_target!r}")
        self.reduction, self.log_target = reduction, log_target

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return kl_div(input, target, reduction=self.reduction, log_target=self.log_target)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, log_target={self.log_target}"


class CrossEntropyLoss(torch.nn.Module):
    """``torch.nn.CrossEntropyLoss`` computed by :func:`cross_entropy`.

    ``weight`` is a buffer, so it follows the module's ``.to(device)``.
    """

    weight: torch.Tensor | None

    def __init__(
        self,
        weight: torch.Tensor | None = None,
        *,
        ignore_index: int = -100,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
    ):
        super().__init__()
        self.register_buffer("weight", weight)
        self.ignore_index = _validate.check_int(ignore_index, "ignore_index")
        self.reduction = _validate.check_reduction(reduction)
        self.label_smoothing = _validate.check_probability(
            label_smoothing, "label_smoothing"
        )

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return cross_entropy(
            input,
            target,
            self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
        )

    def extra_repr(self) -> str:
        return (
            f"ignore_index={self.ignore_index}, reduction={self.reduction!r}, "
            f"label_smoothing={self.label_smoothing}"
        )

