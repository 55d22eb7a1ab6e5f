"""The machine around the run rather than the config: files and folders that cannot be read or
written, a full disk, paths that look like markup or start with ~, oversized data files, and a reader
of the output that goes away. Each ends in one clear line (exit 2) or, where nothing is wrong with
the run itself, in a run that completes."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from gradexp import runs
from gradexp.cli import main
from gradexp.data import FILES


@pytest.fixture(autouse=True)
def _only_the_config_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRADEXP_DATA_DIR", raising=False)


def _unprivileged() -> list[str]:
    """A command prefix that takes away root's power to ignore file permissions."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: file permissions cannot take effect")
    caps = "-dac_override,-dac_read_search"
    return [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}"]


def _gradexp(*args: str, unprivileged: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("GRADEXP_DATA_DIR", None)
    prefix = _unprivileged() if unprivileged else []
    return subprocess.run([*prefix, sys.executable, "-m", "gradexp", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    [line] = proc.stderr.splitlines()
    assert line.startswith("Error: ")
    return line


def test_an_unreadable_data_file_is_named_as_such(write_config, tiny_data: Path, tmp_path: Path) -> None:
    folder = tmp_path / "data"
    shutil.copytree(tiny_data, folder)
    locked = folder / (FILES["train_images"] + ".gz")
    locked.chmod(0)
    cfg = write_config({"data": {"dir": str(folder)}})
    line = _one_error_line(_gradexp("train", str(cfg), "--runs-dir", str(tmp_path / "runs"), unprivileged=True))
    assert line == f"Error: {locked}: Permission denied; make it readable (chmod a+r) or use another copy"
    assert not (tmp_path / "runs").exists()


def test_a_runs_dir_behind_a_locked_folder_is_one_line(write_config, tmp_path: Path) -> None:
    (tmp_path / "locked" / "inner").mkdir(parents=True)
    (tmp_path / "locked").chmod(0)
    try:
        target = tmp_path / "locked" / "inner" / "runs"
        line = _one_error_line(_gradexp("train", str(write_config()), "--runs-dir", str(target), unprivileged=True))
    finally:
        (tmp_path / "locked").chmod(0o755)
    assert line.endswith(": Permission denied; fix its permissions or choose another path")
    assert not target.exists()


def test_compare_skips_an_unreadable_run_and_shows_the_others(write_config, tmp_path: Path) -> None:
    assert CliRunner().invoke(main, ["train", str(write_config({"training": {"epochs": 1}})), "--runs-dir",
                                     str(tmp_path / "runs"), "--quiet"]).exit_code == 0
    [good] = (tmp_path / "runs").iterdir()
    locked = shutil.copytree(good, tmp_path / "runs" / (good.name + "-2"))
    locked.chmod(0)
    try:
        proc = _gradexp("compare", str(good), str(locked), "--format", "csv", unprivileged=True)
    finally:
        locked.chmod(0o755)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == f"Warning: {locked}: cannot be read (Permission denied), skipped\n"
    assert [r.split(",")[0] for r in proc.stdout.splitlines()[1:]] == [good.name]
    # the same through the parent folder, with the unreadable run sorting first
    first = locked.rename(tmp_path / "runs" / "0-locked")
    first.chmod(0)
    try:
        proc = _gradexp("compare", str(tmp_path / "runs"), "--format", "csv", unprivileged=True)
    finally:
        first.chmod(0o755)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == f"Warning: {first}: cannot be read (Permission denied), skipped\n"
    assert [r.split(",")[0] for r in proc.stdout.splitlines()[1:]] == [good.name]


def test_paths_that_look_like_markup_are_printed_as_given(write_config, tmp_path: Path) -> None:
    runs_dir = tmp_path / "runs[old]"
    result = CliRunner().invoke(main, ["train", str(write_config({"training": {"epochs": 1}})), "--runs-dir",
                                       str(runs_dir)])
    assert result.exit_code == 0, result.output
    [run_dir] = runs_dir.iterdir()
    assert f"Run {run_dir}  device" in result.stderr


def test_a_quoted_tilde_in_runs_dir_means_home(write_config, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["train", str(write_config({"training": {"epochs": 1}})), "--runs-dir",
                                       "~/gradexp-runs", "--quiet"])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "home" / "gradexp-runs").iterdir())) == 1
    assert not (tmp_path / "~").exists()


def _labels_file(folder: Path, header_count: int, payload: int) -> None:
    """train-labels with `header_count` in its header and `payload` zero bytes of labels after it."""
    header = (2049).to_bytes(4, "big") + header_count.to_bytes(4, "big")
    (folder / (FILES["train_labels"] + ".gz")).write_bytes(gzip.compress(header + bytes(payload), 1))


@pytest.mark.parametrize(("header_count", "payload", "expected"), [
    (70_000, 70_000, "header promises 70,000 items, more than Fashion-MNIST's 60,000"),
    # 30 MB of padding: only the promised 660 bytes and one more are read before the error
    (660, 30_000_000, "is truncated or padded: 669 bytes where its header promises 668"),
])
def test_oversized_data_files_are_refused_without_reading_them_whole(
        write_config, tiny_data: Path, tmp_path: Path, header_count: int, payload: int, expected: str) -> None:
    folder = tmp_path / "data"
    shutil.copytree(tiny_data, folder)
    _labels_file(folder, header_count, payload)
    cfg = write_config({"data": {"dir": str(folder)}})
    result = CliRunner().invoke(main, ["train", str(cfg), "--runs-dir", str(tmp_path / "runs"), "--quiet"])
    assert result.exit_code == 2, result.output
    assert expected in result.stderr and result.stderr.count("\n") == 1


def test_a_closed_output_pipe_does_not_stop_the_run(write_config, tmp_path: Path) -> None:
    cfg = write_config({"training": {"epochs": 4}})
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "gradexp", "train", str(cfg), "--runs-dir", str(tmp_path / "runs")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    assert proc.stdout is not None
    first = proc.stdout.readline()  # the run's first line, as `2>&1 | head -1` would read it
    proc.stdout.close()
    assert proc.wait(timeout=300) == 141  # the summary found its reader gone too: 128 + SIGPIPE
    assert first.startswith(b"Run ")
    run = runs.read_run(next((tmp_path / "runs").iterdir()))
    assert run.run["status"] == "completed" and len(run.history) == 4
    assert (run.path / "model.keras").exists()


def test_data_dir_passed_over_for_the_environment_is_said(write_config, tiny_data: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    other = shutil.copytree(tiny_data, tmp_path / "other")
    monkeypatch.setenv("GRADEXP_DATA_DIR", str(tiny_data))
    result = CliRunner().invoke(main, ["train", str(write_config({"data": {"dir": str(other)}, "training": {"epochs": 1}})),
                                       "--runs-dir", str(tmp_path / "runs"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert result.stderr == (f"Warning: data.dir {other} was not looked at ($GRADEXP_DATA_DIR comes first in the "
                             f"lookup); used $GRADEXP_DATA_DIR ({tiny_data}) instead\n")
    # the same folder named both ways, once relative: nothing to warn about
    monkeypatch.chdir(tiny_data.parent)
    result = CliRunner().invoke(main, ["train", str(write_config({"data": {"dir": tiny_data.name},
                                                                  "training": {"epochs": 1}})),
                                       "--runs-dir", str(tmp_path / "runs"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""


def test_a_closed_progress_pipe_leaves_the_summary_on_stdout(write_config, tmp_path: Path) -> None:
    cfg = write_config({"training": {"epochs": 3}})
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "gradexp", "train", str(cfg), "--runs-dir", str(tmp_path / "runs")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    assert proc.stderr is not None and proc.stdout is not None
    assert proc.stderr.readline().startswith("Run ")
    proc.stderr.close()  # the progress reader goes away; the summary's does not
    out = proc.stdout.read()
    assert proc.wait(timeout=300) == 0
    assert out.startswith("status             completed")
