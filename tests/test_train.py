"""`gradexp train` end to end: run folder contents, exit codes, divergence, interrupts, concurrency."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from gradexp.cli import main
from gradexp.config import load_config
from gradexp.runs import LAYER_COLUMNS, read_run
from gradexp.train import train


def run_cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def only_run(runs_dir: Path) -> Path:
    folders = [p for p in runs_dir.iterdir() if p.is_dir()]
    assert len(folders) == 1, folders
    return folders[0]


def test_train_writes_complete_run_folder(write_config, tmp_path):
    cfg = write_config(name="tiny")
    result = run_cli("train", cfg, "--runs-dir", tmp_path / "runs", "--quiet", "--set", "training.epochs=3")
    assert result.exit_code == 0, result.output + result.stderr
    folder = only_run(tmp_path / "runs")
    assert folder.name.endswith("_tiny")
    assert {p.name for p in folder.iterdir()} == {"config.yaml", "run.json", "history.csv", "layers.csv",
                                                  "metrics.json", "model.keras"}
    run = read_run(folder)
    assert run.run["status"] == "completed" and run.run["seed"] == 1
    assert set(run.run["versions"]) == {"gradexp", "tensorflow", "keras", "python"}
    assert run.run["device"] == "CPU" and run.run["duration_seconds"] > 0
    assert "--xla_cpu_multi_thread_eigen=false" in run.run["xla_flags"].split()  # the engine's XLA options
    assert run.config["training"]["epochs"] == 3  # --set applied to the resolved config
    assert [h["epoch"] for h in run.history] == [1, 2, 3]
    assert list(run.history[0]) == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate",
                                    "seconds"]
    assert len(run.layers) == 4 * 3  # epochs 0..3 x (2 hidden + output)
    assert {"test_loss", "test_accuracy", "best_val_accuracy", "best_epoch", "seconds_per_epoch",
            "samples_per_second", "diagnosis"} <= set(run.metrics)
    verdict = run.metrics["diagnosis"]["verdict"]
    assert verdict in {"healthy", "vanishing", "exploding", "dead_units", "saturated"}
    assert re.search(rf"^diagnosis +{verdict}$", result.output, re.M)  # the summary prints what metrics.json holds
    assert run.metrics["diagnosis"]["summary"] in result.output
    model = keras.models.load_model(folder / "model.keras")
    probs = model.predict(np.zeros((2, 28, 28), np.float32), verbose=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert not list(folder.glob(".*tmp*"))  # no temporary files left behind


def test_compare_reads_trained_runs(write_config, tmp_path):
    runs_dir = tmp_path / "runs"
    for act in ("relu", "tanh"):
        cfg = write_config({"model": {"activation": act}}, name=act)
        assert run_cli("train", cfg, "--runs-dir", runs_dir, "--quiet").exit_code == 0
    result = run_cli("compare", runs_dir, "--format", "json", "--sort", "activation")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.output)
    assert [r["activation"].split("(")[0] for r in rows] == ["relu", "tanh"]
    assert all(r["status"] == "completed" for r in rows)


def test_learning_rate_10_diverges_with_exit_3(write_config, tmp_path):
    cfg = write_config({"model": {"depth": 6, "width": 64, "initializer": {"name": "random_normal", "stddev": 1.0}},
                        "training": {"epochs": 5}})
    result = run_cli("train", cfg, "--runs-dir", tmp_path / "runs", "--quiet", "--set", "optimizer.learning_rate=10")
    assert result.exit_code == 3, result.output + result.stderr
    run = read_run(only_run(tmp_path / "runs"))
    assert run.run["status"] == "diverged"
    assert run.run["divergence"]["step"] >= 1
    assert run.metrics["diagnosis"]["verdict"] == "diverged"
    assert (run.path / "model.keras").exists() and run.history
    # The epoch it diverged in is recorded as the last row of history.csv, but it did not complete.
    assert run.history[-1]["epoch"] == run.run["divergence"]["epoch"]
    assert run.metrics["epochs_completed"] == len(run.history) - 1


class _BreakHistoryAfterFirstEpoch:
    """A reporter that, once epoch 1 is written, puts a folder where history.csv goes: the next write
    fails with an OSError, as a full disk or a removed folder would make it."""

    run_dir: Path | None = None
    statuses: list[str]

    def __init__(self) -> None:
        self.statuses = []

    def started(self, run_dir, info):
        self.run_dir = run_dir

    def progress(self, p):
        pass

    def epoch(self, result):
        if result.epoch == 1:
            (self.run_dir / "history.csv").unlink()
            (self.run_dir / "history.csv").mkdir()

    def finished(self, status):
        self.statuses.append(status)


def test_a_disk_error_after_training_started_fails_the_run_with_exit_1(write_config, tmp_path):
    from gradexp.config import load_config
    from gradexp.errors import RunFailed
    from gradexp.train import train

    reporter = _BreakHistoryAfterFirstEpoch()
    with pytest.raises(RunFailed) as failed:
        train(load_config(write_config({"training": {"epochs": 3}})), runs_dir=tmp_path / "runs", reporter=reporter)
    assert failed.value.exit_code == 1
    message = str(failed.value)
    assert "history.csv" in message and "recorded as failed" in message and "\n" not in message
    info = json.loads((only_run(tmp_path / "runs") / "run.json").read_text())
    assert info["status"] == "failed" and "IsADirectoryError" in info["error"]
    assert reporter.statuses == ["failed"]


def test_a_run_with_telemetry_off_end_to_end(write_config, tmp_path):
    cfg = write_config({"telemetry": {"enabled": False}}, name="quiet")
    result = run_cli("train", cfg, "--runs-dir", tmp_path / "runs", "--quiet")
    assert result.exit_code == 0, result.output + result.stderr
    folder = only_run(tmp_path / "runs")
    assert (folder / "layers.csv").read_text().splitlines() == [",".join(LAYER_COLUMNS)]  # the header alone
    run = read_run(folder)
    assert run.layers == [] and len(run.history) == 2
    assert run.metrics["diagnosis"]["verdict"] is None
    (row,) = json.loads(run_cli("compare", folder, "--format", "json").output)
    assert row["verdict"] is None and row["status"] == "completed"
    shown = run_cli("show", folder)
    assert shown.exit_code == 0 and "No layer measurements recorded" in shown.output


def test_device_gpu_without_gpu_is_a_usage_error(write_config, tmp_path):
    result = run_cli("train", write_config(), "--runs-dir", tmp_path / "runs", "--device", "gpu")
    assert result.exit_code == 2
    assert "no GPU" in result.stderr and "Traceback" not in result.output + result.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def _spawn(cfg: Path, runs_dir: Path, *extra: str, tf_logs: str | None = "3") -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update({"PYTHONUNBUFFERED": "1"} if tf_logs is None else {"PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": tf_logs})
    return subprocess.Popen([sys.executable, "-m", "gradexp", "train", str(cfg), "--runs-dir", str(runs_dir),
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)


def test_name_option_names_the_run_everywhere(write_config, tmp_path):
    result = run_cli("train", write_config({"training": {"epochs": 1}}), "--runs-dir", tmp_path / "runs",
                     "--quiet", "--name", "slope02")
    assert result.exit_code == 0, result.output + result.stderr
    run = read_run(only_run(tmp_path / "runs"))
    assert run.path.name.endswith("_slope02")
    assert run.run["name"] == run.config["name"] == "slope02"


def test_tensorflow_start_up_lines_stay_hidden(write_config, tmp_path):
    """TensorFlow's C++ notices (oneDNN, CUDA drivers, cuInit) print before its log level applies."""
    proc = _spawn(write_config({"training": {"epochs": 1}}), tmp_path / "runs", "--quiet", tf_logs=None)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    assert err == "", err
    assert out.startswith("status")


def test_probe_in_float16_prints_only_its_own_output(write_config):
    """probe's eager pass in float16 makes oneDNN print an error-level notice on CPUs without AVX-512 FP16."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.run([sys.executable, "-m", "gradexp", "probe", str(write_config()), "--device", "cpu",
                           "--set", "training.precision=mixed_float16"], capture_output=True, text=True, env=env,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert "oneDNN" not in proc.stdout + proc.stderr and "E0000" not in proc.stdout + proc.stderr
    assert proc.stdout.startswith("Probe at initialisation: 1 batch of 32 images")  # as row 0 is measured
    assert "‖δ‖ backpropagated signal ∂L/∂z" in proc.stdout and "dead = fraction of units" in proc.stdout


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_training_keeps_finished_epochs(write_config, tmp_path, sig):
    # Many epochs over a larger batch count, so the signal lands mid-epoch.
    cfg = write_config({"training": {"epochs": 500, "batch_size": 4}, "model": {"width": [256, 128]}})
    runs_dir = tmp_path / "runs"
    proc = _spawn(cfg, runs_dir)
    deadline = time.monotonic() + 120
    history = None
    while time.monotonic() < deadline:
        found = list(runs_dir.glob("*/history.csv"))
        if found and len(found[0].read_text().splitlines()) >= 3:  # header + 2 epochs
            history = found[0]
            break
        time.sleep(0.2)
    assert history is not None, "training did not get going"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "Stopping: the steps under way finish" in err  # the first signal is answered at once
    run = read_run(history.parent)
    assert run.run["status"] == "interrupted"
    done = len(run.history)
    assert 2 <= done < 500 and run.run["epochs_completed"] == done
    assert [h["epoch"] for h in run.history] == list(range(1, done + 1))
    assert {r["epoch"] for r in run.layers} == set(range(0, done + 1))
    assert run.metrics["epochs_completed"] == done


class _SignalAfterLastEpoch:
    """A reporter that sends its own process SIGINT as the last epoch is reported: the signal arrives
    with no chunk left to read it, before the test pass and the model's save."""

    def __init__(self, epochs: int) -> None:
        self.epochs, self.heard = epochs, 0

    def started(self, run_dir, info):
        pass

    def progress(self, p):
        pass

    def epoch(self, result):
        if result.epoch == self.epochs:
            os.kill(os.getpid(), signal.SIGINT)

    def stopping(self):
        self.heard += 1

    def finished(self, status):
        pass


def test_a_signal_after_the_last_epoch_is_not_ignored(write_config, tmp_path):
    """It does what a first signal does: the test pass and model.keras are kept, the run is recorded as
    interrupted and exits 130 (it used to end as completed, exit 0, as if nothing had been pressed)."""
    reporter = _SignalAfterLastEpoch(2)
    outcome = train(load_config(write_config()), runs_dir=tmp_path, device="cpu", reporter=reporter)
    assert reporter.heard == 1
    assert outcome.status == "interrupted" and outcome.exit_code == 130
    run = read_run(outcome.run_dir)
    assert run.run["status"] == "interrupted" and run.run["epochs_completed"] == 2
    assert (outcome.run_dir / "model.keras").exists() and 0 <= run.metrics["test_accuracy"] <= 1


def test_summary_prints_a_dash_for_what_was_not_measured(capsys):
    """A second Ctrl-C skips the test pass; a run stopped in its first epoch has no epoch time."""
    from gradexp import render
    from gradexp.train import Outcome

    metrics = {"test_accuracy": float("nan"), "best_val_accuracy": float("nan"), "best_epoch": None,
               "seconds_per_epoch": float("nan"), "diagnosis": {"verdict": "healthy", "summary": ""}}
    render.train_summary(Outcome(Path("runs/r"), "interrupted", metrics))
    lines = {line.split("  ")[0]: line.split()[-1] for line in capsys.readouterr().out.splitlines()}
    assert lines["test accuracy"] == lines["seconds / epoch"] == lines["best val accuracy"] == "-"
    assert "nan" not in str(lines)

    render.train_summary(Outcome(Path("runs/r"), "completed", {**metrics, "test_accuracy": 0.8125,
                                                                "seconds_per_epoch": 1.5}))
    lines = {line.split("  ")[0]: line.split()[-1] for line in capsys.readouterr().out.splitlines()}
    assert (lines["test accuracy"], lines["seconds / epoch"]) == ("0.8125", "1.5")


def test_two_runs_with_the_same_name_get_two_folders(write_config, tmp_path):
    cfg = write_config({"training": {"epochs": 1}})
    runs_dir = tmp_path / "runs"
    procs = [_spawn(cfg, runs_dir, "--name", "same", "--quiet") for _ in range(2)]
    for p in procs:
        p.communicate(timeout=180)
        assert p.returncode == 0
    folders = sorted(p.name for p in runs_dir.iterdir())
    assert len(folders) == 2 and all("_same" in f for f in folders)
    assert all(read_run(runs_dir / f).run["status"] == "completed" for f in folders)


def test_sigterm_ends_a_probe_like_ctrl_c(write_config):
    """A `kill` (or a CI timeout) gets the same ending as Ctrl-C: 'Interrupted.', exit 130."""
    cfg = write_config({"model": {"depth": 1000, "width": 50, "activation": "selu", "initializer": "lecun_normal"}})
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen([sys.executable, "-m", "gradexp", "probe", str(cfg)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, text=True)
    time.sleep(3)  # TensorFlow loads; a 1,000-layer probe takes several seconds more
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out, err)
    assert err.strip() == "Interrupted."
