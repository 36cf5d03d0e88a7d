"""Backend selection, availability reporting, lazy imports and the command line."""

import importlib.util
import inspect
import subprocess
import sys

import numpy as np
import pytest

import fastloss as fl
from fastloss import _registry
from fastloss.backends import CONTRACTS


class FakeDeviceArray:
    """Quacks like a CUDA array: enough for dispatch to see device memory."""

    __cuda_array_interface__ = {"shape": (2, 2), "typestr": "<f4", "data": (0, False),
                                "version": 3}
    shape, dtype = (2, 2), np.dtype(np.float32)


def test_import_loads_neither_numba_nor_cupy():
    code = "import sys, fastloss; print('numba' in sys.modules, 'cupy' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.split() == ["False", "False"]


def test_a_call_on_another_backend_does_not_import_numba():
    code = """if True:
        import sys, numpy as np, fastloss as fl
        fl.mse(np.zeros(3), np.zeros(3), backend="numpy")
        fl.softmax(np.zeros((2, 3)), backend="numpy")
        for name in ("cuda", "nope"):
            try:
                fl.nll(np.zeros((2, 3)), np.zeros(2, np.int64), backend=name)
            except ValueError:
                pass  # the backend is not available, or not one
        print('numba' in sys.modules)
    """
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.split() == ["False"]


def test_auto_picks_numba_for_host_arrays_when_installed():
    expected = "numba" if _registry.backend_status("numba")[0] else "numpy"
    assert _registry.resolve("auto", np.zeros(3)) == expected


def test_auto_picks_cuda_for_device_arrays():
    if _registry.backend_status("cuda")[0]:
        assert _registry.resolve("auto", np.zeros(2), FakeDeviceArray()) == "cuda"
    else:
        with pytest.raises(ValueError, match="backend='cuda' is not available"):
            _registry.resolve("auto", np.zeros(2), FakeDeviceArray())


def test_every_backend_reports_status_and_reason():
    for name in _registry.BACKENDS:
        ok, detail = _registry.backend_status(name)
        assert isinstance(ok, bool) and detail
    assert _registry.backend_status("numpy")[0]


@pytest.mark.skipif(_registry.backend_status("cuda")[0], reason="a CUDA device is present")
def test_unavailable_cuda_says_why():
    with pytest.raises(ValueError, match="backend='cuda' is not available: .+"):
        fl.mse(np.zeros(3), np.zeros(3), backend="cuda")


def test_device_array_on_a_cpu_backend_is_a_type_error():
    with pytest.raises(TypeError, match=r"pred .*GPU memory.*backend='numpy'.*cupy\.asnumpy"):
        fl.mse(FakeDeviceArray(), np.zeros((2, 2), np.float32), backend="numpy")


def test_same_kernel_object_is_reused():
    assert _registry.kernel("mse", "numpy") is _registry.kernel("mse", "numpy")


def test_every_loss_has_every_backend_registered():
    losses = {loss for loss, _ in _registry._KERNELS}
    assert {(loss, name) for loss in losses for name in _registry.BACKENDS} == set(
        _registry._KERNELS
    )


def _parameters(function):
    """``function``'s parameters as (name, kind, default), without annotations."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


@pytest.mark.parametrize("name, backend", sorted(_registry._KERNELS) + sorted(_registry._HOOKS))
def test_every_backend_function_has_its_contracts_signature(name, backend):
    if backend == "cuda" and importlib.util.find_spec("cupy") is None:
        pytest.skip("cupy is not installed (the cuda backend's modules import it)")
    function = (_registry.kernel if (name, backend) in _registry._KERNELS else _registry.hook)(
        name, backend)
    expected = _parameters(CONTRACTS[name].__call__)[1:]  # without self
    assert _parameters(function) == expected


def test_every_registered_name_has_a_contract():
    assert {name for name, _ in [*_registry._KERNELS, *_registry._HOOKS]} == set(CONTRACTS)


def test_array_likes_are_accepted_on_the_cpu():
    assert fl.mse([1.0, 2.0], [1.0, 4.0], backend="numpy") == 2.0


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("kind", ["matrix", "memmap"])
def test_out_of_an_ndarray_subclass_receives_the_gradient(backend, kind, tmp_path):
    """Its own indexing (a matrix's rows stay 2-D) must not decide where the kernels write."""
    x = np.arange(12.0).reshape(3, 4)
    if kind == "matrix":
        out = np.matrix(np.zeros((3, 4)))
    else:
        out = np.memmap(tmp_path / "grad", dtype=np.float64, mode="w+", shape=(3, 4))
    for function in (fl.mse_grad, fl.l1_grad, fl.softmax):
        args = (x,) if function is fl.softmax else (x, np.zeros((3, 4)))
        want = function(*args, backend="numpy")
        got = function(*args, backend=backend, out=out)
        assert np.shares_memory(got, out)
        np.testing.assert_allclose(np.asarray(out), want, rtol=1e-15)
        np.testing.assert_allclose(got, want, rtol=1e-15)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_masked_arrays_are_refused(backend):
    x = np.ma.masked_array(np.ones((2, 3)), mask=[[False, True, False]] * 2)
    with pytest.raises(TypeError, match="pred is a masked array, whose mask"):
        fl.mse(x, np.zeros((2, 3)), backend=backend)
    with pytest.raises(TypeError, match="out is a masked array, whose mask"):
        fl.mse_grad(np.ones((2, 3)), np.zeros((2, 3)), backend=backend, out=x)
    with pytest.raises(TypeError, match="logits is a masked array"):
        fl.softmax_cross_entropy(x, np.array([0, 1]), backend=backend)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("ignore_index", [2**63, -(2**63) - 1, np.uint64(2**63)], ids=str)
def test_ignore_index_outside_int64_is_a_value_error(backend, ignore_index):
    # On numba it overflowed in the kernel call, or matched label 2**63 - 1 as a float.
    for function in (fl.softmax_cross_entropy, fl.nll):
        with pytest.raises(ValueError, match="ignore_index must fit in int64"):
            function(np.zeros((3, 4)), np.array([0, 2**63 - 1, 1]), ignore_index=ignore_index,
                     backend=backend)


def test_info_lists_every_backend():
    result = subprocess.run([sys.executable, "-m", "fastloss", "info"], capture_output=True,
                            text=True, check=True)
    for name in _registry.BACKENDS:
        assert f"\n  {name} " in result.stdout


def test_version_option():
    result = subprocess.run([sys.executable, "-m", "fastloss", "--version"], capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == f"fastloss {fl.__version__}"
