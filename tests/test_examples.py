"""The examples run (shortened where they are long) and reach what their docstrings claim."""

import importlib.util
import pathlib

import numpy as np
import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cupy_available() -> bool:
    try:
        import cupy
    except ImportError:
        return False
    return bool(cupy.is_available())


def test_linear_regression_reaches_lstsq():
    result = load("linear_regression_gd").main([])
    assert result["error"] < 1e-4
    assert result["losses"][-1] < result["losses"][0]


def test_mlp_digits_reaches_95_percent():
    pytest.importorskip("sklearn", reason="the digits data set comes with scikit-learn")
    result = load("mlp_digits").main([])
    assert result["accuracy"] >= 0.95
    assert result["losses"][-1] < result["losses"][0]


def test_mlp_digits_jacobian_comparison_agrees():
    rows = load("mlp_digits").compare_jacobian([(16, 10), (64, 7)], repeats=1)
    for *_, difference in rows:
        assert difference < 1e-5


@pytest.mark.gpu
@pytest.mark.skipif(not _cupy_available(), reason="no CUDA device")
def test_mlp_digits_on_cupy():
    pytest.importorskip("sklearn", reason="the digits data set comes with scikit-learn")
    result = load("mlp_digits").main(["--backend", "cuda"])
    assert result["accuracy"] >= 0.95


def test_torch_training_curves_agree():
    pytest.importorskip("torch", reason="the example trains a PyTorch model")
    result = load("torch_training").main(
        ["--steps", "100", "--bench-rows", "64", "--bench-classes", "10", "--repeats", "1"]
    )
    assert len(result["torch"]) == len(result["fastloss"]) == 100
    assert result["difference"] < 1e-5
    assert np.isfinite(list(result["times"].values())).all()


@pytest.mark.skipif(_cupy_available(), reason="a CUDA device is present")
def test_examples_without_a_gpu_exit_with_one_line(capsys):
    pytest.importorskip("torch", reason="the example trains a PyTorch model")
    for name, argv, message in [
        ("mlp_digits", ["--backend", "cuda"], "--backend cuda cannot run here: no CUDA device"),
        ("torch_training", ["--device", "cuda"], "--device cuda: this PyTorch sees no CUDA"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            load(name).main(argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
