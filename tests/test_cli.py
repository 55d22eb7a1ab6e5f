"""The CLI's surface: commands documented, light commands stay free of TensorFlow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from gradexp import data
from gradexp.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_every_command_is_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    for name in main.commands:
        assert f"gradexp {name}" in readme, name


@pytest.mark.parametrize("args", [[], ["--help"], ["list-initializers"], ["schema"], ["train", "--help"]])
def test_light_commands_do_not_import_tensorflow(args):
    code = ("import sys\nimport click\nfrom gradexp.cli import main\n"
            f"try:\n    main({args!r}, standalone_mode=False)\nexcept (SystemExit, click.ClickException):\n    pass\n"
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TensorFlow was imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_version_and_help():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and "gradexp" in result.output
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0 and "train" in result.output and "compare" in result.output


def test_a_named_data_folder_that_is_passed_over_is_reported(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("GRADEXP_DATA_DIR", str(tmp_path / "missing"))
    result = CliRunner().invoke(main, ["data", "--dir", str(tiny_data)])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [f"Warning: $GRADEXP_DATA_DIR {tmp_path / 'missing'} does not exist; "
                                          f"used --dir ({tiny_data}) instead"]
    assert str(tiny_data) in result.stdout
    # and the folder given with --dir is named as --dir when it is the one passed over
    monkeypatch.delenv("GRADEXP_DATA_DIR")
    monkeypatch.setattr(data, "KERAS_CACHE", tmp_path / "no-cache")
    monkeypatch.setattr(data, "DEBIAN_DIR", tiny_data)
    result = CliRunner().invoke(main, ["data", "--dir", str(tmp_path / "typo")])
    assert result.exit_code == 0, result.output
    assert result.stderr == (f"Warning: --dir {tmp_path / 'typo'} does not exist; used Debian package "
                             f"dataset-fashion-mnist ({tiny_data}) instead\n")


@pytest.mark.parametrize("args", [["schema"], ["list-activations"], ["list-initializers", "--json"]])
def test_a_closed_pipe_ends_quietly(args):
    """`gradexp ... | head`: no 'Internal error', no traceback; 141 as for cat or grep (128 + SIGPIPE)."""
    proc = subprocess.Popen([sys.executable, "-m", "gradexp", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before anything is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141, err
    assert err == ""


def test_python_dash_m_runs_the_cli():
    proc = subprocess.run([sys.executable, "-m", "gradexp", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("gradexp, version"), proc.stderr


@pytest.mark.parametrize("command", ["probe", "schema"])
def test_a_command_puts_back_the_signal_handling_it_changed(write_config, command):
    """Commands turn SIGTERM into an interrupt and, once done, ignore late signals; a program (or a
    test session) that calls `main` gets its own handlers back, so its Ctrl-C still works."""
    import signal

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    args = ["probe", str(write_config()), "--device", "cpu"] if command == "probe" else [command]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert {sig: signal.getsignal(sig) for sig in before} == before
