"""fastloss.torch under torch.compile: every loss is a custom op, traced without a graph break.

Most cases compile with the "aot_eager" backend: it traces forward and backward through the ops'
fake implementations and autograd formulas exactly as Inductor does, without generating code;
one training step goes through Inductor itself. Results are compared with
``torch.nn.functional`` in float64.
"""

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch._dynamo.testing import CompileCounterWithBackend  # noqa: E402

import fastloss.torch as ft  # noqa: E402

CLASSES, FEATURES = 7, 12
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def _classes(rng_logits):
    return torch.randint(0, CLASSES, rng_logits.shape[:1], device=rng_logits.device)


def _unit(logits):
    return torch.rand_like(logits)


def _normal(logits):
    return torch.randn_like(logits)


# (fastloss function, PyTorch function, target of a batch of outputs)
LOSSES = {
    "cross_entropy": (ft.cross_entropy, F.cross_entropy, _classes),
    "cross_entropy_smoothed": (
        lambda x, y: ft.cross_entropy(x, y, label_smoothing=0.1, reduction="sum"),
        lambda x, y: F.cross_entropy(x, y, label_smoothing=0.1, reduction="sum"), _classes),
    "nll_loss": (lambda x, y: ft.nll_loss(x.log_softmax(1), y),
                 lambda x, y: F.nll_loss(x.log_softmax(1), y), _classes),
    "multi_margin_loss": (lambda x, y: ft.multi_margin_loss(x, y, 2, 0.5),
                          lambda x, y: F.multi_margin_loss(x, y, 2, 0.5), _classes),
    "mse_loss": (ft.mse_loss, F.mse_loss, _normal),
    "l1_loss": (ft.l1_loss, F.l1_loss, _normal),
    "smooth_l1_loss": (lambda x, y: ft.smooth_l1_loss(x, y, beta=0.5),
                       lambda x, y: F.smooth_l1_loss(x, y, beta=0.5), _normal),
    "huber_loss": (lambda x, y: ft.huber_loss(x, y, delta=0.5),
                   lambda x, y: F.huber_loss(x, y, delta=0.5), _normal),
    "binary_cross_entropy_with_logits": (ft.binary_cross_entropy_with_logits,
                                         F.binary_cross_entropy_with_logits, _unit),
    "kl_div": (lambda x, y: ft.kl_div(x.log_softmax(1), y, reduction="batchmean"),
               lambda x, y: F.kl_div(x.log_softmax(1), y, reduction="batchmean"), _unit),
    "binary_cross_entropy": (lambda x, y: ft.binary_cross_entropy(torch.sigmoid(x), y),
                             lambda x, y: F.binary_cross_entropy(torch.sigmoid(x), y), _unit),
}


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _device(name):
    if name == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return torch.device(name)


def _model(device, dtype=torch.float64):
    torch.manual_seed(0)
    return torch.nn.Linear(FEATURES, CLASSES, dtype=dtype, device=device)


def _step(model, forward):
    """``forward()``'s loss and the model's gradients after its backward pass."""
    model.zero_grad()
    value = forward()
    value.backward()
    return value.detach(), [p.grad.clone() for p in model.parameters()]


def _batch(device, rows, target, dtype=torch.float64):
    generator = torch.Generator(device="cpu").manual_seed(rows)
    x = torch.randn(rows, FEATURES, dtype=dtype, generator=generator).to(device)
    torch.manual_seed(rows)
    return x, target(torch.empty(rows, CLASSES, dtype=dtype, device=device))


def _assert_same(ours, theirs, tolerance=1e-12):
    (loss, grads), (expected_loss, expected_grads) = ours, theirs
    torch.testing.assert_close(loss, expected_loss, rtol=tolerance, atol=tolerance)
    for grad, expected in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, expected, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(LOSSES))
def test_fullgraph_training_step_matches_torch(name, device):
    device = _device(device)
    ours, theirs, target = LOSSES[name]
    model = _model(device)
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(lambda x, y: ours(model(x), y), backend=counter, fullgraph=True)
    x, y = _batch(device, 16, target)

    expected = _step(model, lambda: theirs(model(x), y))
    _assert_same(_step(model, lambda: ours(model(x), y)), expected)  # eager
    _assert_same(_step(model, lambda: compiled(x, y)), expected)
    assert counter.frame_count == 1


def test_inductor_training_step_matches_torch():
    model = _model("cpu")
    compiled = torch.compile(lambda x, y: ft.cross_entropy(model(x), y), fullgraph=True)
    x, y = _batch("cpu", 32, _classes)
    expected = _step(model, lambda: F.cross_entropy(model(x), y))
    _assert_same(_step(model, lambda: compiled(x, y)), expected)


@pytest.mark.parametrize("name", ["cross_entropy", "mse_loss", "binary_cross_entropy_with_logits"])
def test_dynamic_batch_sizes_compile_once(name):
    ours, theirs, target = LOSSES[name]
    model = _model("cpu")
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(lambda x, y: ours(model(x), y), backend=counter, fullgraph=True,
                             dynamic=True)
    compiles = []
    for rows in (8, 13, 21, 34):
        x, y = _batch("cpu", rows, target)
        _assert_same(_step(model, lambda: compiled(x, y)),  # noqa: B023 (called at once)
                     _step(model, lambda: theirs(model(x), y)))  # noqa: B023
        compiles.append(counter.frame_count)
    # Dynamo may restart its first trace (two counts); no batch size after it compiles.
    assert compiles[0] >= 1 and compiles[1:] == compiles[:1] * 3


class _Classifier(torch.nn.Module):
    def __init__(self, loss):
        super().__init__()
        self.linear = _model("cpu")
        self.loss = loss

    def forward(self, x, y):
        return self.loss(self.linear(x), y)


@pytest.mark.parametrize("module", [
    ft.CrossEntropyLoss(weight=torch.linspace(0.5, 2.0, CLASSES, dtype=torch.float64),
                        label_smoothing=0.05),
    ft.HuberLoss(delta=0.3),
    ft.BCEWithLogitsLoss(pos_weight=torch.full((CLASSES,), 2.0, dtype=torch.float64)),
], ids=lambda module: type(module).__name__)
def test_loss_modules_inside_a_compiled_module(module):
    reference = {
        "CrossEntropyLoss": lambda out, y: F.cross_entropy(
            out, y, weight=module.weight, label_smoothing=0.05),
        "HuberLoss": lambda out, y: F.huber_loss(out, y, delta=0.3),
        "BCEWithLogitsLoss": lambda out, y: F.binary_cross_entropy_with_logits(
            out, y, pos_weight=module.pos_weight),
    }[type(module).__name__]
    target = _classes if isinstance(module, ft.CrossEntropyLoss) else _unit
    classifier = _Classifier(module)
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(classifier, backend=counter, fullgraph=True)
    x, y = _batch("cpu", 16, target)
    expected = _step(classifier.linear, lambda: reference(classifier.linear(x), y))
    _assert_same(_step(classifier.linear, lambda: compiled(x, y)), expected)
    assert counter.frame_count == 1


@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("name", ["cross_entropy", "mse_loss", "binary_cross_entropy_with_logits"])
def test_bfloat16_autocast_on_the_cpu_computes_in_float32_as_torch(name, compile):
    ours, theirs, target = LOSSES[name]
    model = _model("cpu", torch.float32)
    x, y = _batch("cpu", 16, target, torch.float32)

    def autocast_forward(loss):
        def forward():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return loss(model(x), y)
        return torch.compile(forward, backend="aot_eager", fullgraph=True) if compile else forward

    loss, grads = _step(model, autocast_forward(ours))
    expected_loss, expected_grads = _step(model, autocast_forward(theirs))
    assert loss.dtype == expected_loss.dtype == torch.float32
    _assert_same((loss, grads), (expected_loss, expected_grads), tolerance=1e-5)


def test_compiled_autograd_traces_the_eager_backward():
    # A loss called eagerly, its backward pass compiled (compiled autograd, fullgraph): the
    # eager backward's check for handing over its stored gradient reads no value while traced.
    compiled_autograd = pytest.importorskip("torch._dynamo.compiled_autograd")
    if not hasattr(compiled_autograd, "_enable"):
        pytest.skip("this PyTorch has no compiled_autograd._enable")
    x = torch.randn(6, CLASSES, dtype=torch.float64)
    labels = _classes(x)
    ours, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    loss = ft.cross_entropy(ours, labels)
    with compiled_autograd._enable(torch.compile(backend="eager", fullgraph=True)):
        loss.backward()
    F.cross_entropy(theirs, labels).backward()
    torch.testing.assert_close(ours.grad, theirs.grad)
