"""The benchmark tools run and measure what they say (no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_step_profile_sorts_every_product_of_the_step(write_config, tmp_path: Path) -> None:
    # depth 2 + output layer: three forward products, three weight-gradient products, and two
    # input-gradient products (none is needed below the first layer).
    out = tmp_path / "profile.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "step_profile.py"), str(write_config()),
                           "--steps", "4", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["machine"]["cpu_count"] >= 1  # the figures say which machine gave them
    ops = result["ops_per_step"]
    assert ops["forward product"] == 3
    assert ops["weight-gradient product"] == 3
    assert ops["input-gradient product"] == 2
    assert ops["fused element-wise"] > 0
    assert all(result["busy_ms_per_step"][k] > 0 for k in ("forward product", "weight-gradient product"))
    assert set(result["product_us"]) == {"XLA", "TensorFlow graph", "NumPy (BLAS)"}
    assert "forward product" in proc.stdout


def test_xla_flags_compares_variants_in_their_own_processes(write_config, tmp_path: Path) -> None:
    # A flag XLA does not know fails that variant alone; the same arithmetic gives the same loss.
    out = tmp_path / "flags.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "xla_flags.py"), str(write_config()),
                           "--steps", "4", "--rounds", "2", "--out", str(out),
                           "--variant", "defaults=", "--variant", "again=--xla_cpu_enable_fast_min_max=false",
                           "--variant", "unknown=--xla_cpu_no_such_option=1"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    saved = json.loads(out.read_text())
    summary = saved["summary"]
    assert saved["machine"]["cpu_count"] >= 1
    assert summary["defaults"]["median_ms_per_step"] > 0
    assert summary["defaults"]["median_ratio"] == 1.0 and summary["defaults"]["faster_rounds"] == 0
    assert summary["again"]["mean_loss"] == summary["defaults"]["mean_loss"]
    assert "no_such_option" in summary["unknown"]["failed"]
    assert "| defaults | `(none)` |" in proc.stdout


def test_step_floor_times_every_part_of_the_step_in_one_process(tmp_path: Path) -> None:
    out = tmp_path / "floor.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "step_floor.py"), "--depth", "3", "--width", "8",
                           "--batch", "4", "--steps", "3", "--rounds", "2", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    summary = result["summary"]
    assert list(summary) == ["full step", "hand-written backward", "without weight gradients", "forward only", "one chain, 4 rows",
                             "one chain, 2 rows", "two chains of 2 rows"]
    assert summary["full step"]["median_ratio"] == 1.0
    assert all(s["median_ms_per_step"] > 0 for s in summary.values())
    assert all(len(r) == 2 for r in result["runs"].values())
    assert "xla_cpu_multi_thread_eigen=false" in result["xla_flags"] and result["machine"]["cpu_count"] >= 1
    assert "| two chains of 2 rows |" in proc.stdout
    assert "hand-written backward pass checked against the tape" in proc.stdout


def test_bench_records_the_cpu_of_the_first_processor(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from machine_info import machine
    finally:
        sys.path.remove(str(ROOT / "bench"))
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\n"
                       "model name\t: AMD EPYC\ncpu MHz\t\t: 2445.428\nflags\t\t: fpu sse avx avx2 fma\n\n"
                       "processor\t: 1\nmodel name\t: Other\nflags\t\t: avx2 avx512f amx_bf16\n")
    info = machine(cpuinfo)
    assert info["cpu"] == "AMD EPYC" and info["cpu_family_model"] == "25/1" and info["cpu_mhz"] == "2445.428"
    assert info["vector_extensions"] == ["avx2"]  # the second block's extensions are not the first's
    assert "cpu" not in machine(tmp_path / "missing") and machine(tmp_path / "missing")["cpu_count"]


def test_telemetry_cost_pairs_the_same_chunk_with_telemetry_on_and_off(write_config, tmp_path: Path) -> None:
    out = tmp_path / "telemetry.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "telemetry_cost.py"), str(write_config()),
                           "--set", "telemetry.every=2", "--steps", "4", "--rounds", "3", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["every"] == 2 and result["set"] == ["telemetry.every=2"]
    assert all(len(result["runs"][k]) == 3 for k in ("on", "off"))
    assert all(result["median_ms_per_step"][k] > 0 for k in ("on", "off")) and result["median_ratio"] > 0
    assert result["machine"]["cpu_count"] >= 1
    assert "| telemetry on | telemetry off |" in proc.stdout and "a telemetry step every 2" in proc.stdout


def test_paired_rounds_rotate_so_that_each_contender_opens_one_round_in_turn() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from paired import median_ratio, rotation
    finally:
        sys.path.remove(str(ROOT / "bench"))
    names = ("a", "b", "c")
    orders = [rotation(names, r) for r in range(4)]
    assert orders == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]
    assert median_ratio([2.0, 3.0, 10.0], [1.0, 2.0, 2.0]) == 2.0  # ratios 2, 1.5, 5


def test_epoch_parts_splits_each_epoch_into_chunks_validation_and_the_rest(write_config, tmp_path: Path) -> None:
    out = tmp_path / "parts.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "epoch_parts.py"), str(write_config()),
                           "--epochs", "2", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())["epochs"]
    assert [r["epoch"] for r in rows] == [1, 2]
    for r in rows:
        assert r["chunks"] > 0 and r["validation"] > 0
        assert r["chunks"] + r["validation"] <= r["total"]
    assert "| epoch | total s | chunks s |" in proc.stdout
