"""The one smoke test on the real data: `gradexp train` for one epoch on a slice of Fashion-MNIST,
verified by checksum, through the CLI."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from gradexp.cli import main
from gradexp.runs import read_run


@pytest.mark.realdata
def test_real_data_one_epoch(real_data, tmp_path):
    runs_dir = tmp_path / "runs"
    result = CliRunner().invoke(main, ["train", "configs/leaky_he.yaml", "--runs-dir", str(runs_dir),
                                       "--set", "training.epochs=1", "--set", "data.limit=10000"])
    assert result.exit_code == 0, result.output + result.stderr
    (folder,) = list(runs_dir.iterdir())
    run = read_run(folder)
    assert run.run["data"]["verified"] is True and run.run["data"]["counts"] == {"train": 60000, "test": 10000}
    assert run.run["train_samples"] == 10000
    assert run.metrics["test_accuracy"] > 0.4  # chance is 0.1; one epoch of plain SGD at 1e-3
    assert run.metrics["diagnosis"]["verdict"] == "healthy"
    check = CliRunner().invoke(main, ["data", "--check"])
    assert check.exit_code == 0 and "verified" in check.output
    shown = CliRunner().invoke(main, ["compare", str(runs_dir), "--format", "json"])
    assert json.loads(shown.output)[0]["status"] == "completed"
