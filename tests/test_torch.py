"""fastloss.torch against torch.nn.functional: values, gradients, autograd behaviour, errors."""

import functools

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="fastloss.torch needs PyTorch")
F = torch.nn.functional

import fastloss  # noqa: E402
import fastloss.torch as ft  # noqa: E402


def _cuda_available() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        import cupy
    except ImportError:
        return False
    return bool(cupy.is_available())


CUDA = pytest.param(
    "cuda",
    id="cuda",
    marks=[pytest.mark.gpu, pytest.mark.skipif(not _cuda_available(), reason="no CUDA device")],
)
DEVICES = [pytest.param("cpu", id="cpu"), CUDA]

# (rtol, atol) of a result in this dtype against float64 PyTorch on the same values.
TOLERANCE = {
    torch.float64: (1e-10, 1e-12),
    torch.float32: (2e-5, 1e-6),
    torch.float16: (4e-3, 1e-3),
    torch.bfloat16: (3e-2, 1e-2),
}
FULL = [torch.float32, torch.float64]
HALF = [torch.float16, torch.bfloat16]
REDUCTIONS = ["mean", "sum", "none"]

# name -> (target kind, options for cross_entropy)
CE_CASES = {
    "labels": ("labels", {}),
    "ignore": ("ignored", {}),
    "ignore-custom": ("labels", {"ignore_index": 1}),
    "smoothing": ("labels", {"label_smoothing": 0.2}),
    "weight": ("labels", {"weight": True}),
    "weight-ignore-smoothing": ("ignored", {"weight": True, "label_smoothing": 0.1}),
    "probs": ("probs", {}),
    "probs-weight-smoothing": ("probs", {"weight": True, "label_smoothing": 0.3}),
}
# The core tests' shapes: one row, one class, sizes off every block size, many classes, many rows.
CE_SHAPES = [(1, 1), (1, 5), (37, 33), (64, 1000), (5000, 7)]
MSE_SHAPES = [(1, 1), (1, 37), (7, 33), (1000,), (3, 4, 5), (4099, 33)]


def assert_close(actual, expected, dtype):
    rtol, atol = TOLERANCE[dtype]
    assert actual.dtype == dtype
    assert actual.shape == expected.shape
    np.testing.assert_allclose(
        actual.detach().cpu().double().numpy(), expected.detach().cpu().double().numpy(),
        rtol=rtol, atol=atol,
    )


def ce_inputs(shape, kind, options, device, dtype, seed=0):
    """(logits, target, options) in ``dtype``, and the same values in float64 for PyTorch."""
    generator = torch.Generator().manual_seed(seed)
    rows, classes = shape
    logits = (torch.randn(shape, generator=generator, dtype=torch.float64) * 3).to(dtype)
    if kind == "probs":
        target = torch.rand(shape, generator=generator, dtype=torch.float64).to(dtype)
        target = target / target.sum(dim=1, keepdim=True)
    else:
        target = torch.randint(0, classes, (rows,), generator=generator)
        if kind == "ignored":
            target[::3] = -100
    options = dict(options)
    reference = dict(options)
    if options.get("weight"):
        weight = torch.rand(classes, generator=generator, dtype=torch.float64) + 0.5
        options["weight"] = weight.to(dtype).to(device)
        reference["weight"] = weight.to(dtype).double().to(device)
    logits, target = logits.to(device), target.to(device)
    target64 = target.double() if target.is_floating_point() else target
    return (logits, target, options), (logits.double(), target64, reference)


def run_ce(inputs, reduction, function):
    """Loss, and the gradient of ``sum(loss * grad_output)`` for a fixed random grad_output."""
    logits, target, options = inputs
    logits = logits.detach().clone().requires_grad_()
    loss = function(logits, target, reduction=reduction, **options)
    grad_output = torch.linspace(-1.5, 2.0, loss.numel(), dtype=torch.float64)
    grad_output = grad_output.reshape(loss.shape).to(loss.device, loss.dtype)
    (grad,) = torch.autograd.grad(loss, logits, grad_output)
    return loss, grad


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", CE_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("case", list(CE_CASES))
@pytest.mark.parametrize("dtype", FULL, ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_cross_entropy_matches_torch(device, dtype, case, shape, reduction):
    kind, options = CE_CASES[case]
    ours, reference = ce_inputs(shape, kind, options, device, dtype)
    loss, grad = run_ce(ours, reduction, ft.cross_entropy)
    ref_loss, ref_grad = run_ce(reference, reduction, F.cross_entropy)
    assert_close(loss, ref_loss.to(dtype), dtype)
    assert_close(grad, ref_grad.to(dtype), dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", ["labels", "weight-ignore-smoothing", "probs"])
@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_cross_entropy_half_precision(device, dtype, case, reduction):
    kind, options = CE_CASES[case]
    ours, reference = ce_inputs((9, 6), kind, options, device, dtype)
    loss, grad = run_ce(ours, reduction, ft.cross_entropy)
    ref_loss, ref_grad = run_ce(reference, reduction, F.cross_entropy)
    assert_close(loss, ref_loss.to(dtype), dtype)
    assert_close(grad, ref_grad.to(dtype), dtype)


# A float16 "sum" of 4099 x 33 squares overflows to inf, in PyTorch as here.
@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", MSE_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", FULL + HALF, ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_mse_loss_matches_torch(device, dtype, shape, reduction):
    generator = torch.Generator().manual_seed(1)
    values = [torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype) for _ in "pt"]
    results = []
    for function, cast in ((ft.mse_loss, dtype), (F.mse_loss, torch.float64)):
        pred, target = (v.to(device, cast).requires_grad_() for v in values)
        loss = function(pred, target, reduction=reduction)
        grad_output = torch.linspace(-1.0, 2.0, loss.numel(), dtype=torch.float64)
        grad_output = grad_output.to(dtype).to(device, cast)
        grads = torch.autograd.grad(loss, (pred, target), grad_output.reshape(loss.shape))
        results.append((loss, *grads))
    for actual, expected in zip(*results, strict=True):
        assert_close(actual, expected.to(dtype), dtype)


# --- autograd behaviour ----------------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", list(CE_CASES))
def test_cross_entropy_gradcheck(case, reduction):
    kind, options = CE_CASES[case]
    (logits, target, options), _ = ce_inputs((4, 5), kind, options, "cpu", torch.float64)
    logits.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda z: ft.cross_entropy(z, target, reduction=reduction, **options), (logits,)
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_loss_gradcheck(reduction):
    generator = torch.Generator().manual_seed(2)
    pred, target = (
        torch.randn(3, 4, generator=generator, dtype=torch.float64).requires_grad_()
        for _ in range(2)
    )
    assert torch.autograd.gradcheck(
        lambda p, t: ft.mse_loss(p, t, reduction=reduction), (pred, target)
    )


class _Calls:
    """Counts calls into fastloss's public functions, passing them through."""

    NAMES = (
        "mse", "mse_grad", "mse_with_grad", "softmax_cross_entropy",
        "softmax_cross_entropy_grad", "softmax_cross_entropy_with_grad",
    )

    def __init__(self, monkeypatch):
        self.counts = dict.fromkeys(self.NAMES, 0)
        self.arguments = {}
        for name in self.NAMES:
            monkeypatch.setattr(fastloss, name, self._spy(name, getattr(fastloss, name)))

    def _spy(self, name, function):
        def spy(*args, **kwargs):
            self.counts[name] += 1
            self.arguments[name] = (args, kwargs)
            return function(*args, **kwargs)

        return spy

    def called(self):
        return {name: count for name, count in self.counts.items() if count}


def test_forward_calls_the_fused_kernel_once_and_backward_none(monkeypatch):
    calls = _Calls(monkeypatch)
    logits = torch.randn(6, 4, requires_grad=True)
    loss = ft.cross_entropy(logits, torch.tensor([0, 1, 2, 3, 0, 1]))
    assert calls.called() == {"softmax_cross_entropy_with_grad": 1}
    loss.backward()
    assert calls.called() == {"softmax_cross_entropy_with_grad": 1}
    pred = torch.randn(5, requires_grad=True)
    ft.mse_loss(pred, torch.randn(5)).backward()
    assert calls.called() == {"softmax_cross_entropy_with_grad": 1, "mse_with_grad": 1}


def test_cpu_tensors_are_passed_without_copies(monkeypatch):
    calls = _Calls(monkeypatch)
    logits = torch.randn(6, 4, requires_grad=True)
    target = torch.tensor([0, 1, 2, 3, 0, 1])
    loss = ft.cross_entropy(logits, target)
    args, kwargs = calls.arguments["softmax_cross_entropy_with_grad"]
    assert np.shares_memory(args[0], logits.detach().numpy())
    assert np.shares_memory(args[1], target.numpy())
    loss.backward()
    # The kernel wrote the gradient straight into the buffer autograd kept.
    np.testing.assert_allclose(logits.grad.numpy(), kwargs["out"], rtol=1e-6)


@pytest.mark.parametrize("loss_name", ["mse", "cross_entropy"])
def test_no_gradient_when_none_is_needed(monkeypatch, loss_name):
    calls = _Calls(monkeypatch)
    x = torch.randn(5, 3)
    if loss_name == "mse":
        run = lambda x: ft.mse_loss(x, torch.zeros(5, 3))  # noqa: E731
    else:
        run = lambda x: ft.cross_entropy(x, torch.tensor([0, 1, 2, 0, 1]))  # noqa: E731
    plain = run(x)
    with torch.no_grad():
        under_no_grad = run(x.clone().requires_grad_())
    for loss in (plain, under_no_grad):
        assert loss.grad_fn is None and not loss.requires_grad
    assert all(not name.endswith("grad") for name in calls.called())
    torch.testing.assert_close(plain, under_no_grad)


@pytest.mark.parametrize("name", ["cross_entropy", "kl_div"])
def test_a_target_that_requires_grad_is_refused_only_where_grad_is_enabled(name):
    """A learned soft target under torch.no_grad() (an evaluation loop) is an ordinary call, as
    in PyTorch; with grad enabled it is the NotImplementedError."""
    generator = torch.Generator().manual_seed(12)
    logits = torch.randn(5, 4, generator=generator, dtype=torch.float64)
    target = torch.randn(5, 4, generator=generator, dtype=torch.float64).softmax(1)
    input = logits if name == "cross_entropy" else logits.log_softmax(1)
    learned = target.clone().requires_grad_()
    with torch.no_grad():
        torch.testing.assert_close(getattr(ft, name)(input, learned),
                                   getattr(F, name)(input, learned))
    with pytest.raises(NotImplementedError, match="target"):
        getattr(ft, name)(input, learned)


@pytest.mark.parametrize("name", ["cross_entropy", "mse_loss"])
def test_double_backward_is_a_clear_error(name):
    logits = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 1, 2, 0]) if name == "cross_entropy" else torch.zeros(4, 3).double()
    loss = getattr(ft, name)(logits, target)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(loss, logits, create_graph=True)


# forward_ad.make_dual loads its decompositions with the deprecated torch.jit.script.
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("name", ["cross_entropy", "mse_loss"])
def test_forward_mode_ad_is_a_clear_error(name):
    """A tangent would be dropped, as if the loss's derivative were zero."""
    from torch.autograd import forward_ad

    logits = torch.randn(4, 3, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 0]) if name == "cross_entropy" else torch.zeros(4, 3).double()
    with forward_ad.dual_level():
        getattr(ft, name)(logits, target)  # no tangent: an ordinary call
        dual = forward_ad.make_dual(logits, torch.ones_like(logits))
        with pytest.raises(NotImplementedError, match="forward-mode AD"):
            getattr(ft, name)(dual, target)


@pytest.mark.parametrize("transform", ["vmap", "grad", "jacrev"])
@pytest.mark.parametrize("name", ["cross_entropy", "mse_loss"])
def test_torch_func_transforms_are_a_clear_error(name, transform):
    """vmap's batched tensors have no storage for a kernel, and the eager autograd.Function
    cannot be transformed: PyTorch's own errors said neither."""
    logits = torch.randn(2, 4, 3, dtype=torch.float64)
    target = (torch.tensor([[0, 1, 2, 0]] * 2) if name == "cross_entropy"
              else torch.zeros(2, 4, 3).double())
    loss = functools.partial(getattr(ft, name), target=target[0])
    call = {"vmap": lambda: torch.func.vmap(getattr(ft, name))(logits, target),
            "grad": lambda: torch.func.grad(loss)(logits[0]),
            "jacrev": lambda: torch.func.jacrev(loss)(logits[0])}[transform]
    with pytest.raises(NotImplementedError, match="torch.func transforms"):
        call()
    getattr(ft, name)(logits[0], target[0])  # outside a transform: an ordinary call


@pytest.mark.parametrize("name", ["cross_entropy", "mse_loss"])
def test_a_transform_over_the_target_alone_is_a_clear_error(name):
    """vmap over the target with the input captured from outside: the batched target is as
    unreadable to a kernel as a batched input, so it is refused the same way."""
    logits = torch.randn(4, 3, dtype=torch.float64)
    targets = (torch.tensor([[0, 1, 2, 0], [2, 2, 1, 0]]) if name == "cross_entropy"
               else torch.randn(2, 4, 3, dtype=torch.float64))
    with pytest.raises(NotImplementedError, match="torch.func transforms"):
        torch.func.vmap(lambda target: getattr(ft, name)(logits, target))(targets)


def test_tensors_captured_by_a_transform_are_an_ordinary_call():
    x, t = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    got = torch.func.vmap(lambda w: w.sum() + ft.mse_loss(x, t))(torch.ones(2, 5))
    torch.testing.assert_close(got, torch.full((2,), 5.0, dtype=torch.float64)
                               + F.mse_loss(x, t))


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # TorchScript is deprecated
@pytest.mark.parametrize("traced_with_grad", [False, True], ids=["traced-no-grad", "traced-grad"])
def test_jit_trace_computes_each_call(traced_with_grad):
    """A trace records the custom op, not the loss of the tracing input as a constant, and
    gives a gradient whether or not the tracing input required one."""
    logits = torch.randn(6, 5, dtype=torch.float64, requires_grad=traced_with_grad)
    labels = torch.tensor([0, 1, 4, 2, 1, 3])
    traced = torch.jit.trace(ft.CrossEntropyLoss(), (logits, labels))
    other = (3 * logits.detach()).requires_grad_()
    reference = other.detach().clone().requires_grad_()
    loss, want = traced(other, labels), F.cross_entropy(reference, labels)
    torch.testing.assert_close(loss, want)
    loss.backward()
    want.backward()
    torch.testing.assert_close(other.grad, reference.grad)


def test_backward_twice_with_retain_graph_accumulates_exactly():
    logits = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 1, 2, 0])
    loss = ft.cross_entropy(logits, target)
    for _ in range(3):
        loss.backward(retain_graph=True)
    reference = logits.detach().clone().requires_grad_()
    F.cross_entropy(reference, target).backward()
    torch.testing.assert_close(logits.grad, 3 * reference.grad)


LOSSES_OF_A_LEAF = {
    "cross_entropy": (lambda x: ft.cross_entropy(x, torch.tensor([0, 1, 2, 0])),
                      lambda x: F.cross_entropy(x, torch.tensor([0, 1, 2, 0]))),
    "mse_loss": (lambda x: ft.mse_loss(x, torch.ones(4, 3, dtype=torch.float64)),
                 lambda x: F.mse_loss(x, torch.ones(4, 3, dtype=torch.float64))),
}


@pytest.mark.parametrize("name", LOSSES_OF_A_LEAF)
def test_backward_of_a_freed_graph_hands_over_the_stored_gradient(name, monkeypatch):
    # The backward pass of a reduced loss that frees its graph takes the stored gradient
    # itself (no new buffer), scaled in place unless grad_output is 1; a retained graph
    # scales a copy.
    ours, theirs = LOSSES_OF_A_LEAF[name]
    scaled = []
    scale = ft._scale
    monkeypatch.setattr(ft, "_scale", lambda grad, out: scaled.append(out) or scale(grad, out))
    x = torch.randn(4, 3, dtype=torch.float64)
    reference = x.clone().requires_grad_()
    theirs(reference).backward()
    for backward, factor, handed_over in (
        (lambda loss: loss.backward(), 1, True),
        (lambda loss: loss.backward(retain_graph=True), 1, False),
        (lambda loss: (2 * loss).backward(), 2, True),
        (lambda loss: (loss / 3 + loss).backward(), 4 / 3, True),
        (lambda loss: (2 * loss).backward(retain_graph=True), 2, False),
    ):
        leaf = x.clone().requires_grad_()
        backward(ours(leaf))
        assert (scaled.pop() is None) == handed_over
        torch.testing.assert_close(leaf.grad, factor * reference.grad)


@pytest.mark.parametrize("name", ["cross_entropy", "mse_loss", "nll_loss", "l1_loss"])
def test_weighted_losses_of_none_hand_over_the_gradient_scaled(name, monkeypatch):
    # (losses * weights).sum().backward() of reduction="none": the stored gradient scaled in
    # place by each row's (row losses) or element's factor, and handed over; a retained
    # graph scales a copy.
    scaled = []
    scale = ft._scale
    monkeypatch.setattr(ft, "_scale", lambda grad, out: scaled.append(out) or scale(grad, out))
    x = torch.randn(5, 4, dtype=torch.float64)
    labels = torch.tensor([0, 3, 1, 2, 3])
    target = labels if name in ("cross_entropy", "nll_loss") else torch.randn(5, 4).double()
    weights = torch.rand(5 if name in ("cross_entropy", "nll_loss") else (5, 4)).double()
    want_leaf = x.clone().requires_grad_()
    (getattr(F, name)(want_leaf, target, reduction="none") * weights).sum().backward()
    for retain in (False, True):
        leaf = x.clone().requires_grad_()
        (getattr(ft, name)(leaf, target, reduction="none") * weights).sum().backward(
            retain_graph=retain)
        assert (scaled.pop() is None) == (not retain)
        torch.testing.assert_close(leaf.grad, want_leaf.grad)


@pytest.mark.parametrize("shape", [(4, 3), (512, 2048)], ids=["small", "4MiB"])
@pytest.mark.parametrize("loss", ["cross_entropy", "mse_loss"])
def test_handed_over_gradient_serves_an_optimizer(loss, shape):
    """The gradient a CPU loss hands to autograd (held by a NumPy array, which asks for huge
    pages from 4 MiB on) is .grad for an optimizer step, takes the next micro-batch's gradient
    added into it, is clipped in place, and can move to shared memory, as PyTorch's is."""
    labels = torch.randint(0, shape[1], shape[:1], generator=torch.Generator().manual_seed(1))
    target = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    start = torch.randn(shape, generator=torch.Generator().manual_seed(3))

    def train(functional):
        weight = start.clone().requires_grad_()
        optimizer = torch.optim.SGD([weight], lr=0.5, momentum=0.9)
        for _ in range(3):
            optimizer.zero_grad()
            for micro_batch in (weight, 2 * weight):
                if loss == "cross_entropy":
                    functional.cross_entropy(micro_batch, labels).backward()
                else:
                    functional.mse_loss(micro_batch, target).backward()
            torch.nn.utils.clip_grad_norm_([weight], max_norm=1e-3)
            optimizer.step()
        weight.grad.share_memory_()
        return weight.detach(), weight.grad

    for got, want in zip(train(ft), train(F), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", LOSSES_OF_A_LEAF)
def test_gradient_changed_in_place_by_its_user_is_the_users(name):
    # Whatever autograd hands out may be changed in place (a hook, torch.autograd.grad's
    # result, .grad): with a retained graph the next backward pass still gives the loss's
    # gradient, as PyTorch's own losses do.
    ours, theirs = LOSSES_OF_A_LEAF[name]
    x = torch.randn(4, 3, dtype=torch.float64)
    reference = x.clone().requires_grad_()
    theirs(reference).backward()
    want = reference.grad
    for retain in (True, False):
        leaf = x.clone().requires_grad_()
        loss = ours(leaf)
        hook = leaf.register_hook(lambda grad: grad.mul_(3))
        loss.backward(retain_graph=retain)
        torch.testing.assert_close(leaf.grad, 3 * want)
        hook.remove()
        if retain:
            leaf.grad.zero_()
            loss.backward()
            torch.testing.assert_close(leaf.grad, want)
        loss = ours(leaf)
        (grad,) = torch.autograd.grad(loss, leaf, retain_graph=retain)
        grad.zero_()
        if retain:
            torch.testing.assert_close(torch.autograd.grad(loss, leaf)[0], want)
        leaf = x.clone().requires_grad_()
        (ours(leaf) + ours(leaf)).backward(retain_graph=retain)
        torch.testing.assert_close(leaf.grad, 2 * want)


@pytest.mark.parametrize("name", LOSSES_OF_A_LEAF)
def test_batched_gradients_and_saved_tensor_hooks_get_a_scaled_copy(name):
    # Batched vector-Jacobian products (a transform, where .item() has no batching rule) and
    # saved-tensors hooks (which may keep the stored gradient) never get it handed over.
    ours, theirs = LOSSES_OF_A_LEAF[name]
    x = torch.randn(4, 3, dtype=torch.float64)
    ones = torch.ones(2, dtype=torch.float64)
    got, want = (torch.autograd.grad(f(leaf), leaf, ones, is_grads_batched=True)[0]
                 for f, leaf in ((ours, x.clone().requires_grad_()),
                                 (theirs, x.clone().requires_grad_())))
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(torch.autograd.functional.jacobian(ours, x, vectorize=True),
                               torch.autograd.functional.jacobian(theirs, x, vectorize=True))
    kept = []
    leaf = x.clone().requires_grad_()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t, lambda t: t):
        loss = ours(leaf)
    torch.autograd.grad(loss, leaf)[0].zero_()
    assert kept and all(t.abs().sum() > 0 for t in kept)


def test_mse_gradient_reaches_target_only_when_asked():
    pred = torch.randn(4, 2, dtype=torch.float64)
    target = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    ft.mse_loss(pred, target).backward()
    torch.testing.assert_close(target.grad, 2 * (target - pred).detach() / 8)
    assert pred.grad is None


def test_unbatched_and_non_contiguous_input():
    base = torch.randn(5, 8, dtype=torch.float64)
    for logits, target in ((base.t(), torch.arange(8) % 5), (base[1], torch.tensor(3))):
        for reduction in REDUCTIONS:
            ours, ref = (logits.clone().requires_grad_() for _ in range(2))
            loss = ft.cross_entropy(ours, target, reduction=reduction)
            expected = F.cross_entropy(ref, target, reduction=reduction)
            torch.testing.assert_close(loss, expected)
            loss.sum().backward()
            expected.sum().backward()
            torch.testing.assert_close(ours.grad, ref.grad)


def test_tensors_with_a_negative_bit_are_read_as_their_values():
    # z.conj().imag is a lazily negated view of z.imag: its memory holds the values' negatives.
    z = torch.complex(torch.randn(6, 4), torch.randn(6, 4))
    logits, target = z.conj().imag, torch.complex(torch.randn(6, 4), torch.randn(6, 4)).conj().imag
    assert logits.is_neg() and target.is_neg()
    probs = target.softmax(-1)
    for ours, expected in (
        (ft.cross_entropy(logits, probs), F.cross_entropy(-z.imag, probs)),
        (ft.mse_loss(logits, target), F.mse_loss(-z.imag, target.resolve_neg())),
    ):
        torch.testing.assert_close(ours, expected)


@pytest.mark.parametrize("name", ["cross_entropy", "nll_loss", "multi_margin_loss"])
@pytest.mark.parametrize("target_shape", [(), (1,)])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_unbatched_input_takes_a_label_of_shape_0_or_1(name, target_shape, reduction):
    # PyTorch takes an unbatched label as () or (1,); the multi-class hinge keeps (1,)'s
    # batch axis in its "none" result. (PyTorch's backward of cross-entropy and nll
    # refuses a (1,) label; the gradient is the () label's.)
    logits = torch.randn(5, dtype=torch.float64)
    target = torch.tensor(3).reshape(target_shape)
    ours, ref = (logits.clone().requires_grad_() for _ in range(2))
    loss = getattr(ft, name)(ours, target, reduction=reduction)
    expected = getattr(F, name)(ref.detach(), target, reduction=reduction)
    assert loss.shape == expected.shape
    torch.testing.assert_close(loss, expected)
    loss.sum().backward()
    getattr(F, name)(ref, target.reshape(()), reduction=reduction).backward()
    torch.testing.assert_close(ours.grad, ref.grad)


def test_unbatched_input_refuses_other_label_shapes():
    with pytest.raises(ValueError, match=r"shape \(\) or \(1,\)"):
        ft.cross_entropy(torch.randn(5), torch.tensor([1, 2]))


def test_empty_batch():
    logits = torch.zeros(0, 4, requires_grad=True)
    target = torch.zeros(0, dtype=torch.long)
    assert torch.isnan(ft.cross_entropy(logits, target))
    loss = ft.cross_entropy(logits, target, reduction="sum")
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad.shape == (0, 4)


def test_modules_match_torch():
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(10, 4, generator=generator)
    target = torch.randint(0, 4, (10,), generator=generator)
    weight = torch.rand(4, generator=generator) + 0.5
    options = {"ignore_index": 1, "reduction": "sum", "label_smoothing": 0.1}
    ours = ft.CrossEntropyLoss(weight, **options)
    theirs = torch.nn.CrossEntropyLoss(weight, **options)
    torch.testing.assert_close(ours(logits, target), theirs(logits, target))
    assert "weight" in ours.state_dict()
    assert "label_smoothing=0.1" in repr(ours)
    pred, goal = torch.randn(3, 2), torch.randn(3, 2)
    torch.testing.assert_close(ft.MSELoss(reduction="none")(pred, goal),
                               torch.nn.MSELoss(reduction="none")(pred, goal))


# --- errors ----------------------------------------------------------------------------------


def test_class_axis_other_than_last_is_refused():
    logits = torch.randn(2, 3, 4, requires_grad=True)
    with pytest.raises(ValueError, match="class axis last"):
        ft.cross_entropy(logits, torch.zeros(2, 4, dtype=torch.long))


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: ft.mse_loss(torch.randn(3, 1), torch.randn(3)), ValueError, "broadcast"),
        (lambda: ft.mse_loss(torch.randn(3), torch.randn(3).double()), TypeError, "dtype"),
        (lambda: ft.mse_loss(torch.arange(3), torch.arange(3)), TypeError, "floating-point"),
        (lambda: ft.mse_loss(torch.randn(3), [0.0, 1.0, 2.0]), TypeError, "torch.Tensor"),
        (lambda: ft.mse_loss(torch.randn(3), torch.randn(3, device="meta")), TypeError, "meta"),
        (lambda: ft.mse_loss(torch.randn(3), torch.randn(3), reduction="avg"), ValueError,
         "reduction"),
        (lambda: ft.cross_entropy(torch.randn(2, 3), torch.tensor([0, 3])), ValueError, "3"),
        (lambda: ft.cross_entropy(torch.randn(2, 3), torch.tensor([0, 1, 2])), ValueError,
         "shape"),
        (lambda: ft.cross_entropy(torch.randn(2, 3), torch.rand(2, 3, requires_grad=True)),
         NotImplementedError, "detach"),
        (lambda: ft.cross_entropy(torch.randn(2, 3), torch.tensor([0, 1]), label_smoothing=1.5),
         ValueError, "label_smoothing"),
        (lambda: ft.CrossEntropyLoss(reduction="avg"), ValueError, "reduction"),
        # PyTorch refuses a weight that requires grad too; detaching it would drop its gradient.
        (lambda: ft.cross_entropy(torch.randn(2, 3, requires_grad=True), torch.tensor([0, 1]),
                                  torch.rand(3, requires_grad=True)),
         NotImplementedError, "weight"),
        (lambda: ft.nll_loss(torch.randn(2, 3, requires_grad=True), torch.tensor([0, 1]),
                             torch.rand(3, requires_grad=True)), NotImplementedError, "weight"),
        (lambda: ft.multi_margin_loss(torch.randn(2, 3, requires_grad=True), torch.tensor([0, 1]),
                                      weight=torch.rand(3, requires_grad=True)),
         NotImplementedError, "weight"),
        (lambda: ft.cross_entropy(torch.randn(2, 3), torch.tensor([0, 2**64 - 1],
                                                                  dtype=torch.uint64)),
         TypeError, "uint64"),
        # As the modules: the option is checked, not converted with float().
        (lambda: ft.huber_loss(torch.randn(3), torch.randn(3), delta="0.5"), TypeError, "delta"),
        (lambda: ft.smooth_l1_loss(torch.randn(3), torch.randn(3), beta=None), TypeError,
         "beta"),
        (lambda: ft.huber_loss(torch.randn(3), torch.randn(3), delta=10**400), ValueError,
         "delta"),
        # The modules check their option when built, as torch.nn's do.
        (lambda: ft.HuberLoss(delta=0.0), ValueError, "delta must be a finite number > 0"),
        (lambda: ft.SmoothL1Loss(beta=-1.0), ValueError, "beta must be a finite number >= 0"),
    ],
    ids=[
        "mse-shapes", "mse-dtypes", "mse-integers", "mse-list", "target-device",
        "reduction", "label-out-of-range", "ce-target-shape", "soft-target-grad", "smoothing",
        "module-reduction", "ce-weight-grad", "nll-weight-grad", "multi-margin-weight-grad",
        "uint64-labels", "huber-delta-string", "smooth-l1-beta-none", "huber-delta-huge",
        "huber-module-delta", "smooth-l1-module-beta",
    ],
)
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_meta_tensors_give_shapes_only():
    # The custom ops' fake implementations answer for the meta device, as PyTorch's losses do.
    logits = torch.randn(5, 3, device="meta", requires_grad=True)
    loss = ft.cross_entropy(logits, torch.zeros(5, dtype=torch.long, device="meta"),
                            reduction="none")
    assert loss.device.type == "meta" and loss.shape == (5,)
    loss = ft.mse_loss(logits, torch.randn(5, 3, device="meta"))
    loss.backward()
    assert loss.shape == () and logits.grad.shape == (5, 3) and logits.grad.device.type == "meta"


# --- CUDA: the DLPack path on PyTorch's stream ------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda_available(), reason="no CUDA device")
@pytest.mark.parametrize("dtype", FULL + HALF, ids=str)
def test_cuda_on_a_side_stream(dtype):
    generator = torch.Generator().manual_seed(4)
    logits = torch.randn(300, 130, generator=generator).to("cuda", dtype)
    target = torch.randint(0, 130, (300,), generator=generator).cuda()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        ours = logits.clone().requires_grad_()
        loss = ft.cross_entropy(ours, target)
        loss.backward()
    torch.cuda.current_stream().wait_stream(stream)
    reference = logits.double().requires_grad_()
    expected = F.cross_entropy(reference, target)
    expected.backward()
    assert_close(loss, expected.to(dtype), dtype)
    assert_close(ours.grad, reference.grad.to(dtype), dtype)


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda_available(), reason="no CUDA device")
def test_cuda_tensors_are_passed_without_copies(monkeypatch):
    calls = _Calls(monkeypatch)
    logits = torch.randn(8, 5, device="cuda", requires_grad=True)
    ft.cross_entropy(logits, torch.arange(8, device="cuda") % 5).backward()
    args, kwargs = calls.arguments["softmax_cross_entropy_with_grad"]
    assert args[0].data.ptr == logits.data_ptr()
    assert type(kwargs["out"]).__module__.startswith("cupy")


# --- the other elementwise losses ------------------------------------------------------------

# functional name: (options, with array options as their shapes; kind of inputs)
ELEMENTWISE = {
    "l1_loss": ({}, "normal"),
    "smooth_l1_loss": ({"beta": 0.5}, "normal"),
    "huber_loss": ({"delta": 0.75}, "normal"),
    "binary_cross_entropy_with_logits": ({"weight": (1, 5), "pos_weight": (5,)}, "logits"),
    "binary_cross_entropy": ({"weight": (4, 5)}, "probs"),
    "kl_div": ({"log_target": True}, "logits"),
}


def _elementwise_inputs(name, dtype, device="cpu"):
    generator = torch.Generator().manual_seed(3)
    options, kind = ELEMENTWISE[name]
    x = torch.randn(4, 5, generator=generator, dtype=torch.float64)
    target = torch.randn(4, 5, generator=generator, dtype=torch.float64)
    if kind == "logits":
        x, target = 3 * x, torch.rand(4, 5, generator=generator, dtype=torch.float64)
    elif kind == "probs":
        x = torch.rand(4, 5, generator=generator, dtype=torch.float64) * 0.98 + 0.01
        target = torch.rand(4, 5, generator=generator, dtype=torch.float64)
    options = {k: torch.rand(v, generator=generator, dtype=torch.float64).to(device, dtype) + 0.5
               if isinstance(v, tuple) else v for k, v in options.items()}
    return x.to(device, dtype), target.to(device, dtype), options


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", FULL + HALF, ids=str)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_elementwise_losses_match_torch(name, device, dtype, reduction):
    x, target, options = _elementwise_inputs(name, dtype, device)
    results = []
    for module, cast in ((ft, dtype), (F, torch.float64)):
        leaf = x.to(cast).requires_grad_()
        extra = {k: v.to(cast) if isinstance(v, torch.Tensor) else v for k, v in options.items()}
        loss = getattr(module, name)(leaf, target.to(cast), reduction=reduction, **extra)
        grad_output = torch.linspace(-1.0, 2.0, loss.numel(), dtype=torch.float64)
        grad_output = grad_output.to(device, cast).reshape(loss.shape)
        results.append((loss, *torch.autograd.grad(loss, leaf, grad_output)))
    for actual, expected in zip(*results, strict=True):
        assert_close(actual, expected.to(dtype), dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_elementwise_gradcheck(name, reduction):
    x, target, options = _elementwise_inputs(name, torch.float64)
    inputs = (x.requires_grad_(),)
    function = getattr(ft, name)
    if name in ("l1_loss", "smooth_l1_loss", "huber_loss"):
        inputs += (target.requires_grad_(),)
        check = lambda p, t: function(p, t, reduction=reduction, **options)  # noqa: E731
    else:
        check = lambda p: function(p, target, reduction=reduction, **options)  # noqa: E731
    assert torch.autograd.gradcheck(check, inputs)


def test_elementwise_modules_match_torch():
    x, target, _ = _elementwise_inputs("l1_loss", torch.float64)
    logits, labels, options = _elementwise_inputs("binary_cross_entropy_with_logits",
                                                  torch.float64)
    probs, goals, bce = _elementwise_inputs("binary_cross_entropy", torch.float64)
    pairs = [
        (ft.L1Loss(reduction="sum"), torch.nn.L1Loss(reduction="sum"), x, target),
        (ft.SmoothL1Loss(beta=0.5), torch.nn.SmoothL1Loss(beta=0.5), x, target),
        (ft.HuberLoss("none", 0.75), torch.nn.HuberLoss("none", 0.75), x, target),
        (ft.BCEWithLogitsLoss(options["weight"], pos_weight=options["pos_weight"]),
         torch.nn.BCEWithLogitsLoss(options["weight"], pos_weight=options["pos_weight"]),
         logits, labels),
        (ft.BCELoss(bce["weight"], reduction="sum"),
         torch.nn.BCELoss(bce["weight"], reduction="sum"), probs, goals),
        (ft.KLDivLoss(reduction="batchmean"), torch.nn.KLDivLoss(reduction="batchmean"),
         logits.log_softmax(1), labels),
        (ft.KLDivLoss(reduction="sum", log_target=True),
         torch.nn.KLDivLoss(reduction="sum", log_target=True),
         logits.log_softmax(1), (2 * logits).log_softmax(1)),
    ]
    for ours, theirs, input, goal in pairs:
        torch.testing.assert_close(ours(input, goal), theirs(input, goal))
        assert repr(ours).startswith(type(ours).__name__)


# PyTorch's (recent) weight= of the losses of a difference: "mean" is over weight.sum() for mse and
# l1, over the count for huber.
WEIGHTED = {"mse_loss": {}, "l1_loss": {}, "huber_loss": {"delta": 0.75}}


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", FULL, ids=str)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(WEIGHTED))
def test_weighted_losses_match_torch_with_every_gradient(name, device, dtype, reduction):
    generator = torch.Generator().manual_seed(8)
    x, target = torch.randn(2, 4, 5, generator=generator, dtype=torch.float64).to(device)
    weight = torch.rand(4, 5, generator=generator, dtype=torch.float64).to(device) * 2
    results = []
    for module, cast in ((ft, dtype), (F, torch.float64)):
        leaves = [v.to(cast).requires_grad_() for v in (x, target, weight)]
        loss = getattr(module, name)(*leaves[:2], reduction=reduction, weight=leaves[2],
                                     **WEIGHTED[name])
        grad_output = torch.linspace(-1.0, 2.0, loss.numel(), dtype=cast, device=device)
        results.append((loss, *torch.autograd.grad(loss, leaves, grad_output.reshape(loss.shape))))
    for actual, expected in zip(*results, strict=True):
        assert_close(actual, expected.to(dtype), dtype)


@pytest.mark.parametrize("name", sorted(WEIGHTED))
def test_weighted_losses_gradcheck_and_refuse_bad_weights(name):
    generator = torch.Generator().manual_seed(9)
    x, target, weight = torch.rand(3, 3, 4, generator=generator, dtype=torch.float64)
    function = getattr(ft, name)
    check = lambda *leaves: function(*leaves[:2], weight=leaves[2], **WEIGHTED[name])  # noqa: E731
    assert torch.autograd.gradcheck(check, tuple(v.requires_grad_() for v in (x, target, weight)))
    with pytest.raises(ValueError, match=r"weight must have the shape of input \(3, 4\)"):
        function(x, target, weight=weight[:, :1])
    with pytest.raises(TypeError, match="weight must be a real torch.Tensor"):
        function(x, target, weight=weight.tolist())
    with pytest.raises(TypeError, match="input must be a torch.Tensor"):
        function(x.tolist(), target, weight=weight)
    # An integer mask is promoted, as PyTorch does.
    mask = torch.arange(12).reshape(3, 4) % 3
    torch.testing.assert_close(function(x, target, weight=mask, **WEIGHTED[name]),
                               getattr(F, name)(x, target, weight=mask, **WEIGHTED[name]))
    with pytest.raises(ValueError, match="reduction"):
        function(x, target, weight=weight, reduction="batchmean")


def test_bce_does_not_differentiate_its_target_or_weights():
    logits = torch.randn(3, 2, requires_grad=True)
    with pytest.raises(NotImplementedError, match="target"):
        ft.binary_cross_entropy_with_logits(logits, torch.rand(3, 2, requires_grad=True))
    with pytest.raises(NotImplementedError, match="weight"):
        ft.binary_cross_entropy(torch.rand(3, 2), torch.rand(3, 2),
                                torch.rand(3, 2, requires_grad=True))
    with pytest.raises(TypeError, match="pos_weight"):
        ft.binary_cross_entropy_with_logits(logits, torch.rand(3, 2), pos_weight=[1.0, 2.0])


@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.int64, torch.float64])
def test_bce_weights_of_any_real_dtype_are_taken_as_pytorch_takes_them(dtype):
    generator = torch.Generator().manual_seed(3)
    probs, target = torch.rand(2, 3, 4, generator=generator)
    weight = torch.tensor([1, 0, 2, 3]).to(dtype)
    logit_options = {"weight": weight} if dtype == torch.bool else {"weight": weight,
                                                                     "pos_weight": weight}
    for name, first, options in (("binary_cross_entropy", probs, {"weight": weight}),
                                 ("binary_cross_entropy_with_logits", probs * 6 - 3,
                                  logit_options)):
        x = first.clone().requires_grad_()
        expected_x = first.clone().requires_grad_()
        actual = getattr(ft, name)(x, target, **options)
        expected = getattr(F, name)(expected_x, target, **options)
        actual.backward()
        expected.backward()
        assert actual.dtype == expected.dtype == torch.float32
        torch.testing.assert_close(actual, expected)
        torch.testing.assert_close(x.grad, expected_x.grad)
    with pytest.raises(TypeError, match="pos_weight must be a non-bool real torch.Tensor"):
        ft.binary_cross_entropy_with_logits(probs, target, pos_weight=weight.bool())
    with pytest.raises(TypeError, match="weight must be a real torch.Tensor"):
        ft.binary_cross_entropy(probs, target, weight.to(torch.complex64))


def test_autocast_leaves_a_float64_input_and_its_dtype_rule_alone():
    # Autocast never narrows float64, so a float32 target is still another dtype.
    x, t = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with pytest.raises(TypeError, match="target must have input's dtype torch.float64"):
            ft.mse_loss(x, t)


def test_bfloat16_gradient_is_rounded_before_it_is_scaled():
    # The kernel's float32 gradient of a bfloat16 input is rounded once, in the forward
    # pass; backward scales that bfloat16 gradient, as for every other dtype.
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(4096, generator=generator).to(torch.bfloat16)
    t = torch.randn(4096, generator=generator).to(torch.bfloat16)
    once, scaled = x.clone().requires_grad_(), x.clone().requires_grad_()
    ft.mse_loss(once, t, reduction="sum").backward()
    (ft.mse_loss(scaled, t, reduction="sum") * 3.3).backward()
    assert once.grad.dtype == scaled.grad.dtype == torch.bfloat16
    torch.testing.assert_close(scaled.grad, once.grad * torch.tensor(3.3, dtype=torch.bfloat16),
                               rtol=0, atol=0)


# --- NLL ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_nll_loss_matches_torch_and_gradchecks(weighted, reduction):
    generator = torch.Generator().manual_seed(5)
    log_probs = torch.randn(9, 6, generator=generator, dtype=torch.float64).log_softmax(1)
    target = torch.tensor([0, 5, -100, 3, 2, 1, 4, -100, 5])
    weight = torch.rand(6, generator=generator, dtype=torch.float64) + 0.5 if weighted else None
    results = []
    for module in (ft, F):
        leaf = log_probs.clone().requires_grad_()
        loss = module.nll_loss(leaf, target, weight, reduction=reduction)
        results.append((loss, *torch.autograd.grad(loss.sum(), leaf)))
    for actual, expected in zip(*results, strict=True):
        torch.testing.assert_close(actual, expected)
    leaf = log_probs.clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x: ft.nll_loss(x, target, weight, reduction=reduction), (leaf,))
    module = ft.NLLLoss(weight, reduction=reduction)
    torch.testing.assert_close(module(log_probs, target),
                               torch.nn.NLLLoss(weight, reduction=reduction)(
                                   log_probs, target))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nll_loss_ignores_a_chosen_class(reduction):
    # ignore_index may name a real class: its rows add nothing and leave the mean's divisor.
    log_probs = torch.tensor([[1.0, 2.0, 3.0], [0.5, 0.1, 0.2], [0.3, 0.9, 0.4]],
                             dtype=torch.float64).log_softmax(1)
    target = torch.tensor([0, 2, 1])
    results = []
    for module in (ft, F):
        leaf = log_probs.clone().requires_grad_()
        loss = module.nll_loss(leaf, target, ignore_index=2, reduction=reduction)
        results.append((loss, *torch.autograd.grad(loss.sum(), leaf)))
    for actual, expected in zip(*results, strict=True):
        torch.testing.assert_close(actual, expected)
    torch.testing.assert_close(ft.NLLLoss(ignore_index=2, reduction=reduction)(log_probs, target),
                               torch.nn.NLLLoss(ignore_index=2, reduction=reduction)(
                                   log_probs, target))


def test_nll_loss_refuses_float_targets():
    with pytest.raises(TypeError, match="must be integers"):
        ft.nll_loss(torch.randn(3, 4), torch.rand(3))


@pytest.mark.parametrize("shapes", [((3, 4), (3,)), ((4,), ()), ((4,), (1,))],
                         ids=["batched", "unbatched", "unbatched-(1,)"])
def test_cross_entropy_refuses_float_class_indices_by_dtype(shapes):
    # A float target of the labels' shape is class indices of the wrong dtype, a TypeError
    # (PyTorch: "expected target dtype to be Long"), not probabilities of the wrong shape.
    input_shape, target_shape = shapes
    with pytest.raises(TypeError, match=r"holds class indices, which must be integers.*long"):
        ft.cross_entropy(torch.randn(input_shape), torch.zeros(target_shape))


@pytest.mark.parametrize("name, option", [
    ("huber_loss", dict(delta=0.5)), ("smooth_l1_loss", dict(beta=0.5)),
    ("cross_entropy", dict(label_smoothing=0.1)), ("multi_margin_loss", dict(margin=0.5)),
    ("multi_margin_loss", dict(p=2)),
], ids=["delta", "beta", "label_smoothing", "margin", "p"])
def test_number_options_may_be_0d_tensors_as_in_torch(name, option):
    x = torch.randn(3, 4, dtype=torch.float64)
    target = torch.randn(3, 4, dtype=torch.float64) if "l1" in name or "huber" in name else (
        torch.tensor([0, 1, 2]))
    ((key, value),) = option.items()
    torch.testing.assert_close(getattr(ft, name)(x, target, **{key: torch.tensor(value)}),
                               getattr(F, name)(x, target, **option))
    with pytest.raises(TypeError, match=key):
        getattr(ft, name)(x, target, **{key: torch.tensor(True)})


def test_ignore_index_may_be_a_0d_integer_tensor_as_in_torch():
    logits, target = torch.randn(5, 4, dtype=torch.float64), torch.tensor([0, 3, 1, 3, 2])
    for ignore_index in (torch.tensor(3), np.array(3, np.int32), np.int64(3)):
        torch.testing.assert_close(
            ft.cross_entropy(logits, target, ignore_index=ignore_index),
            F.cross_entropy(logits, target, ignore_index=3))
    with pytest.raises(TypeError, match="ignore_index must be an int"):
        ft.cross_entropy(logits, target, ignore_index=torch.tensor(True))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("p", [1, 2])
def test_multi_margin_loss_matches_torch_and_gradchecks(p, reduction):
    generator = torch.Generator().manual_seed(6)
    scores = torch.randn(9, 6, generator=generator, dtype=torch.float64) * 0.5
    target = torch.tensor([0, 5, 2, 3, 2, 1, 4, 0, 5])
    weight = torch.rand(6, generator=generator, dtype=torch.float64) + 0.5
    results = []
    for module in (ft, F):
        leaf = scores.clone().requires_grad_()
        loss = module.multi_margin_loss(leaf, target, p, 0.7, weight, reduction=reduction)
        results.append((loss, *torch.autograd.grad(loss.sum(), leaf)))
    for actual, expected in zip(*results, strict=True):
        torch.testing.assert_close(actual, expected)
    leaf = scores.clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x: ft.multi_margin_loss(x, target, p, 0.7, weight, reduction=reduction),
        (leaf,))
    ours = ft.MultiMarginLoss(p, 0.7, weight, reduction=reduction)
    theirs = torch.nn.MultiMarginLoss(p, 0.7, weight, reduction=reduction)
    torch.testing.assert_close(ours(scores, target), theirs(scores, target))
