"""The benchmark report runs end to end at a tiny size and writes valid JSON and a PNG.

Timings are not checked: only that every loss, softmax function, op and available backend has
its rows, and that the files are what they claim to be.
"""

import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastloss import _registry
from fastloss.bench import against, peers, report

ROW_KEYS = {
    "loss", "op", "device", "shape", "elements", "dtype", "impl", "kind", "backend", "bytes",
    "median_s", "min_s", "q1_s", "q3_s", "spread", "noisy", "repeats", "gbps", "x_floor",
    "loss_value", "reference", "rel_err", "speedup", "error",
}
CPU_BACKENDS = [name for name in ("numpy", "numba") if _registry.backend_status(name)[0]]
FUNCTIONS = _registry.SOFTMAX_FUNCTIONS


def _run(tmp_path, *options):
    json_path, png_path = tmp_path / "bench.json", tmp_path / "bench.png"
    argv = ["--sizes", "300", "--repeats", "1", "--budget", "0", "--quiet",
            "--backends", ",".join(CPU_BACKENDS), "--json", str(json_path), "--plot", str(png_path),
            *options]
    assert report.main(argv) == 0
    return json.loads(json_path.read_text()), png_path


def test_full_report_has_every_case_and_a_png(tmp_path, capsys):
    document, png_path = _run(tmp_path)

    assert document["schema"] == "fastloss-bench/2"
    assert {"created", "environment", "backends", "options", "not_run", "results"} <= set(document)
    rows = document["results"]
    assert all(set(row) == ROW_KEYS for row in rows)
    for loss in peers.own_losses():
        for op in peers.spec(loss).ops:
            case = {row["impl"]: row for row in rows if (row["loss"], row["op"]) == (loss, op)}
            assert {f"fastloss[{name}]" for name in CPU_BACKENDS} <= set(case)
            assert {"numpy-expr", "floor"} <= set(case)
            for name in CPU_BACKENDS:
                row = case[f"fastloss[{name}]"]
                assert row["error"] is None, row["error"]
                assert row["median_s"] > 0 and row["gbps"] > 0 and row["x_floor"] > 0
                assert "numpy-expr" in row["speedup"]
            if op == "gradient":
                assert all(row["rel_err"] is None for row in case.values())
            else:
                assert case["numpy-expr"]["rel_err"] < 1e-5
    mse_forward = {row["impl"] for row in rows if (row["loss"], row["op"]) == ("mse", "forward")}
    assert {"crysx-fastmath", "crysx-prange"} <= mse_forward

    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = capsys.readouterr().out
    assert "mse / fused" in table and "softmax_cross_entropy / forward" in table


@pytest.mark.skipif(not peers.installed("torch"), reason="torch is not installed")
def test_fastloss_torch_peer_runs_the_drop_in_where_it_has_the_loss(tmp_path, monkeypatch):
    """The fastloss-torch peer calls fastloss.torch's function of the loss, and is checked
    against the reference as every peer is; a loss the drop-in has not (hinge) has no row."""
    import fastloss.torch

    calls = []
    mse_loss = fastloss.torch.mse_loss
    monkeypatch.setattr(fastloss.torch, "mse_loss",
                        lambda *args, **kwargs: calls.append(1) or mse_loss(*args, **kwargs))
    document, _ = _run(tmp_path, "--losses", "mse,hinge,softmax_cross_entropy", "--sizes", "3x37",
                       "--peers", "fastloss-torch", "--ops", "forward,fused")

    rows = document["results"]
    drop_in = [row for row in rows if row["impl"] == "fastloss-torch"]
    assert {(row["loss"], row["op"]) for row in drop_in} == {
        (loss, op) for loss in ("mse", "softmax_cross_entropy") for op in ("forward", "fused")}
    for row in drop_in:
        assert row["error"] is None, row["error"]
        assert row["rel_err"] < 1e-6
    assert calls
    assert all("fastloss-torch" in row["speedup"] for row in rows
               if row["kind"] == "fastloss" and row["loss"] != "hinge")


def test_quick_report_is_one_line_per_loss_and_backend(tmp_path, capsys):
    document, _ = _run(tmp_path, "--quick")

    fastloss_rows = [row for row in document["results"] if row["kind"] == "fastloss"]
    assert len(fastloss_rows) == len(peers.own_losses()) * len(CPU_BACKENDS)
    assert {row["op"] for row in document["results"]} == {"fused", "call"}
    assert {row["impl"] for row in document["results"] if row["kind"] == "peer"} == {"numpy-expr"}
    table = capsys.readouterr().out
    assert "vs NumPy" in table and "rel err" in table
    assert "bounds, not peers" not in table


@pytest.mark.parametrize("option", [["--ops", "backward"], ["--losses", "mse,no_such_loss"],
                                    ["--losses", "softmax", "--ops", "fused"],
                                    ["--sizes", "10x"], ["--sizes", "x"], ["--repeats", "0"],
                                    ["--budget", "-1"], ["--json", "/no/such/folder/r.json"],
                                    ["--sweep-elements", "nan"], ["--sweep-elements", "inf"],
                                    ["--sweep-elements", "-0.5"], ["--budget", "nan"],
                                    ["--budget", "inf"], ["--losses", ","], ["--ops", ","],
                                    ["--classes", "0"], ["--sizes", "1e20"],
                                    ["--sizes", "1x99999999999999"], ["--json", "."],
                                    ["--plot", "."], ["--sizes", ","],
                                    ["--sweep-elements", "1e13", "--sweep-classes", "1000"],
                                    ["--sweep-elements", "100",
                                     "--sweep-classes", "1000000000000"]])
def test_bad_option_is_a_usage_error(option, capsys):
    with pytest.raises(SystemExit) as exit_info:
        report.main(["--losses", "mse", *option] if option[0] != "--losses" else option)
    assert exit_info.value.code == 2
    assert "error: --" in capsys.readouterr().err  # names the option, no traceback


def test_a_plot_format_matplotlib_cannot_write_is_a_usage_error_before_the_run(capsys):
    pytest.importorskip("matplotlib")
    with pytest.raises(SystemExit) as exit_info:
        report.parse_args(["--plot", "report.txt"])
    assert exit_info.value.code == 2
    assert "error: --plot: matplotlib cannot write .txt files; name one of: " in (
        capsys.readouterr().err)
    for path in ("report.svg", "report.PNG", "report"):  # no extension: matplotlib's default
        assert report.parse_args(["--plot", path]).plot == path


@pytest.mark.parametrize("output", ["--json", "--plot"])
def test_a_report_that_cannot_write_its_file_names_it_in_one_line(monkeypatch, tmp_path,
                                                                   output):
    # A failed write has no filename of its own (a full disk): the message names the path.
    def failing_write(path, *rest):
        raise OSError(28, "No space left")

    monkeypatch.setattr(report, "run", lambda args: [])
    monkeypatch.setattr(report, f"write_{output[2:]}", failing_write)
    monkeypatch.setattr(peers, "missing_module", lambda *names: None)
    path = str(tmp_path / ("r.json" if output == "--json" else "r.png"))
    with pytest.raises(SystemExit) as exit_info:
        report.main(["--losses", "mse", "--sizes", "4x4", output, path])
    assert str(exit_info.value) == f"fastloss bench: cannot write {path}: No space left"


def test_every_loss_and_softmax_function_has_a_bench_spec_and_an_unknown_loss_is_an_error():
    assert set(_registry.LOSSES) | set(FUNCTIONS) == set(peers.own_losses())
    assert {spec.variant_of for spec in peers.specs().values()} <= {None, *_registry.LOSSES}
    with pytest.raises(ValueError, match="no bench spec for loss 'no_such_loss'"):
        peers.make_inputs("no_such_loss", (2, 3), "cpu")
    with pytest.raises(ValueError, match="softmax has no op 'fused'; its ops: call"):
        peers.implementations("softmax", "fused", "cpu")


VARIANTS = [loss for loss in peers.specs() if loss not in peers.own_losses()]


def test_a_variant_times_its_losss_function_with_its_options_and_only_where_named(tmp_path):
    assert {"softmax_cross_entropy_smoothed", "softmax_cross_entropy_probabilities"} <= set(
        VARIANTS)
    document, _ = _run(tmp_path, "--losses", ",".join(VARIANTS), "--sizes", "3x37")
    rows = document["results"]
    assert {row["loss"] for row in rows} == set(VARIANTS)
    answers = [row for row in rows
               if row["op"] != "gradient" and row["kind"] in ("fastloss", "peer")]
    assert {row["loss"] for row in answers} == set(VARIANTS)
    for row in answers:
        assert row["error"] is None and row["rel_err"] < 1e-5, row
    # Each variant's reference is its own: the plain loss differs from it.
    for loss in VARIANTS:
        inputs = peers.make_inputs(loss, (3, 37), "cpu")
        plain = peers.spec(peers.spec(loss).variant_of).reference(
            np, inputs.first.astype(np.float64),
            inputs.second if inputs.second.dtype.kind != "f" else inputs.second.argmax(axis=1))
        assert report.reference_loss(inputs) != pytest.approx(plain / 3, rel=1e-3)


def test_softmax_functions_are_rows_with_their_peers(tmp_path, capsys):
    document, _ = _run(tmp_path, "--losses", ",".join(FUNCTIONS), "--sizes", "3x37")

    rows = document["results"]
    assert document["options"]["losses"] == sorted(FUNCTIONS)
    assert {row["op"] for row in rows} == {"call"}
    out = capsys.readouterr().out
    for name in FUNCTIONS:
        case = {row["impl"]: row for row in rows if row["loss"] == name}
        peer_names = {"numpy-expr", "torch"} if peers.installed("torch") else {"numpy-expr"}
        assert set(case) == {f"fastloss[{b}]" for b in CPU_BACKENDS} | peer_names | {"floor"}
        arrays = 2 if name in ("softmax", "log_softmax") else 3
        assert {row["bytes"] for row in case.values()} == {arrays * 3 * 37 * 4}
        for row in case.values():
            assert row["error"] is None, row["error"]
            assert row["median_s"] > 0 and row["x_floor"] > 0
            assert row["loss_value"] is None and row["reference"] is None
            if row["kind"] == "floor":
                assert row["rel_err"] is None
            else:
                assert row["rel_err"] < 1e-6
        assert set(case[f"fastloss[{CPU_BACKENDS[0]}]"]["speedup"]) == peer_names
        assert f"{name} / call (output into out=, cpu, float32)" in out
    assert "max |output - ref| / max |ref|" in " ".join(out.split())


@pytest.mark.parametrize("name", ["softmax_backward", "log_softmax_backward"])
def test_a_softmax_function_error_is_over_its_output_array(name):
    # The reference takes both float32 inputs to float64 (a float32 sum of the gradient
    # would be the reference's own error).
    inputs = peers.make_inputs(name, (3, 37), "cpu")
    exact = peers.spec(name).reference(np, inputs.first.astype(np.float64),
                                       inputs.second.astype(np.float64))

    assert report.array_error(inputs, exact) == 0
    assert report.array_error(inputs, exact * 1.01) == pytest.approx(0.01)


def test_a_loss_reference_takes_a_float_target_to_float64():
    inputs = peers.make_inputs("kl_div", (3, 37), "cpu")
    exact = peers.spec("kl_div").reference(np, inputs.first.astype(np.float64),
                                           inputs.second.astype(np.float64))
    assert report.reference_loss(inputs) == exact / peers.spec("kl_div").count((3, 37))


def test_an_element_count_gives_the_row_width_sweeps_shape():
    for classes in (100, 1000, 128000):
        assert (peers.shape_for("softmax_cross_entropy", 2621440, classes)
                == peers.sweep_shapes((classes,), 2621440)[0])


def test_array_error_sees_every_block_and_nan(monkeypatch):
    monkeypatch.setattr(report, "REFERENCE_CHUNK", 2 * 37)  # two rows a block
    inputs = peers.make_inputs("softmax", (7, 37), "cpu")
    exact = peers.spec("softmax").reference(np, inputs.first.astype(np.float64), None)
    last_row_off = exact.copy()
    last_row_off[-1] *= 1.5
    assert report.array_error(inputs, last_row_off) == pytest.approx(
        0.5 * exact[-1].max() / exact.max())
    last_row_off[-1, 0] = np.nan
    assert np.isnan(report.array_error(inputs, last_row_off))
    with pytest.raises(ValueError, match="shape"):
        report.array_error(inputs, exact[:-1])


def test_an_unknown_softmax_function_is_the_unknown_loss_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        report.main(["--losses", "softmax,log_softmax_forward", "--sizes", "3x37"])

    assert exit_info.value.code == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.startswith("python -m fastloss bench: error: --losses: unknown loss "
                            "'log_softmax_forward'; choose from ")
    assert all(name in error for name in FUNCTIONS)


def test_module_entry_point_runs_the_report(tmp_path):
    json_path = tmp_path / "entry.json"
    completed = subprocess.run(
        [sys.executable, "-m", "fastloss", "bench", "--quick", "--sizes", "64", "--peers", "none",
         "--losses", "mse", "--backends", "numpy", "--repeats", "1", "--budget", "0", "--quiet",
         "--json", str(json_path)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(json_path.read_text())["results"]


def test_row_width_sweep_and_latency_tables(tmp_path, capsys):
    document, png_path = _run(tmp_path, "--losses", "softmax_cross_entropy",
                              "--ops", "fused", "--sizes", "64x10",
                              "--sweep-elements", "600", "--sweep-classes", "2,30")

    shapes = {tuple(row["shape"]) for row in document["results"]}
    assert shapes == {(64, 10), (300, 2), (20, 30)}
    assert document["options"]["sweep_elements"] == 600
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    sweep, latency = out.split("row widths at 600 elements")[1].split("latency:")
    assert "300x2" in sweep and "20x30" in sweep and "x numpy-expr" in sweep
    assert "64x10" in latency and "300x2" not in latency


def test_rounds_merge_into_one_row_per_contender(tmp_path):
    document, _ = _run(tmp_path, "--losses", "mse", "--ops", "fused", "--rounds", "3",
                       "--peers", "numpy-expr")

    rows = document["results"]
    assert len({row["impl"] for row in rows}) == len(rows)
    assert all(row["repeats"] >= 3 for row in rows) and document["options"]["rounds"] == 3
    for row in rows:  # quartiles over the calls of all rounds
        assert row["min_s"] <= row["q1_s"] <= row["median_s"] <= row["q3_s"]
        assert row["spread"] == pytest.approx((row["q3_s"] - row["q1_s"]) / row["median_s"])
        assert row["noisy"] == (row["spread"] > 0.1)


def _fake_timings(monkeypatch, seconds: list[float]) -> None:
    """Every contender's timed calls take ``seconds``; its warm-up call runs, for its loss."""
    monkeypatch.setattr(report, "time_thunk",
                        lambda thunk, *, repeats, budget: (thunk(), list(seconds)))


@pytest.mark.parametrize(("seconds", "spread"), [([1e-3] * 4, 0.0), ([1e-3, 2e-3] * 2, 2 / 3)])
def test_spread_is_in_the_table_and_json_and_over_10_percent_is_flagged_noisy(
        tmp_path, capsys, monkeypatch, seconds, spread):
    _fake_timings(monkeypatch, seconds)
    document, _ = _run(tmp_path, "--quick", "--losses", "mse")

    noisy = spread > 0.1
    assert document["noisy_spread"] == 0.1
    for row in document["results"]:
        assert row["median_s"] == pytest.approx(1.5e-3 if noisy else 1e-3)
        assert (row["q1_s"], row["q3_s"]) == pytest.approx((1e-3, 2e-3 if noisy else 1e-3))
        assert row["spread"] == pytest.approx(spread) and row["noisy"] is noisy
    out = capsys.readouterr().out
    table = out.split("\n\n")[1].splitlines()
    assert table[0].split()[4:6] == ["time", "spread"]
    cells = "67% noisy" if noisy else "0%"
    assert all(cells in line for line in table[2:]) and len(table) == 2 + len(CPU_BACKENDS)
    assert ("noisy: the spread is over 10% of the time" in out) is noisy
    assert ("Rerun with --rounds 3" in out) is noisy


def test_header_gives_the_threads_and_a_legend_explains_the_columns(tmp_path, capsys):
    import numba

    document, _ = _run(tmp_path, "--quick", "--losses", "mse", "--peers", "numpy-expr,torch")

    out = capsys.readouterr().out
    threads = f"threads: numba {numba.get_num_threads()}"
    if "torch" in sys.modules:  # imported by the torch peer, where installed
        threads += f", torch {sys.modules['torch'].get_num_threads()}"
    assert threads + ";" in out.splitlines()[0]
    assert document["environment"]["numba_threads"] == numba.get_num_threads()
    legend = out.split("\ncolumns:\n")[1].split("\n\n")[0]
    explained = [line[2:12].strip() for line in legend.splitlines() if not line.startswith("   ")]
    assert explained == ["time", "spread", "GB/s", "floor", "x floor", "vs NumPy", "x <peer>",
                         "rel err"]
    words = " ".join(legend.split())
    assert "median wall time of one call" in words
    assert "np.copyto of a float32 array of half the op's bytes" in words
    count = numba.get_num_threads()
    assert (f"NumPy copies on one thread while fastloss's numba kernels run on "
            f"{count} thread{'s' if count != 1 else ''},") in words
    assert "pure-NumPy reference implementation" in " ".join(out.split())


@pytest.mark.parametrize("option", [["--sweep-classes", "0"], ["--sweep-classes", "ten"],
                                    ["--sweep-elements", "-1"], ["--rounds", "0"]])
def test_bad_sweep_option_is_a_usage_error(option):
    with pytest.raises(SystemExit) as exit_info:
        report.main(option)
    assert exit_info.value.code == 2


def test_report_imports_only_numpy_and_numba_up_front():
    # Not cupy: whether the cuda backend is available is asked of CuPy where it is installed.
    optional = ("torch", "matplotlib", "dask", "distributed", "liger_kernel")
    code = ("import sys; from fastloss.bench import dask_report, report; report.parse_args([]); "
            f"print([name for name in {optional!r} if name in sys.modules])")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "[]"


def test_a_missing_peer_or_plot_package_is_one_line_saying_what_to_install(
        tmp_path, capsys, monkeypatch):
    installed = peers.installed
    monkeypatch.setattr(peers, "installed",
                        lambda name: name not in ("torch", "matplotlib") and installed(name))
    png_path = tmp_path / "bench.png"

    assert report.main(["--losses", "mse", "--ops", "fused", "--sizes", "64x10", "--repeats", "1",
                        "--budget", "0", "--quiet", "--backends", ",".join(CPU_BACKENDS),
                        "--peers", "numpy-expr,torch", "--plot", str(png_path)]) == 0

    out = capsys.readouterr().out
    not_run = out.split("not run here:\n")[1].splitlines()
    assert "  torch (cpu): torch not installed (pip install 'fastloss[torch]')" in not_run
    assert f"  --plot {png_path}: matplotlib not installed (pip install matplotlib)" in not_run
    assert len([line for line in not_run if "torch not installed" in line]) == 1
    assert not png_path.exists()


@pytest.mark.parametrize("option", [["--repeats", "0"], ["--timeout", "-1"], ["--timeout", "nan"],
                                    ["--max-bytes", "nan"], ["--max-bytes", "-5"],
                                    ["--memory-limit", "abc"], ["--memory-limit", "-1"],
                                    ["--memory-limit", "2XB"],
                                    ["--json", "/no/such/folder/r.json"], ["--json", "."],
                                    ["--cases", ","]])
def test_dask_report_bad_option_is_a_usage_error(option, capsys):
    # Checked before any cluster starts.
    from fastloss.bench import dask_report

    with pytest.raises(SystemExit) as exit_info:
        dask_report.parse_args(["--quick", *option])
    assert exit_info.value.code == 2
    assert "error: --" in capsys.readouterr().err


def test_dask_report_takes_what_local_cluster_takes():
    from fastloss.bench import dask_report

    # Past this machine's memory: LocalCluster's warning, and its memory.
    for limit in ("2GiB", "auto", "0.5", "0", "1e9", "1e40"):
        assert dask_report.parse_args(["--memory-limit", limit]).memory_limit == limit
    assert dask_report.parse_args(["--max-bytes", "0"]).max_bytes == 0


def _dask_report_json_exit(monkeypatch, path):
    """The SystemExit of a dask report run (none, in fact) that writes its JSON to ``path``."""
    from fastloss.bench import dask_report

    monkeypatch.setattr(peers, "missing_module", lambda *names: None)
    monkeypatch.setattr(dask_report, "run", lambda args: [])
    monkeypatch.setattr(dask_report, "table", lambda results, args: "")
    with pytest.raises(SystemExit) as exit_info:
        dask_report.main(["--quick", "--json", path])
    return exit_info.value


def test_dask_report_that_cannot_write_its_json_says_so_in_one_line(monkeypatch):
    # /proc is a folder, but takes no new file.
    assert str(_dask_report_json_exit(monkeypatch, "/proc/fastloss-bench.json")).startswith(
        "fastloss bench --dask: cannot write /proc/fastloss-bench.json: ")



@pytest.mark.parametrize("error", [PermissionError(13, "Permission denied"),
                                   OSError(28, "No space left on device")],
                         ids=["permission", "no-space"])
def test_dask_report_that_cannot_write_its_json_for_any_reason_says_so(monkeypatch, tmp_path,
                                                                       error):
    # Any OSError of the write (a read-only folder, a full disk), not only a missing path.
    from fastloss.bench import dask_report

    path = str(tmp_path / "r.json")  # not error.filename: a failed write has none

    def failing_open(name, mode="r", *args, **kwargs):
        assert name == path and "w" in mode
        raise error

    monkeypatch.setattr(dask_report, "open", failing_open, raising=False)
    assert str(_dask_report_json_exit(monkeypatch, path)) == (
        f"fastloss bench --dask: cannot write {path}: {error.strerror}")


def test_memory_error_is_for_a_float32_input_larger_than_memory(monkeypatch):
    monkeypatch.setattr(report, "_host_memory_bytes", lambda: 4000)
    assert report.memory_error("mse", (10, 100)) is None  # 4000 bytes: fits exactly
    assert report.memory_error("mse", (1, 1000)) is None
    error = report.memory_error("mse", (10, 101))  # 4040 bytes
    assert error is not None and error.startswith("a 10x101 mse input, more than")
    assert report.memory_error("mse", (2, 1000)) is not None
    monkeypatch.setattr(report, "_host_memory_bytes", lambda: None)  # unknown: no check
    assert report.memory_error("mse", (10**9, 10**9)) is None


def test_cuda_alone_makes_its_inputs_on_the_device_not_in_host_memory(monkeypatch, capsys):
    # A size past host memory is refused as soon as a CPU backend runs, not for cuda alone.
    status = {name: (True, "") for name in ("numpy", "numba", "cuda")}
    monkeypatch.setattr(peers, "backend_status", lambda: status)
    monkeypatch.setattr(report, "_host_memory_bytes", lambda: 4000)
    options = ["--losses", "mse", "--sizes", "100x100", "--peers", "none"]
    args = report.parse_args([*options, "--backends", "cuda"])
    assert args.sizes == ["100x100"] and args.backends == ["cuda"]
    args = report.parse_args([*options, "--backends", "cuda", "--sizes", "1",
                              "--sweep-elements", "10000", "--sweep-classes", "100"])
    assert args.sweep_elements == 10000
    for backends in ("numpy", "cuda,numpy"):
        with pytest.raises(SystemExit) as exit_info:
            report.parse_args([*options, "--backends", backends])
        assert exit_info.value.code == 2
        assert "--sizes: 100x100 gives a 100x100 mse input" in capsys.readouterr().err

def test_info_takes_no_arguments(capsys):
    from fastloss.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(["info", "extra"])
    assert exit_info.value.code == 2
    assert "info takes no arguments" in capsys.readouterr().err


def test_dask_report_without_dask_is_one_line(monkeypatch, capsys):
    from fastloss.bench import dask_report

    monkeypatch.setattr(peers, "installed", lambda name: name != "distributed")

    assert dask_report.main(["--quick"]) == 2
    assert capsys.readouterr().err == (
        "python -m fastloss bench --dask: distributed not installed "
        "(pip install 'fastloss[distributed]')\n")


def _git_checkout() -> bool:
    """Whether the fastloss imported here sits in a git checkout (where --against reads)."""
    checkout = Path(peers.__file__).resolve().parents[2]
    return subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"],
                          capture_output=True).returncode == 0


@pytest.mark.skipif(not _git_checkout(), reason="--against reads revisions from a git checkout")
def test_against_a_revision_times_both_versions_and_compares_their_bits():
    completed = subprocess.run(
        [sys.executable, "-m", "fastloss", "bench", "--against", "HEAD", "--losses", "mse,l1",
         "--sizes", "3x37", "37", "--repeats", "2", "--dtype", "float64"],
        capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert lines[0].startswith("this checkout against HEAD: one thread")
    assert lines[0].endswith("alternating, float64")
    rows = [line.split() for line in lines[3:]]
    # An elementwise loss's rows have its own width: one shape per size, whatever --classes.
    assert [row[:3] for row in rows] == [["mse", "fused", "3x37"], ["mse", "fused", "1x37"],
                                         ["l1", "fused", "3x37"], ["l1", "fused", "1x37"]]
    # The same kernels (HEAD's sources are this checkout's, bar uncommitted edits): same bits.
    assert all(row[-1] == "yes" for row in rows), completed.stdout


@pytest.mark.parametrize("option", [["--losses", "no_such_loss"], ["--losses", ","],
                                    ["--classes", "abc"], ["--classes", "0"], ["--sizes", "0"],
                                    ["--op", "forward", "--losses", "softmax"],
                                    ["--repeats", "0"], ["--sizes", "1e13"],
                                    ["--classes", "1000000000000", "--sizes", "1e12"]])
def test_against_bad_option_is_a_usage_error(option, capsys):
    # Checked before any revision is read or kernel compiled.
    with pytest.raises(SystemExit) as exit_info:
        against.parse_args(["--against", "HEAD", *option])
    assert exit_info.value.code == 2
    assert "error: --" in capsys.readouterr().err


def test_against_takes_shapes_counts_and_defaults():
    args = against.parse_args(["--against", "HEAD", "--sizes", "64x100", "2.6e3", "--classes",
                               "10,", "--losses", "mse,softmax"])
    assert (args.losses, args.classes, args.sizes) == (["mse", "softmax"], [10],
                                                       ["64x100", "2.6e3"])
    assert against.parse_args(["--against", "HEAD"]).classes == [2, 10, 100, 1000, 32000]


def test_against_an_unknown_revision_says_so():
    completed = subprocess.run(
        [sys.executable, "-m", "fastloss", "bench", "--against", "no-such-revision"],
        capture_output=True, text=True, timeout=60,
    )
    assert completed.returncode != 0
    assert "--against no-such-revision: needs a git checkout" in completed.stderr


def test_ratios_are_time_over_the_floor_and_peer_time_over_fastloss():
    # Distinct medians, so that a ratio taken the wrong way round, or against the wrong row,
    # shows. Rows of another case (another shape) must not enter this case's ratios.
    def row(impl, kind, median, shape=(4, 8)):
        return {"device": "cpu", "loss": "mse", "op": "call", "shape": list(shape),
                "impl": impl, "kind": kind, "median_s": median, "x_floor": None,
                "speedup": None}
    rows = [row("floor", "floor", 0.5), row("fastloss[numpy]", "fastloss", 2.0),
            row("numpy-expr", "peer", 7.0), row("torch", "peer", 3.0),
            row("failed", "peer", None), row("numpy-expr", "peer", 100.0, shape=(8, 8)),
            row("exp-only", "bound", 0.25)]
    report.add_ratios(rows)
    floor, fast, expr, torch, failed, other, bound = rows
    assert fast["x_floor"] == fast["median_s"] / floor["median_s"]
    assert expr["x_floor"] == expr["median_s"] / floor["median_s"]
    assert fast["speedup"] == {"numpy-expr": expr["median_s"] / fast["median_s"],
                               "torch": torch["median_s"] / fast["median_s"],
                               "exp-only": bound["median_s"] / fast["median_s"]}
    assert expr["speedup"] is None and failed["x_floor"] is None and other["x_floor"] is None


BOUNDS = [("softmax_cross_entropy", "exp-only", lambda x, t: np.exp(-np.abs(x))),
          ("binary_cross_entropy_with_logits", "exp-only", lambda x, t: t * np.exp(-np.abs(x))),
          ("binary_cross_entropy", "log-only", lambda x, t: t * np.log(x)),
          ("kl_div", "log-only", lambda x, t: t * (np.log(t) - x))]


@pytest.mark.skipif("numba" not in CPU_BACKENDS, reason="numba is not available")
@pytest.mark.parametrize("loss, name, want", BOUNDS, ids=[loss for loss, *_ in BOUNDS])
def test_a_bound_computes_its_losss_arithmetic_for_the_ops_that_write_an_array(loss, name, want):
    def bound(op):
        return next((impl for impl in peers.implementations(loss, op, "cpu")
                     if impl.name == name), None)

    assert bound("forward") is None
    # Serial, and threaded over several blocks.
    for inputs in (peers.make_inputs(loss, (300, 3), "cpu"),
                   peers.make_inputs(loss, (70000, 3), "cpu")):
        first, second = inputs.first.copy(), inputs.second.copy()
        for op in ("fused", "gradient"):
            impl = bound(op)
            assert impl.kind == "bound" and impl.missing is None
            got = impl.prepare(inputs)()
            expected = want(first.astype(np.float64), second.astype(np.float64)).ravel()
            # float32 arithmetic: within a few roundings of the largest term (the KL
            # divergence's log t - x cancels).
            np.testing.assert_allclose(got, expected, rtol=4e-7,
                                       atol=4e-7 * np.abs(expected).max())
        assert np.array_equal(inputs.first, first) and np.array_equal(inputs.second, second)


@pytest.mark.skipif("numba" not in CPU_BACKENDS, reason="numba is not available")
def test_a_bound_is_compared_with_fastloss_and_not_checked_as_a_loss(tmp_path, capsys):
    document, _ = _run(tmp_path, "--losses", "softmax_cross_entropy,kl_div", "--ops",
                       "forward,fused", "--backends", "numba", "--peers", "exp-only,log-only")
    rows = {(row["loss"], row["op"], row["impl"]): row for row in document["results"]}
    for loss, name in [("softmax_cross_entropy", "exp-only"), ("kl_div", "log-only")]:
        assert (loss, "forward", name) not in rows
        bound = rows[(loss, "fused", name)]
        assert bound["kind"] == "bound" and bound["error"] is None
        assert bound["rel_err"] is None and bound["median_s"] > 0
        fast = rows[(loss, "fused", "fastloss[numba]")]
        assert fast["speedup"] == {name: bound["median_s"] / fast["median_s"]}
    words = " ".join(capsys.readouterr().out.split())
    assert "exp-only and log-only are bounds, not peers" in words


def test_relative_error_is_over_the_reference():
    for value, reference in [(2.0, 1.0), (1.0, 4.0), (-3.0, -2.0)]:
        assert report.relative_error(value, reference) == abs(value - reference) / abs(reference)
    assert report.relative_error(0.25, 0.0) == 0.25
    assert report.relative_error(None, 1.0) is None


@pytest.mark.parametrize("loss", ["mse", "softmax_cross_entropy", "kl_div"])
def test_a_loss_reference_sums_every_block_of_rows(monkeypatch, loss):
    inputs = peers.make_inputs(loss, (7, 37), "cpu")
    second = inputs.second
    if second.dtype.kind == "f":
        second = second.astype(np.float64)
    whole = peers.spec(loss).reference(np, inputs.first.astype(np.float64), second)
    monkeypatch.setattr(report, "REFERENCE_CHUNK", 2 * 37)  # two rows a block, the last one
    assert report.reference_loss(inputs) == pytest.approx(
        whole / peers.spec(loss).count((7, 37)), rel=1e-12)


def test_merged_median_is_the_median_of_the_rounds_medians_and_quartiles_are_over_all_calls():
    row = {"error": None, "bytes": 4000, "median_s": None, "spread": None, "noisy": None}
    rounds = [(dict(row), [1e-3, 1e-3, 1e-3]), (dict(row), [5e-3, 5e-3, 6e-3]),
              (dict(row), [2e-3, 2e-3, 9e-3, 9e-3])]
    merged = report.merge_rounds(rounds)
    times = [t for _, round_times in rounds for t in round_times]
    median = statistics.median(statistics.median(round_times) for _, round_times in rounds)
    assert median != statistics.median(times)  # the two readings differ on these rounds
    assert merged["median_s"] == median and merged["min_s"] == min(times)
    assert merged["repeats"] == len(times) and merged["gbps"] == 4000 / median / 1e9
    q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive")
    assert (merged["q1_s"], merged["q3_s"]) == (q1, q3)
    assert merged["spread"] == (q3 - q1) / median and merged["noisy"] is True
    failed = dict(row, error="MemoryError: no")
    assert report.merge_rounds([rounds[0], (failed, []), rounds[1]]) is failed
    single = report.merge_rounds([(dict(row), [2e-3])])
    assert single["median_s"] == 2e-3 and single["spread"] is None and single["noisy"] is None
