"""Plain Keras `fit` on its own: wall and CPU seconds of each epoch, and the cores it kept busy.

`engine_vs_fit.py` runs its contenders in worker processes that take turns; this script runs only
the seed's `fit` (at its quietest, verbose=0) in this one process, so that the spread of `fit`'s
epoch times can be seen without anything else on the machine. CPU seconds over wall seconds says
how many cores TensorFlow's graph runtime kept busy during the epoch.

Run: `.venv/bin/python bench/fit_alone.py [CONFIG] [--epochs N]` (default: the 100-layer SELU preset).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", nargs="?", default="configs/selu_lecun_100.yaml")
    ap.add_argument("--epochs", type=int, default=6, help="timed epochs (the first one included: it compiles little)")
    args = ap.parse_args()

    import keras
    from engine_vs_fit import seed_fit_epoch

    from gradexp import data as data_mod
    from gradexp.config import load_config

    cfg = load_config(args.config, [])
    ds = data_mod.load(cfg.data.validation_size, cfg.data.scaling, cfg.data.dir, cfg.data.limit)
    keras.utils.set_random_seed(cfg.seed)
    fit_epoch = seed_fit_epoch(cfg, keras, ds, 0)
    walls = []
    for epoch in range(1, args.epochs + 1):
        wall, cpu = time.perf_counter(), time.process_time()
        fit_epoch()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        walls.append(wall)
        print(f"epoch {epoch}: {wall:.2f} s wall, {cpu:.2f} s CPU, {cpu / wall:.2f} cores busy", flush=True)
    print(f"{args.config}: median {statistics.median(walls):.2f} s, mean {statistics.mean(walls):.2f} s, "
          f"range {min(walls):.2f}-{max(walls):.2f} s per epoch")


if __name__ == "__main__":
    main()
