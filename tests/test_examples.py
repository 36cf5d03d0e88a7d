"""The examples run (shortened where they are long) and reach what their docstrings claim."""

import importlib.util
import pathlib
import re

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
    for *_, vjp_difference, difference in rows:
        assert vjp_difference < 1e-5 and difference < 1e-5


@pytest.mark.gpu
@pytest.mark.skipif(not _cupy_available(), reason="no CUDA device")
def test_mlp_digits_on_cupy():
    pytest.importorskip("sklearn", reason="the digits data set comes with scikit-learn")
    result = load("mlp_digits").main(["--backend", "cuda"])
    assert result["accuracy"] >= 0.95


def test_torch_training_curves_agree():
    pytest.importorskip("torch", reason="the example trains a PyTorch model")
    result = load("torch_training").main(
        ["--steps", "100", "--bench-rows", "64", "--bench-classes", "10", "--repeats", "1",
         "--no-compile"]
    )
    assert len(result["torch"]) == len(result["fastloss"]) == 100
    assert result["difference"] < 1e-5
    assert set(result["times"]) == {"torch eager", "fastloss eager"}
    assert np.isfinite(list(result["times"].values())).all()


def test_torch_training_times_compiled_losses(capsys):
    torch = pytest.importorskip("torch", reason="the example trains a PyTorch model")
    torch._dynamo.reset()
    try:
        result = load("torch_training").main(
            ["--steps", "2", "--bench-rows", "64", "--bench-classes", "10", "--repeats", "1"]
        )
    finally:
        torch._dynamo.reset()
    rows = ["torch eager", "torch compiled", "fastloss eager", "fastloss compiled"]
    assert set(result["times"]) == set(rows)
    for row in rows:
        assert 0 < result["times"][row] < float("inf"), row
    assert set(result["ratios"]) == {"eager", "compiled"}
    assert result["ratios"]["compiled"] == pytest.approx(
        result["times"]["fastloss compiled"] / result["times"]["torch compiled"]
    )
    printed = capsys.readouterr().out
    for line in [*rows, "fastloss compiled / torch compiled"]:
        assert f"  {line}" in printed


def _help_entries(text):
    """``{option: its help text}`` from an argparse --help, one entry per option line."""
    body = text.split("options:", 1)[1]
    entries = re.split(r"\n  (?=-)", "\n" + body)[1:]
    return {entry.split()[0].rstrip(","): " ".join(entry.split()) for entry in entries}


@pytest.mark.parametrize("name", ["linear_regression_gd", "mlp_digits", "torch_training"])
def test_example_help_explains_every_option_and_its_default(name, capsys):
    if name == "torch_training":
        pytest.importorskip("torch", reason="the example trains a PyTorch model")
    with pytest.raises(SystemExit) as exit_info:
        load(name).main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    usage_options = set(re.findall(r"\[(--?[a-z-]+)", text.split("options:", 1)[0]))
    entries = _help_entries(text)
    assert set(entries) == usage_options and len(entries) > 1
    for option, entry in entries.items():
        if option == "-h":
            continue
        meaning = re.sub(r"^--[a-z-]+( \S+)?", "", entry).split("(default:")[0]
        assert "(default: " in entry, f"{name} {option} shows no default: {entry!r}"
        assert len(meaning.split()) >= 2, f"{name} {option} says nothing about itself: {entry!r}"


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
