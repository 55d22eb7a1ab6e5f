"""The reproduction table in docs/RESULTS.md: every preset in configs/, probed at initialisation and
then trained briefly on the real Fashion-MNIST, with the verdict and its main evidence.

Run: `.venv/bin/python docs/reproduce.py [--epochs 2] [--limit 10000]` (a few minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gradexp.config import load_config  # noqa: E402
from gradexp.diagnosis import format_ratio  # noqa: E402
from gradexp.probe import probe  # noqa: E402
from gradexp.train import train  # noqa: E402


def fmt(x: float | None) -> str:
    return "-" if x is None or math.isnan(x) else format_ratio(x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--limit", type=int, default=10000)
    args = ap.parse_args()
    print(f"| preset | probe verdict | probe δ ratio | after {args.epochs} epochs ({args.limit} images) | "
          "δ ratio | worst dead | worst saturated | val accuracy | status |")
    print("|---|---|---|---|---|---|---|---|---|")
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        p = probe(load_config(path), device="cpu")["diagnosis"]
        cfg = load_config(path, [f"training.epochs={args.epochs}", f"data.limit={args.limit}"])
        with tempfile.TemporaryDirectory() as tmp:
            out = train(cfg, runs_dir=tmp, device="cpu")
        d = out.metrics["diagnosis"]
        ev = d["evidence"]
        # a run that diverged in its first epoch was last measured at initialisation: say so
        at = f" (epoch {ev['epoch']})" if ev.get("epoch") not in (None, args.epochs) else ""
        print(f"| `{path.name}` | {p['verdict']} | {fmt(p['evidence'].get('gradient_ratio'))} | {d['verdict']} | "
              f"{fmt(ev.get('gradient_ratio'))}{at} | {fmt(ev.get('worst_dead_fraction'))} | "
              f"{fmt(ev.get('worst_saturated_fraction'))} | {fmt(out.metrics['best_val_accuracy'])} | {out.status} |",
              flush=True)


if __name__ == "__main__":
    main()
