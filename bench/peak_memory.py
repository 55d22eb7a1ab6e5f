"""Peak resident memory of `gradexp train CONFIG` (default configs/leaky_he.yaml), measured as the
maximum RSS of the child process. Run: `.venv/bin/python bench/peak_memory.py [CONFIG] [--set K=V]...`."""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", nargs="?", default=str(ROOT / "configs" / "leaky_he.yaml"))
    ap.add_argument("--set", dest="sets", action="append", default=[])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "gradexp.cli", "train", args.config, "--runs-dir", tmp, "--quiet"]
        for s in args.sets:
            cmd += ["--set", s]
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # Linux: KiB
    print(f"exit {proc.returncode}; wall {wall:.1f} s; peak RSS {peak_kib / 2**20:.2f} GiB ({peak_kib / 1024:.0f} MiB)")
    if proc.returncode:
        print(proc.stderr[-2000:])


if __name__ == "__main__":
    main()
