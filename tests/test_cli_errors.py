"""Bad input through the command line: exit code 2, one `Error:` line on stderr, no traceback,
no run folder left behind."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from gradexp.cli import main
from gradexp.data import FILES


@pytest.fixture(autouse=True)
def _only_the_config_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    # $GRADEXP_DATA_DIR comes before data.dir in the lookup; these tests point data.dir at their files.
    monkeypatch.delenv("GRADEXP_DATA_DIR", raising=False)


def _train(config: Path, runs_dir: Path, *extra: str) -> Result:
    return CliRunner().invoke(main, ["train", str(config), "--runs-dir", str(runs_dir), "--quiet", *extra])


def _assert_usage_error(result: Result, runs_dir: Path) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert not result.stdout.strip(), result.stdout
    assert not runs_dir.exists() or not any(runs_dir.iterdir()), list(runs_dir.iterdir())
    return lines[0]


def test_missing_config_file(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    line = _assert_usage_error(_train(tmp_path / "nope.yaml", runs), runs)
    assert "nope.yaml" in line
    assert "not found" in line


def test_name_with_a_trailing_newline_is_refused(write_config, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    line = _assert_usage_error(_train(write_config(), runs, "--name", "abc\n"), runs)
    assert line.startswith("Error: --name")


def test_a_path_too_long_is_one_line(write_config, tmp_path: Path) -> None:
    result = _train(write_config(), tmp_path / ("r" * 300))
    assert result.exit_code == 2 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("Error: ") and line.endswith(": File name too long; give a shorter path")
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.yaml"]  # nothing made


def test_running_out_of_memory_building_the_net_is_one_line(write_config, tmp_path: Path) -> None:
    """training.memory_limit_gb raised past what the machine has: the allocation fails, not gradexp."""
    config = write_config({"model": {"depth": 1, "width": 10 ** 9}, "training": {"memory_limit_gb": 1e12}})
    runs = tmp_path / "runs"
    line = _assert_usage_error(_train(config, runs), runs)
    assert line == ("Error: model: this machine ran out of memory building the network; lower model.width or "
                    "model.depth (training.memory_limit_gb allowed more than is free)")


def test_config_is_a_folder(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    line = _assert_usage_error(_train(tmp_path, runs), runs)
    assert "folder" in line


def test_not_yaml(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("model: {activation: relu\n  initializer: [he_normal\n")
    runs = tmp_path / "runs"
    line = _assert_usage_error(_train(path, runs), runs)
    assert "broken.yaml" in line
    assert "not valid YAML" in line
    assert "line " in line


def test_python_tag(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(f'model: !!python/object/apply:os.system ["touch {marker}"]\n')
    runs = tmp_path / "runs"
    line = _assert_usage_error(_train(path, runs), runs)
    assert "python/object" in line
    assert not marker.exists()


@pytest.mark.parametrize(("overrides", "expected"), [
    ({"trainig": {"epochs": 1}}, ["'trainig'", "did you mean 'training'"]),
    ({"model": {"activation": "leaky_rellu"}}, ["model.activation", "leaky_rellu", "'leaky_relu'"]),
    ({"training": {"epochs": "ten"}}, ["training.epochs", "'ten'"]),
])
def test_bad_config_is_one_line(write_config, tmp_path: Path, overrides, expected) -> None:
    runs = tmp_path / "runs"
    line = _assert_usage_error(_train(write_config(overrides), runs), runs)
    for text in expected:
        assert text in line


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("model.depth", "KEY=VALUE"),
        ("model.depth=[1,", "cannot parse"),
        ("model.dpeth=3", "did you mean 'depth'"),
        ("training.epochs=0", "training.epochs"),
        ("optimizer.name=adma", "did you mean 'adam'"),
    ],
)
def test_bad_set(write_config, tmp_path: Path, item: str, expected: str) -> None:
    runs = tmp_path / "runs"
    line = _assert_usage_error(_train(write_config(), runs, "--set", item), runs)
    assert expected in line


def test_bad_name_option(write_config, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    line = _assert_usage_error(_train(write_config(), runs, "--name", "a b/c"), runs)
    assert "--name" in line and "'a b/c'" in line
    long = _assert_usage_error(_train(write_config(), runs, "--name", "n" * 300), runs)
    assert "n" * 50 in long and "n" * 100 not in long and len(long) < 250  # the value is cut, not echoed whole


def test_too_large_model(write_config, tmp_path: Path) -> None:
    path = write_config({"model": {"depth": 2, "width": 1_000_000_000}})
    runs = tmp_path / "runs"
    line = _assert_usage_error(_train(path, runs), runs)
    assert "training.memory_limit_gb" in line


def _corrupt_copy(tiny_data: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "corrupt-data"
    shutil.copytree(tiny_data, folder)
    path = folder / (FILES["train_images"] + ".gz")
    path.write_bytes(path.read_bytes()[:200])
    return folder


def test_corrupt_data_folder(write_config, tiny_data: Path, tmp_path: Path) -> None:
    folder = _corrupt_copy(tiny_data, tmp_path)
    path = write_config({"data": {"dir": str(folder)}})
    runs = tmp_path / "runs"
    line = _assert_usage_error(_train(path, runs), runs)
    assert "train-images-idx3-ubyte.gz" in line
    assert "truncated" in line


def test_data_with_bad_labels(write_config, tiny_data: Path, tmp_path: Path) -> None:
    folder = tmp_path / "bad-labels"
    shutil.copytree(tiny_data, folder)
    path = folder / (FILES["test_labels"] + ".gz")
    payload = bytearray(gzip.decompress(path.read_bytes()))
    payload[8] = 200
    path.write_bytes(gzip.compress(bytes(payload)))
    runs = tmp_path / "runs"
    line = _assert_usage_error(_train(write_config({"data": {"dir": str(folder)}}), runs), runs)
    assert "label 200" in line


def test_validation_size_too_large_for_data(write_config, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    line = _assert_usage_error(_train(write_config({"data": {"validation_size": 5000}}), runs), runs)
    assert "data.validation_size=5000" in line


def test_probe_bad_config(write_config, tmp_path: Path) -> None:
    path = write_config({"model": {"initializer": {"name": "variance_scaling", "mode": "fan_middle"}}})
    result = CliRunner().invoke(main, ["probe", str(path)])
    line = _assert_usage_error(result, tmp_path / "runs")
    assert "fan_middle" in line and "fan_avg" in line


def test_runs_dir_below_a_file(write_config, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("keep me\n")
    runs = blocker / "runs"
    result = _train(write_config({"training": {"epochs": 1}}), runs)
    line = _assert_usage_error(result, runs)
    assert str(blocker) in line
    assert "--runs-dir" in line
    assert blocker.read_text() == "keep me\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["not-a-folder", "tiny.yaml"])


def test_corrupt_data_dir_from_the_environment_is_named(write_config, tiny_data: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADEXP_DATA_DIR", str(_corrupt_copy(tiny_data, tmp_path)))
    runs = tmp_path / "runs"
    line = _assert_usage_error(_train(write_config(), runs), runs)  # data.dir (good) comes second
    assert "truncated" in line and "$GRADEXP_DATA_DIR" in line and "unset it to use data.dir" in line
    # with no data.dir to prefer, neither that note nor where else to get the files: only what is wrong
    alone = CliRunner().invoke(main, ["data", "--check"])
    assert alone.exit_code == 2 and "truncated" in alone.stderr, alone.output
    assert "unset it" not in alone.stderr and "apt-get" not in alone.stderr and len(alone.stderr) < 400


def test_data_without_test_images(write_config, tmp_path: Path) -> None:
    import numpy as np

    from gradexp.data import write_idx

    folder = tmp_path / "no-test"
    write_idx(folder, (np.zeros((300, 28, 28)), np.zeros(300)), (np.zeros((0, 28, 28)), np.zeros(0)))
    runs = tmp_path / "runs"
    line = _assert_usage_error(_train(write_config({"data": {"dir": str(folder)}}), runs), runs)
    assert str(folder) in line and "test files hold no images" in line


@pytest.mark.parametrize(("args", "expected"), [
    (["train", "CFG", "--device", "tpu"], "'tpu' is not one of"),
    (["bogus"], "No such command 'bogus'"),
    (["probe", "CFG", "--batch-size", "0"], "--batch-size"),
    (["compare", "--format", "xml", "runs"], "'xml' is not one of"),
    (["show"], "Missing argument 'RUN...'"),
    (["train", "CFG", "--set"], "Option '--set' requires an argument"),
    (["bogus", "show"], "No such command 'bogus'"),
    (["compare", "runs", "--format"], "Option '--format' requires an argument"),
])
def test_click_usage_errors_are_one_line(write_config, tmp_path: Path, args: list[str], expected: str) -> None:
    args = [str(write_config()) if a == "CFG" else a for a in args]
    line = _assert_usage_error(CliRunner().invoke(main, args, prog_name="gradexp"), tmp_path / "runs")
    help_of = "gradexp" if args[0] == "bogus" else f"gradexp {args[0]}"  # the help that explains the option
    assert expected in line and line.endswith(f"(see '{help_of} --help')")


@pytest.mark.parametrize("where", ["empty", "file", "run folder", "broken link"])
def test_unusable_runs_dir_is_refused_first(write_config, tmp_path: Path, where: str) -> None:
    config = write_config({"training": {"epochs": 1}})
    run = tmp_path / "2026-01-01T00-00-00_old"
    run.mkdir()
    (run / "run.json").write_text('{"status": "completed"}\n')
    link = tmp_path / "link"
    if where == "broken link":
        link.symlink_to("gone")
    runs_dir = {"empty": "", "file": str(config), "run folder": str(run / "nested"), "broken link": str(link)}[where]
    result = CliRunner().invoke(main, ["train", str(config), "--runs-dir", runs_dir, "--quiet"])
    line = _assert_usage_error(result, tmp_path / "unused")
    assert "--runs-dir" in line
    assert {"empty": "is empty", "file": "is a file, not a folder", "run folder": "inside the run folder",
            "broken link": "is a broken symbolic link (to gone); fix the link"}[where] in line
    assert [p.name for p in run.iterdir()] == ["run.json"]
    assert sorted(p.name for p in tmp_path.iterdir() if p != link) == sorted([run.name, config.name])


def test_a_missing_file_error_without_a_path_is_an_internal_error_not_a_user_one() -> None:
    """ENOENT, EISDIR and ENOTDIR are the user's business when they name a path; without one they come
    from gradexp or a library, and saying 'check the path' would hide the bug."""
    import errno

    from gradexp.errors import os_error_line

    assert os_error_line(FileNotFoundError(errno.ENOENT, "No such file or directory")) is None
    assert os_error_line(FileNotFoundError(errno.ENOENT, "No such file or directory", "runs/x/run.json")) == (
        "runs/x/run.json: No such file or directory; check the path (was a folder moved or removed?)")
    long_path = "/a" * 100 + "/history.csv"
    line = os_error_line(IsADirectoryError(errno.EISDIR, "Is a directory", long_path))
    assert line.startswith("…") and "/history.csv: Is a directory" in line  # cut from the start


def test_os_errors_show_their_traceback_under_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from gradexp import catalog

    def broken() -> list:
        raise PermissionError(errno.EACCES, "Permission denied", "/somewhere")

    monkeypatch.setattr(catalog, "optimizer_rows", broken)
    plain = CliRunner().invoke(main, ["list-optimizers"])
    assert plain.exit_code == 2 and plain.stderr.startswith("Error: /somewhere: Permission denied")
    debug = CliRunner().invoke(main, ["--debug", "list-optimizers"])
    assert isinstance(debug.exception, PermissionError)
