"""`gradexp show`: one run in depth, from the files of its folder."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from test_compare import layer_rows, make_run

from gradexp import render_runs, runs
from gradexp.cli import main
from gradexp.diagnosis import diagnose


def show(path: Path) -> Any:
    return CliRunner().invoke(main, ["show", str(path)])


def test_show_prints_config_epochs_layers_and_diagnosis(tmp_path: Path) -> None:
    folder = make_run(tmp_path, "relu_he")
    result = show(folder)
    assert result.exit_code == 0, result.output
    out = result.stdout
    summary = runs.read_run(folder).metrics["diagnosis"]["summary"]
    assert " ".join(summary.split()) in " ".join(out.split())
    assert "Diagnosis: healthy" in out
    assert str(folder) in out and "completed" in out and "CPU" in out and "TensorFlow 2.21.0" in out
    assert "activation:" in out and "he_normal" in out  # the resolved config as YAML
    assert "Epochs" in out and "val_accuracy" in out and "3*" in out  # the best epoch is marked
    for layer in ("dense_1", "dense_2", "output"):
        assert layer in out
    assert "Layers at epoch 0 (initialisation)" in out
    assert "Layers at epoch 3 (last" in out
    assert "gradient ratio" in out and "worst dead fraction" in out and "thresholds" in out
    assert "\x1b[" not in out
    assert result.stderr == ""


def test_show_takes_several_runs_as_a_shell_glob_gives_them(tmp_path: Path) -> None:
    first, second = make_run(tmp_path, "first"), make_run(tmp_path, "second")
    result = CliRunner().invoke(main, ["show", str(first), str(second)])
    assert result.exit_code == 0, result.output
    assert result.stdout.index(f"Run {first}") < result.stdout.index(f"Run {second}")
    assert result.stdout.count("Diagnosis: healthy") == 2


def test_worst_epoch_is_the_unhealthy_one(tmp_path: Path) -> None:
    layers = layer_rows(3) + []
    # epoch 2 vanishes: the first hidden layer's signal is a millionth of the output's
    for row in layers:
        if row["epoch"] == 2 and row["layer"] == "dense_1":
            row["delta_norm"] = 1e-7
    diagnosis = diagnose(layers)
    epochs = runs.layers_by_epoch(layers)
    assert diagnosis["evidence"]["verdict_by_epoch"]["2"] == "vanishing"
    assert render_runs.worst_epoch(epochs, diagnosis) == 2


def test_worst_epoch_falls_back_to_the_widest_gradient_spread() -> None:
    layers = layer_rows(3)
    for row in layers:
        if row["epoch"] == 1 and row["layer"] == "output":
            row["grad_norm"] = 50.0
    epochs = runs.layers_by_epoch(layers)
    assert render_runs.worst_epoch(epochs, diagnose(layers)) == 1
    assert render_runs.worst_epoch(epochs, {}) == 1
    assert render_runs.worst_epoch({}, {}) is None


def test_show_a_vanishing_run(tmp_path: Path) -> None:
    folder = make_run(tmp_path, "sigmoid_deep", activation="sigmoid", initializer="random_normal", signal_gain=1e-6)
    out = show(folder).stdout
    assert "Diagnosis: vanishing" in out
    assert "Gradients vanished" in out
    assert "Layers at epoch 3 (last, worst): vanishing" in out
    assert "5.00e-07" in out  # the first layer's ‖δ‖, in scientific notation


def test_show_reports_divergence_and_errors(tmp_path: Path) -> None:
    folder = make_run(tmp_path, "boom", status="diverged", run_extra={
        "divergence": {"epoch": 2, "step": 17, "first_layer": "dense_1", "where": "gradient"},
        "error": "FloatingPointError: loss is nan"})
    out = show(folder).stdout
    assert "Diverged:" in out and "step 17" in out and "dense_1" in out
    assert "Error: FloatingPointError: loss is nan" in out
    assert "XLA flags" not in out  # an older run.json without them


def test_show_names_the_xla_flags_a_run_compiled_with(tmp_path: Path) -> None:
    folder = make_run(tmp_path, "flags", run_extra={"xla_flags": "--xla_cpu_prefer_vector_width=512"})
    out = show(folder).stdout
    assert "XLA flags" in out and "--xla_cpu_prefer_vector_width=512" in out


def test_show_without_metrics_or_telemetry(tmp_path: Path) -> None:
    folder = make_run(tmp_path, "bare", status="interrupted", metrics=False)
    (folder / "layers.csv").unlink()
    result = show(folder)
    assert result.exit_code == 0, result.output
    assert "No layer measurements recorded" in result.stdout
    assert "No diagnosis recorded" in result.stdout


def test_show_a_damaged_folder_exits_2(tmp_path: Path) -> None:
    folder = make_run(tmp_path, "broken")
    (folder / "run.json").write_text('{"status": "compl')
    result = show(folder)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("Warning: ") and "run.json" in lines[0]
    assert lines[-1].startswith("Error: ")
    assert result.stdout == ""


def test_show_skips_a_run_with_a_cut_off_csv_line(tmp_path: Path) -> None:
    folder = make_run(tmp_path, "cut")
    lines = (folder / "layers.csv").read_text().splitlines()
    (folder / "layers.csv").write_text("\n".join([*lines[:-1], lines[-1][:5]]) + "\n")
    result = show(folder)
    assert result.exit_code == 2
    assert result.stdout == ""
    warning, error = result.stderr.strip().splitlines()
    assert warning.startswith(f"Warning: {folder}: layers.csv: line {len(lines)} has ")
    assert error.startswith("Error: no readable run folders")


@pytest.mark.parametrize("diagnosis", [
    {"evidence": [1]}, {"evidence": "x"}, {"evidence": {"verdict_by_epoch": [1, 2]}},
    {"evidence": {"verdict_by_epoch": {"1": 3}}}, {"evidence": {"gradient_ratio_by_epoch": {"1": "big"}}},
    {"evidence": {"thresholds": [0.001]}}, {"evidence": {"gradient_ratio": "1e-3"}}, {"verdict": ["healthy"]},
    {"summary": {"text": "hi"}}, "healthy", 3,
])
def test_show_never_crashes_on_a_malformed_metrics_file(tmp_path: Path, diagnosis: Any) -> None:
    folder = make_run(tmp_path, "odd")
    metrics = json.loads((folder / "metrics.json").read_text())
    if isinstance(diagnosis, dict):
        diagnosis = {**metrics["diagnosis"], **diagnosis}
    (folder / "metrics.json").write_text(json.dumps({**metrics, "diagnosis": diagnosis}))
    result = show(folder)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    warning = result.stderr.splitlines()[0]
    assert warning.startswith(f"Warning: {folder}: metrics.json: diagnosis") and warning.endswith(", skipped")


@pytest.mark.parametrize("metrics", [[], "x", {"best_val_accuracy": "0.8"}, {"epochs_completed": "3"}])
def test_show_reports_a_metrics_file_of_the_wrong_shape(tmp_path: Path, metrics: Any) -> None:
    folder = make_run(tmp_path, "odd", metrics=False)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    result = show(folder)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith(f"Warning: {folder}: metrics.json")


def test_show_a_run_without_a_finished_epoch(tmp_path: Path) -> None:
    folder = make_run(tmp_path, "stopped", status="interrupted", metrics=False)
    (folder / "history.csv").write_text(",".join(runs.HISTORY_COLUMNS) + "\n")
    runs.write_json(folder / "metrics.json", {"test_accuracy": math.nan, "best_val_accuracy": math.nan,
                                              "best_epoch": None, "epochs_completed": 0,
                                              "diagnosis": diagnose([])})  # verdict null: no telemetry
    result = show(folder)
    assert result.exit_code == 0, result.output
    assert "best val accuracy - (no finished epoch)" in result.stdout
    assert "Diagnosis: -" in result.stdout
    assert "None" not in result.stdout and "nan" not in result.stdout


def test_show_a_diverged_run_without_a_finite_val_accuracy(tmp_path: Path) -> None:
    folder = make_run(tmp_path, "nan", status="diverged", metrics=False, val=[math.nan])
    runs.write_json(folder / "metrics.json", {"best_val_accuracy": None, "best_epoch": None})
    out = show(folder).stdout
    assert "best val accuracy - (no finite val accuracy)" in out and "epoch None" not in out


def test_long_layer_tables_keep_the_layers_the_diagnosis_names_and_say_rows_were_left_out() -> None:
    rows = [{"layer": f"dense_{i}"} for i in range(1, 101)] + [{"layer": "output"}]
    diagnosis = {"evidence": {"first_layer": "dense_1", "worst_dead_layer": "dense_68",
                              "divergence": {"first_layer": "dense_71"}}}
    named = render_runs.named_layers(diagnosis)
    assert named == {"dense_1", "dense_68", "dense_71"}
    shown, note = render_runs.thin_layers(rows, diagnosis, "layers.csv")
    layers = [r["layer"] for r in shown]
    assert len(shown) < len(rows)
    assert {"dense_1", "dense_68", "dense_71", "dense_100", "output"} <= set(layers)
    assert layers == sorted(layers, key=[r["layer"] for r in rows].index)  # input-to-output order kept
    assert f"{len(shown)} of 101 layers shown" in note
    assert render_runs.thin_layers(rows[:5], diagnosis, "layers.csv") == (rows[:5], None)


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_show_prints_in_a_locale_without_the_table_symbols(tmp_path, encoding):
    """‖, δ and · print as '?' where stdout cannot encode them, instead of failing the command."""
    import os
    import subprocess
    import sys

    folder = make_run(tmp_path, "leaky_he")
    env = {**os.environ, "PYTHONIOENCODING": encoding}
    proc = subprocess.run([sys.executable, "-m", "gradexp", "show", str(folder)], capture_output=True, env=env,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.decode(encoding)
    assert "Layers at epoch 0" in out and "?L/?W" in out


@pytest.mark.parametrize("columns", ["80", "50", "30"])
def test_a_narrow_terminal_leaves_columns_out_but_never_splits_a_number(tmp_path, monkeypatch, columns):
    folder = make_run(tmp_path, "leaky_he")
    monkeypatch.setenv("COLUMNS", columns)
    result = CliRunner().invoke(main, ["show", str(folder)])
    assert result.exit_code == 0, result.output
    body = [[c.strip() for c in line.strip("│").split("│")] for line in result.stdout.splitlines()
            if line.startswith("│")]
    assert all(row[0] for row in body), body  # no continuation line in any table: nothing folded
    layer_rows = [row for row in body if row[0].startswith(("dense", "output"))]
    assert layer_rows
    number = r"-|-?\d+(\.\d+)?(e[+-]\d+)?"
    assert all(re.fullmatch(number, cell) for row in layer_rows for cell in row[1:]), layer_rows
    assert "Not shown, to fit the terminal: max ‖∂L/∂W‖" in result.stdout
    assert "‖δ‖" in result.stdout and "saturated" in result.stdout
