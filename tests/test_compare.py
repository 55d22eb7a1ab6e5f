"""`gradexp compare`: rows from run folders, sorting, the formats, the plot, damaged folders."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from gradexp import compare, plots, runs
from gradexp.cli import main
from gradexp.diagnosis import diagnose
from gradexp.errors import GradexpError

LAYERS = ("dense_1", "dense_2", "output")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def resolved_config(name: str, activation: Any = "relu", initializer: Any = "he_normal",
                    width: list[int] | None = None, epochs: int = 3, optimizer: dict[str, Any] | None = None) -> dict:
    """A config as `Config.resolved()` writes it: every section, names expanded to mappings."""
    width = width or [300, 100]
    act = activation if isinstance(activation, dict) else {"name": activation}
    if act["name"] == "leaky_relu":
        act = {"negative_slope": 0.3, **act}
    init = initializer if isinstance(initializer, dict) else {"name": initializer, "seed": None}
    return {
        "name": name, "seed": 42,
        "data": {"dataset": "fashion_mnist", "validation_size": 5000, "scaling": "unit", "dir": None, "limit": None},
        "model": {"depth": len(width), "width": width, "activation": act, "initializer": init,
                  "bias_initializer": {"name": "zeros"}, "batch_norm": "none", "dropout": 0.0},
        "optimizer": optimizer or {"name": "sgd", "learning_rate": 0.001, "momentum": 0.0, "clipnorm": None,
                                   "clipvalue": None, "global_clipnorm": None},
        "training": {"epochs": epochs, "batch_size": 32, "precision": "float32"},
        "telemetry": {"enabled": True, "vanishing_ratio": 0.001, "exploding_ratio": 1000.0, "dead_fraction": 0.7,
                      "saturation_threshold": 5.0, "saturated_fraction": 0.5},
    }


def layer_rows(epochs: int = 3, signal_gain: float = 1.0, grad: float = 0.1) -> list[dict[str, Any]]:
    """layers.csv rows for epochs 0..epochs. `signal_gain` < 1e-3 makes the first layer's δ vanish."""
    out = []
    for epoch in range(epochs + 1):
        for i, layer in enumerate(LAYERS):
            depth_from_output = len(LAYERS) - 1 - i
            delta = 0.5 * signal_gain ** (depth_from_output / (len(LAYERS) - 1))
            hidden = layer != "output"
            out.append({
                "epoch": epoch, "layer": layer,
                "grad_norm": grad * (1 + i) * (1 + 0.1 * epoch), "grad_norm_max": grad * (2 + i),
                "weight_norm": 10.0 + i, "update_ratio": None if epoch == 0 else 1e-4 * (i + 1),
                "act_mean": 0.2, "act_std": 0.5 - 0.1 * i,
                "dead_fraction": 0.05 if hidden else None, "saturated_fraction": 0.0 if hidden else None,
                "delta_norm": delta,
            })
    return out


def make_run(root: Path, name: str, *, status: str = "completed", epochs: int = 3, configured_epochs: int | None = None,
             val: list[float] | None = None, test_accuracy: float | None = 0.85, signal_gain: float = 1.0,
             started: datetime | None = None, metrics: bool = True, run_extra: dict[str, Any] | None = None,
             **config_kwargs: Any) -> Path:
    """A realistic run folder: config.yaml, run.json, history.csv, layers.csv and metrics.json."""
    started = started or datetime(2024, 5, 1, 12, 0, 0).astimezone()
    folder = root / f"{started.strftime('%Y-%m-%dT%H-%M-%S')}_{name}"
    folder.mkdir(parents=True)
    runs.write_yaml(folder / "config.yaml",
                    resolved_config(name, epochs=configured_epochs or epochs, **config_kwargs))
    runs.write_json(folder / "run.json", {
        "status": status, "name": name, "started_at": started.isoformat(timespec="seconds"),
        "ended_at": (started + timedelta(seconds=42)).isoformat(timespec="seconds"), "duration_seconds": 42.5,
        "command": ["gradexp", "train", f"configs/{name}.yaml"], "device": "CPU",
        "versions": {"gradexp": "0.1.0", "tensorflow": "2.21.0", "keras": "3.12.0", "python": "3.12.1"},
        "seed": 42, **(run_extra or {}),
    })
    val = val or [0.70 + 0.05 * e for e in range(epochs)]
    history = [{"epoch": e + 1, "loss": 1.0 / (e + 1), "accuracy": v - 0.01, "val_loss": 1.1 / (e + 1),
                "val_accuracy": v, "learning_rate": 0.001, "seconds": 4.0 + e * 0.1} for e, v in enumerate(val)]
    runs.write_csv(folder / "history.csv", runs.HISTORY_COLUMNS, history)
    layers = layer_rows(epochs, signal_gain)
    runs.write_csv(folder / "layers.csv", runs.LAYER_COLUMNS, layers)
    if metrics:
        best = max(range(len(val)), key=lambda i: val[i])
        runs.write_json(folder / "metrics.json", {
            "test_loss": 0.4, "test_accuracy": math.nan if test_accuracy is None else test_accuracy,
            "best_val_accuracy": val[best], "best_epoch": best + 1, "final_val_accuracy": val[-1],
            "epochs_completed": len(val), "seconds_per_epoch": 4.15, "samples_per_second": 13000.0,
            "diagnosis": diagnose(layers),
        })
    return folder


@pytest.fixture
def three_runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    make_run(root, "relu_he", test_accuracy=0.86, started=datetime(2024, 5, 1, 9, 0))
    make_run(root, "leaky_he", test_accuracy=0.88, activation={"name": "leaky_relu", "negative_slope": 0.2},
             started=datetime(2024, 5, 1, 10, 0))
    make_run(root, "sigmoid_deep", test_accuracy=None, signal_gain=1e-6, activation="sigmoid",
             initializer="random_normal", width=[100] * 20, started=datetime(2024, 5, 1, 11, 0))
    return root


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, ["compare", *args])


def parse_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


# ---------------------------------------------------------------- rows


def test_rows_from_a_parent_folder(three_runs: Path) -> None:
    result = invoke(str(three_runs), "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = parse_csv(result.stdout)
    assert [r["name"] for r in rows] == ["relu_he", "leaky_he", "sigmoid_deep"]
    assert list(rows[0]) == list(compare.COLUMNS)
    assert result.stderr == ""


def test_row_contents(three_runs: Path) -> None:
    found, warnings = runs.collect([three_runs])
    assert warnings == []
    relu, leaky, sigmoid = compare.rows(found)
    assert relu["run"] == "2024-05-01T09-00-00_relu_he"
    assert relu["started"] == "2024-05-01 09:00"
    assert relu["activation"] == "relu"
    assert relu["initializer"] == "he_normal"
    assert relu["widths"] == "300-100" and relu["depth"] == 2
    assert relu["optimizer"] == "sgd" and relu["learning_rate"] == 0.001
    assert relu["epochs"] == "3/3" and relu["status"] == "completed" and relu["verdict"] == "healthy"
    assert relu["best_val_accuracy"] == pytest.approx(0.8) and relu["final_val_accuracy"] == pytest.approx(0.8)
    assert relu["test_accuracy"] == 0.86 and relu["seconds_per_epoch"] == 4.15
    assert leaky["activation"] == "leaky_relu(negative_slope=0.2)"
    assert sigmoid["widths"] == "100x20" and sigmoid["depth"] == 20
    assert sigmoid["verdict"] == "vanishing"
    assert sigmoid["test_accuracy"] is None  # NaN in the run, None in the row


def test_default_parameters_are_not_shown(tmp_path: Path) -> None:
    make_run(tmp_path, "a", activation={"name": "leaky_relu", "negative_slope": 0.3},
             initializer={"name": "variance_scaling", "scale": 2.0, "mode": "fan_in",
                          "distribution": "truncated_normal", "seed": None},
             optimizer={"name": "sgd", "learning_rate": 0.01, "momentum": 0.0, "clipnorm": 1.0,
                        "clipvalue": None, "global_clipnorm": None})
    (row,) = compare.rows(runs.collect([tmp_path])[0])
    assert row["activation"] == "leaky_relu"
    assert row["initializer"] == "variance_scaling(scale=2)"
    assert row["optimizer"] == "sgd(clipnorm=1)"


def test_rows_tell_apart_batch_size_precision_and_seed(tmp_path: Path) -> None:
    folder = make_run(tmp_path, "bf16")
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config["training"].update(batch_size=128, precision="mixed_bfloat16")
    config["seed"] = 7
    runs.write_yaml(folder / "config.yaml", config)
    (row,) = compare.rows([runs.read_run(folder)])
    assert (row["batch_size"], row["precision"], row["seed"]) == (128, "mixed_bfloat16", 7)
    sorted_rows = parse_csv(invoke(str(tmp_path), "--sort", "batch", "--format", "csv").stdout)
    assert sorted_rows[0]["batch_size"] == "128"


def test_missing_metrics_and_history_give_none(tmp_path: Path) -> None:
    folder = make_run(tmp_path, "bare", status="interrupted", configured_epochs=10, metrics=False)
    (folder / "history.csv").unlink()
    (row,) = compare.rows([runs.read_run(folder)])
    assert row["epochs"] == "0/10"
    assert row["verdict"] is None
    for key in ("best_val_accuracy", "final_val_accuracy", "test_accuracy", "seconds_per_epoch"):
        assert row[key] is None
    assert set(row) == set(compare.COLUMNS)


def test_history_fills_in_when_metrics_are_missing(tmp_path: Path) -> None:
    folder = make_run(tmp_path, "partial", status="interrupted", epochs=2, configured_epochs=5,
                      val=[0.7, 0.65], metrics=False)
    (row,) = compare.rows([runs.read_run(folder)])
    assert row["epochs"] == "2/5"
    assert row["best_val_accuracy"] == 0.7 and row["final_val_accuracy"] == 0.65
    assert row["seconds_per_epoch"] == pytest.approx(4.1)


def test_history_of_a_diverged_run_without_metrics_leaves_out_its_last_epoch(tmp_path: Path) -> None:
    folder = make_run(tmp_path, "blown", status="diverged", epochs=3, val=[0.7, 0.75, 0.8], metrics=False)
    (row,) = compare.rows([runs.read_run(folder)])
    assert row["epochs"] == "2/3"
    assert row["seconds_per_epoch"] == pytest.approx(4.1)  # epoch 2 alone: epoch 1 compiles, epoch 3 diverged


def test_metrics_json_is_not_second_guessed_from_history(tmp_path: Path) -> None:
    """A null figure in metrics.json (a diverged run's timing, a one-epoch run's steady rate) stays
    null: history.csv is read only for runs that have no metrics.json."""
    folder = make_run(tmp_path, "one", epochs=1)
    metrics = json.loads((folder / "metrics.json").read_text())
    runs.write_json(folder / "metrics.json", {**metrics, "seconds_per_epoch": math.nan, "best_val_accuracy": None})
    (row,) = compare.rows([runs.read_run(folder)])
    assert row["seconds_per_epoch"] is None and row["best_val_accuracy"] is None


@pytest.mark.parametrize("history,diverged,expected", [
    ([], False, {"epochs_completed": 0, "best_epoch": None}),
    ([(1, 0.7, 6.0)], False, {"epochs_completed": 1, "best_epoch": 1, "first_epoch_seconds": 6.0}),
    ([(1, 0.7, 6.0), (2, 0.8, 1.0), (3, 0.8, 2.0)], False,
     {"epochs_completed": 3, "best_epoch": 2, "best_val_accuracy": 0.8, "final_val_accuracy": 0.8,
      "seconds_per_epoch": 1.5, "first_epoch_seconds": 6.0}),
    ([(1, 0.7, 6.0), (2, 0.8, 1.0), (3, math.nan, 9.0)], True,
     {"epochs_completed": 2, "best_epoch": 2, "seconds_per_epoch": 1.0}),
])
def test_history_summary(history, diverged, expected) -> None:
    rows = [{"epoch": e, "val_accuracy": v, "seconds": s} for e, v, s in history]
    summary = runs.history_summary(rows, diverged)
    for key, value in expected.items():
        assert summary[key] == value, key
    if len(history) - diverged < 2:
        assert math.isnan(summary["seconds_per_epoch"])  # one epoch's time includes compilation


def test_history_rows_without_an_epoch_are_not_best(tmp_path: Path) -> None:
    rows = [{"epoch": None, "val_accuracy": 0.99, "seconds": 1.0}, {"epoch": 2, "val_accuracy": 0.8, "seconds": 1.0}]
    summary = runs.history_summary(rows, False)
    assert (summary["best_val_accuracy"], summary["best_epoch"]) == (0.8, 2)


def test_plot_into_a_run_folder_suggests_a_file_beside_the_runs(three_runs: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    run = sorted(three_runs.iterdir())[0]
    result = invoke(str(three_runs), "--plot", f"runs/{run.name}")
    assert result.exit_code == 2
    assert result.stderr.strip().endswith("give a file name, such as compare.png")
    for target in (f"runs/{run.name}/x.png", f"runs/{run.name}/sub/x.png", f"runs/{run.name}/sub/../x.png"):
        inside = invoke(str(three_runs), "--plot", target)  # a file in it, or below it: refused too
        assert inside.exit_code == 2 and inside.stderr.strip().endswith("put the plot beside it, such as runs/x.png")
    monkeypatch.chdir(run)  # from inside the run folder, the suggestion is beside it
    here = invoke(".", "--plot", "x.png")
    assert here.exit_code == 2 and here.stderr.strip().endswith("such as ../x.png")
    assert not (run / "x.png").exists() and not (run / "sub").exists()


def test_several_run_folders_keep_their_order(three_runs: Path) -> None:
    folders = sorted(three_runs.iterdir())
    result = invoke(str(folders[2]), str(folders[0]), "--format", "json")
    assert result.exit_code == 0, result.output
    assert [r["name"] for r in json.loads(result.stdout)] == ["sigmoid_deep", "relu_he"]


# ---------------------------------------------------------------- sorting


def test_sort_ascending_and_descending_missing_last(three_runs: Path) -> None:
    up = parse_csv(invoke(str(three_runs), "--sort", "test_accuracy", "--format", "csv").stdout)
    down = parse_csv(invoke(str(three_runs), "--sort", "-test_accuracy", "--format", "csv").stdout)
    assert [r["name"] for r in up] == ["relu_he", "leaky_he", "sigmoid_deep"]
    assert [r["name"] for r in down] == ["leaky_he", "relu_he", "sigmoid_deep"]
    assert up[-1]["test_accuracy"] == ""


def test_sort_by_text_and_epochs_is_natural() -> None:
    rows = [{"name": "run-10", "epochs": "10/10"}, {"name": "run-9", "epochs": "9/10"}, {"name": None, "epochs": None}]
    assert [r["name"] for r in compare.sort_rows(rows, "name")] == ["run-9", "run-10", None]
    assert [r["epochs"] for r in compare.sort_rows(rows, "-epochs")] == ["10/10", "9/10", None]
    assert compare.sort_rows(rows, None) == rows


def test_unknown_sort_key_is_one_line_with_a_suggestion(three_runs: Path) -> None:
    result = invoke(str(three_runs), "--sort", "-test_acuracy")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("Error: ")
    assert "'-test_acuracy'" in lines[0] and "did you mean '-test_accuracy'" in lines[0]
    assert "seconds_per_epoch" in lines[0]
    assert "Traceback" not in result.output


def test_sort_rows_raises_gradexp_error() -> None:
    with pytest.raises(GradexpError, match="did you mean 'verdict'"):
        compare.sort_rows([], "verdit")


# ---------------------------------------------------------------- formats


def test_csv_parses_back_with_raw_values(three_runs: Path) -> None:
    rows = parse_csv(invoke(str(three_runs), "--format", "csv").stdout)
    assert len(rows) == 3
    assert float(rows[0]["best_val_accuracy"]) == pytest.approx(0.8)
    assert rows[0]["learning_rate"] == "0.001"


def test_json_parses_back_with_null_for_nan(three_runs: Path) -> None:
    result = invoke(str(three_runs), "--format", "json")
    data = json.loads(result.stdout)
    assert [list(d) for d in data] == [list(compare.COLUMNS)] * 3
    assert data[2]["test_accuracy"] is None
    assert data[0]["depth"] == 2
    assert json.loads(compare.format_rows([{"test_accuracy": math.nan}], "json"))[0]["test_accuracy"] is None


def test_markdown_is_a_github_table(three_runs: Path) -> None:
    lines = invoke(str(three_runs), "--format", "markdown").stdout.splitlines()
    assert lines[0] == "| " + " | ".join(compare.COLUMNS) + " |"
    cells = [c.strip() for c in lines[1].strip("|").split("|")]
    assert len(cells) == len(compare.COLUMNS) and all(set(c) <= set("-:") and "---" in c for c in cells)
    assert len(lines) == 5
    first = [c.strip() for c in lines[2].strip("|").split("|")]
    row = dict(zip(compare.COLUMNS, first, strict=True))
    assert row["best_val_accuracy"] == "0.8000"
    assert row["seconds_per_epoch"] == "4.15"
    assert row["learning_rate"] == "0.001"


def test_markdown_escapes_pipes() -> None:
    text = compare.format_rows([{"name": "a|b"}], "markdown")
    assert "a\\|b" in text


def test_table_is_readable_when_piped(three_runs: Path) -> None:
    result = invoke(str(three_runs))
    assert result.exit_code == 0, result.output
    out = result.stdout
    for name in ("relu_he", "leaky_he", "sigmoid_deep", "vanishing", "100x20", "0.8800"):
        assert name in out
    assert "\x1b[" not in out  # no colour codes off a terminal


def test_a_narrow_table_leaves_out_what_every_run_shares_before_what_tells_them_apart(tmp_path, monkeypatch):
    """Two runs that differ only in batch norm: at 130 columns the batch_norm column stays, and the
    columns left out are first those with one value for all (named with it), and the run's own name."""
    for name, bn in (("plain", "none"), ("bn", "after_activation")):
        folder = make_run(tmp_path / "runs", name, started=datetime(2024, 5, 1, 12, 0, len(name)).astimezone())
        cfg = yaml.safe_load((folder / "config.yaml").read_text())
        cfg["model"]["batch_norm"] = bn
        runs.write_yaml(folder / "config.yaml", cfg)
    monkeypatch.setenv("COLUMNS", "130")
    result = invoke(str(tmp_path / "runs"))
    assert result.exit_code == 0, result.output
    header = next(line for line in result.stdout.splitlines() if "run" in line and "verdict" in line)
    assert "batch norm" in header and "seed" not in header and "name" not in header
    note = " ".join(result.stdout.split())
    assert "Not shown, to fit the terminal: started, name, seed (42 in every run)" in note
    monkeypatch.setenv("COLUMNS", "40")  # too narrow for what must stay: printed whole, not squeezed
    rows = [[c.strip() for c in line.strip("│").split("│")]
            for line in invoke(str(tmp_path / "runs")).stdout.splitlines() if line.startswith("│")]
    assert len(rows) == 2 and all(row[0].endswith(("_plain", "_bn")) for row in rows)  # one line per run
    assert all("0.8000" in row and "0.8500" in row for row in rows)  # accuracies whole


# ---------------------------------------------------------------- plot


def test_plot_writes_a_png(three_runs: Path, tmp_path: Path) -> None:
    target = tmp_path / "out" / "compare.png"
    result = invoke(str(three_runs), "--format", "csv", "--plot", str(target))
    assert result.exit_code == 0, result.output
    data = target.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000
    assert [p.name for p in target.parent.iterdir()] == ["compare.png"]  # no temporary file left behind


def test_plot_needs_a_png_suffix(three_runs: Path, tmp_path: Path) -> None:
    result = invoke(str(three_runs), "--plot", str(tmp_path / "compare.pdf"))
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert ".png" in result.stderr
    assert not (tmp_path / "compare.pdf").exists()


def test_plot_labels_tell_apart_runs_of_the_same_name_and_folder(tmp_path: Path) -> None:
    started = datetime(2024, 5, 1, 9, 0)
    a = make_run(tmp_path / "a" / "runs", "same", started=started)
    b = make_run(tmp_path / "b" / "runs", "same", started=started)
    c = make_run(tmp_path / "a" / "runs", "other", started=started)
    assert a.name == b.name
    labels = plots._labels([runs.read_run(p) for p in (a, b, c)])
    assert labels == [f"a/runs/{a.name}", f"b/runs/{b.name}", "other"]


def test_plot_copes_with_runs_without_measurements(tmp_path: Path) -> None:
    folder = make_run(tmp_path / "runs", "bare", metrics=False)
    (folder / "layers.csv").unlink()
    (folder / "history.csv").unlink()
    out = plots.compare_plot([runs.read_run(folder)], tmp_path / "bare.png")
    assert out.read_bytes().startswith(PNG_MAGIC)


def test_a_plot_of_hundreds_of_long_named_runs_says_only_where_it_went(tmp_path: Path) -> None:
    """Past MAX_LEGEND runs the legend gives way to a line about the colours; matplotlib's layout
    notices stay off stderr, and long names are cut in the legend."""
    name = "a_rather_long_run_name_" + "x" * 40
    for i in range(plots.MAX_LEGEND + 5):
        make_run(tmp_path / "runs", f"{name}{i}", started=datetime(2024, 5, 1, 9, 0) + timedelta(minutes=i))
    target = tmp_path / "many.png"
    result = invoke(str(tmp_path / "runs"), "--format", "csv", "--plot", str(target))
    assert result.exit_code == 0, result.output
    assert result.stderr == f"Plot written to {target}\n"
    assert target.read_bytes().startswith(PNG_MAGIC)
    assert len(plots._short_label(name * 2)) == plots.LABEL_CHARS and plots._short_label("short") == "short"


def test_layer_heatmap(three_runs: Path, tmp_path: Path) -> None:
    run = runs.collect([three_runs])[0][2]
    out = plots.layer_heatmap(run, tmp_path / "heat.png")
    assert out.read_bytes().startswith(PNG_MAGIC)


# ---------------------------------------------------------------- damaged folders


def damaged(tmp_path: Path) -> list[Path]:
    bad = tmp_path / "bad"
    truncated = make_run(bad, "truncated")
    text = (truncated / "run.json").read_text()
    (truncated / "run.json").write_text(text[: len(text) // 2])
    no_config = make_run(bad, "no_config", started=datetime(2024, 5, 2, 8, 0))
    (no_config / "config.yaml").unlink()
    empty = bad / "empty"
    empty.mkdir()
    plain = bad / "notes.txt"
    plain.write_text("not a run\n")
    return [truncated, no_config, empty, plain]


def test_damaged_folders_warn_once_each(three_runs: Path, tmp_path: Path) -> None:
    bad = damaged(tmp_path)
    good = sorted(three_runs.iterdir())[0]
    result = invoke(str(good), *map(str, bad), "--format", "csv")
    assert result.exit_code == 0, result.output
    warnings = result.stderr.strip().splitlines()
    assert len(warnings) == 4
    assert all(w.startswith("Warning: ") for w in warnings)
    for path, warning in zip(bad, warnings, strict=True):
        assert str(path) in warning
    assert "run.json" in warnings[0] and "config.yaml" in warnings[1]
    assert [r["name"] for r in parse_csv(result.stdout)] == ["relu_he"]


def test_nothing_readable_exits_2(tmp_path: Path) -> None:
    bad = damaged(tmp_path)
    result = invoke(*map(str, bad))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert sum(line.startswith("Warning: ") for line in lines) == 4
    assert lines[-1].startswith("Error: ") and "no readable run folders" in lines[-1]
    assert result.stdout == ""


# ---------------------------------------------------------------- no TensorFlow


def test_compare_does_not_import_tensorflow(three_runs: Path, tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from gradexp.cli import main\n"
        f"main(['compare', {str(three_runs)!r}, '--format', 'json'], standalone_mode=False)\n"
        f"main(['compare', {str(three_runs)!r}], standalone_mode=False)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'matplotlib'))\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "relu_he" in proc.stdout


# ---------------------------------------------------------------- damaged result files


def _cut_last_line(path: Path, keep: int = 2) -> None:
    """A half-copied file: the last line stops after `keep` fields."""
    lines = path.read_text().splitlines()
    lines[-1] = ",".join(lines[-1].split(",")[:keep])
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("damage", ["history_short", "history_long", "layers_short"])
def test_a_csv_with_a_short_or_long_row_skips_that_run(tmp_path: Path, damage: str) -> None:
    root = tmp_path / "runs"
    make_run(root, "good", started=datetime(2024, 5, 1, 9, 0))
    bad = make_run(root, "bad", started=datetime(2024, 5, 1, 10, 0))
    name = "layers.csv" if damage.startswith("layers") else "history.csv"
    if damage.endswith("long"):
        (bad / name).write_text((bad / name).read_text() + "4,0.1,0.9,0.2,0.9,0.001,4.0,extra\n")
    else:
        _cut_last_line(bad / name)
    result = invoke(str(root), "--format", "csv")
    assert result.exit_code == 0, result.output
    (warning,) = result.stderr.strip().splitlines()
    assert warning.startswith(f"Warning: {bad}: {name}: line ") and "fields, expected" in warning
    assert "skipped" in warning
    assert [r["name"] for r in parse_csv(result.stdout)] == ["good"]


@pytest.mark.parametrize(("name", "content", "expected"), [
    ("metrics.json", "{\"test_accuracy\": 0.8", "metrics.json is unreadable"),
    ("history.csv", ",".join(runs.HISTORY_COLUMNS) + "\n1," + "9" * 200_000 + ",,,,,\n",
     "history.csv is unreadable"),  # csv's field limit
    ("layers.csv", ",".join(runs.LAYER_COLUMNS).encode() + b"\n1,\xff\xfe\n", "layers.csv is unreadable"),
    ("metrics.json", "[" * 100_000 + "]" * 100_000, "metrics.json is unreadable (nested too deeply)"),
    ("history.csv", "foo,bar\n1,2\n", "history.csv: its header lacks epoch, loss"),
    ("history.csv", ",".join(runs.HISTORY_COLUMNS) + "\n1,abc,0.5,,,0.01,1.0\n",
     "history.csv: line 2: loss is 'abc', not a number"),
    ("layers.csv", ",".join(runs.LAYER_COLUMNS) + "\n1,dense_1,x" + ",1" * 8 + "\n",
     "layers.csv: line 2: grad_norm is 'x', not a number"),
])
def test_an_unreadable_result_file_is_named(tmp_path: Path, name: str, content: str | bytes, expected: str) -> None:
    folder = make_run(tmp_path, "bad")
    if isinstance(content, bytes):
        (folder / name).write_bytes(content)
    else:
        (folder / name).write_text(content)
    with pytest.raises(runs.RunsError, match=re.escape(expected)):
        runs.read_run(folder)
    result = invoke(str(folder))
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Warning: {folder}: {expected}")


@pytest.mark.parametrize("name", ["history.csv", "metrics.json", "run.json"])
@pytest.mark.parametrize("kind", ["device", "fifo"])
def test_a_result_file_that_is_not_a_regular_file_is_refused_unread(tmp_path: Path, name: str, kind: str) -> None:
    """A FIFO would block the read forever, /dev/zero would fill memory: neither is opened."""
    import os

    folder = make_run(tmp_path, "odd")
    (folder / name).unlink()  # run.json too: a folder whose run.json is no regular file is damaged
    if kind == "fifo":
        os.mkfifo(folder / name)
    else:
        (folder / name).symlink_to("/dev/zero")
    with pytest.raises(runs.RunsError, match=re.escape(f"{name} is not a regular file")):
        runs.read_run(folder)
    result = invoke(str(folder))
    assert result.exit_code == 2 and result.stderr.startswith(f"Warning: {folder}: {name} is not a regular file")


@pytest.mark.parametrize(("change", "expected"), [
    ({"diagnosis": {"evidence": [1]}}, "diagnosis.evidence is [1], expected a mapping"),
    ({"diagnosis": "healthy"}, "diagnosis is \"healthy\", expected a mapping"),
    ({"test_accuracy": "0.8"}, "test_accuracy is \"0.8\", expected a number"),
    ({"best_epoch": 2.5}, "best_epoch is 2.5, expected an integer"),
    ({"best_val_accuracy": 10 ** 400},  # JSON allows it; a float cannot hold it
     "best_val_accuracy is 1" + "0" * 36 + "..., expected a number"),
])
def test_malformed_metrics_skip_the_run_in_compare(tmp_path: Path, change: dict[str, Any], expected: str) -> None:
    good = make_run(tmp_path, "good", started=datetime(2024, 5, 1, 9, 0))
    bad = make_run(tmp_path, "bad", started=datetime(2024, 5, 1, 10, 0))
    metrics = json.loads((bad / "metrics.json").read_text())
    (bad / "metrics.json").write_text(json.dumps({**metrics, **change}))
    result = invoke(str(good), str(bad), "--format", "csv")
    assert result.exit_code == 0, result.output
    assert result.stderr == f"Warning: {bad}: metrics.json: {expected}, skipped\n"
    assert [r["name"] for r in parse_csv(result.stdout)] == ["good"]


def test_a_run_without_a_finished_epoch_shows_dashes(tmp_path: Path) -> None:
    folder = make_run(tmp_path, "stopped", status="interrupted", metrics=False)
    (folder / "history.csv").write_text(",".join(runs.HISTORY_COLUMNS) + "\n")
    runs.write_json(folder / "metrics.json", {"test_accuracy": math.nan, "best_val_accuracy": math.nan,
                                              "best_epoch": None, "epochs_completed": 0})
    result = invoke(str(folder), "--format", "markdown")
    assert result.exit_code == 0, result.output
    row = dict(zip(compare.COLUMNS, [c.strip() for c in result.stdout.splitlines()[2].strip("|").split("|")],
                   strict=True))
    assert row["best_val_accuracy"] == "-" and row["epochs"] == "0/3"
    assert "None" not in result.stdout and "nan" not in result.stdout


# ---------------------------------------------------------------- --plot checked before any output


@pytest.mark.parametrize(("target", "expected"), [
    ("x.txt", "--plot x.txt: the plot is a PNG image; give a file name ending in .png, e.g. compare.png"),
    ("", "--plot '': give a file name ending in .png, e.g. compare.png"),
    ("afolder", "--plot afolder: afolder is a folder; give a file name, such as afolder/compare.png"),
    ("runs", "--plot runs: runs is a folder; give a file name, such as compare.png"),  # not among the runs
    ("afile/x.png", "--plot afile/x.png: afile is a file, not a folder; choose a path in a folder"),
    ("afile/sub/x.png", "--plot afile/sub/x.png: afile is a file, not a folder; choose a path in a folder"),
])
def test_plot_target_is_checked_before_any_output(three_runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  target: str, expected: str) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afolder").mkdir()
    (tmp_path / "afile").write_text("a file\n")
    result = invoke(str(three_runs), str(tmp_path / "missing"), "--plot", target)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == f"Error: {expected}\n"  # not even the warning about `missing`
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "afolder", "runs"]


@pytest.mark.parametrize("link", ["dangling", "loop"])
def test_plot_under_a_broken_link_is_refused_before_any_output(three_runs: Path, tmp_path: Path, link: str) -> None:
    (tmp_path / link).symlink_to(tmp_path / ("nowhere" if link == "dangling" else link))
    target = tmp_path / link / "x.png"
    result = invoke(str(three_runs), "--format", "csv", "--plot", str(target))
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == (f"Error: --plot {target}: {tmp_path / link} is a broken symbolic link (or a loop of "
                             "them); fix the link or choose another path\n")


def test_paths_that_cannot_be_looked_at_are_skipped(three_runs: Path, tmp_path: Path) -> None:
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    too_long = tmp_path / ("a" * 300)
    result = invoke(str(tmp_path / "loop"), str(too_long), str(three_runs), "--format", "csv")
    assert result.exit_code == 0, result.output
    assert len(parse_csv(result.stdout)) == 3
    warnings = result.stderr.splitlines()
    assert len(warnings) == 2 and all(w.endswith("skipped") for w in warnings)
    assert "cannot be looked at" in warnings[0] and "File name too long" in warnings[1]


def test_a_date_in_a_hand_edited_config_reads_back_as_text(tmp_path: Path) -> None:
    folder = make_run(tmp_path, "dated")
    text = (folder / "config.yaml").read_text()
    (folder / "config.yaml").write_text(text.replace("name: dated", "name: 2020-01-01"))
    result = invoke(str(folder), "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["name"] == "2020-01-01"


def test_runs_of_the_same_folder_name_are_told_apart_by_their_parent(tmp_path: Path) -> None:
    first = make_run(tmp_path / "copy1", "same", started=datetime(2024, 5, 1, 9, 0))
    second = make_run(tmp_path / "copy2", "same", started=datetime(2024, 5, 1, 9, 0))
    other = make_run(tmp_path / "copy2", "other", started=datetime(2024, 5, 1, 10, 0))
    result = invoke(str(first), str(second), str(other), "--format", "csv")
    assert result.exit_code == 0, result.output
    assert [r["run"] for r in parse_csv(result.stdout)] == [f"copy1/{first.name}", f"copy2/{second.name}",
                                                             other.name]


@pytest.mark.parametrize("name", ["metrics.json", "history.csv", "layers.csv"])
def test_a_result_file_that_is_a_folder_is_damage_not_absence(tmp_path: Path, name: str) -> None:
    folder = make_run(tmp_path, "bad")
    (folder / name).unlink()
    (folder / name).mkdir()
    with pytest.raises(runs.RunsError, match=re.escape(f"{name} is not a regular file")):
        runs.read_run(folder)


def test_parents_of_the_same_name_are_told_apart_by_the_folder_above(tmp_path: Path) -> None:
    # runs/ and a copy of it, copy/runs/: the parents share a name, so one more folder is shown.
    first = make_run(tmp_path / "runs", "same", started=datetime(2024, 5, 1, 9, 0))
    second = make_run(tmp_path / "copy" / "runs", "same", started=datetime(2024, 5, 1, 9, 0))
    result = invoke(str(first), str(tmp_path / "copy" / "runs"), "--format", "csv")
    assert result.exit_code == 0, result.output
    labels = [r["run"] for r in parse_csv(result.stdout)]
    assert labels == [f"{tmp_path.name}/runs/{first.name}", f"copy/runs/{second.name}"]


def test_sort_takes_the_table_headers_too(three_runs: Path) -> None:
    by_header = invoke(str(three_runs), "--format", "csv", "--sort", "-test")
    by_name = invoke(str(three_runs), "--format", "csv", "--sort", "-test_accuracy")
    assert by_header.exit_code == 0, by_header.output
    assert by_header.stdout == by_name.stdout
    assert by_header.stdout != invoke(str(three_runs), "--format", "csv", "--sort", "test").stdout


def test_plot_check_leaves_no_folder_behind(three_runs: Path, tmp_path: Path) -> None:
    target = tmp_path / "new" / "deeper" / "compare.png"
    assert plots.check_path(str(target)) == target
    assert not (tmp_path / "new").exists()  # created only when the plot is drawn
    result = invoke(str(tmp_path / "nothing"), "--plot", str(target))
    assert result.exit_code == 2 and not (tmp_path / "new").exists()


def test_plain_files_in_a_glob_are_skipped_with_a_warning(three_runs: Path, tmp_path: Path) -> None:
    # README: `compare runs/ --plot compare.png`, then `compare runs/*`; a stray PNG in runs/ is only noted.
    (three_runs / "compare.png").write_bytes(PNG_MAGIC)
    result = invoke(*sorted(str(p) for p in three_runs.iterdir()), "--format", "csv")
    assert result.exit_code == 0, result.output
    assert result.stderr == f"Warning: {three_runs / 'compare.png'}: a file, not a run folder, skipped\n"
    assert len(parse_csv(result.stdout)) == 3
    result = invoke(str(three_runs), "--format", "csv")  # inside a parent folder, files are ignored silently
    assert result.stderr == "" and len(parse_csv(result.stdout)) == 3


def test_plot_into_an_unwritable_folder_fails_before_any_output(three_runs: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(plots.tempfile, "TemporaryFile", refuse)  # root ignores chmod; fake the refusal
    result = invoke(str(three_runs), "--plot", str(tmp_path / "locked" / "x.png"))
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == (f"Error: --plot {tmp_path / 'locked' / 'x.png'}: cannot write in the folder {tmp_path} "
                             "(Permission denied); choose a path in a writable folder\n")


def test_a_closed_pipe_still_gets_the_plot(three_runs: Path, tmp_path: Path) -> None:
    """`gradexp compare runs/ --plot x.png | head -1`: the file asked for is written before the table."""
    target = tmp_path / "plots" / "x.png"
    proc = subprocess.Popen([sys.executable, "-m", "gradexp", "compare", str(three_runs), "--plot", str(target)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before anything is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert target.stat().st_size > 1000
