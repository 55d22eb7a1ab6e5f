"""Where one gradexp epoch's wall time goes: the compiled chunks, validation, and everything else.

Trains one engine in one process and times, per epoch, the engine's compiled chunk calls (each waited
for), its plain calls (the last partial batch), validation, the kernels read for telemetry's update
ratios, and the rest of `train_epoch`. The first epoch includes XLA's compilation.

Run: `.venv/bin/python bench/epoch_parts.py [CONFIG] [--set KEY=VALUE ...] [--epochs 4]`
(default: the seed config).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from machine_info import machine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# (part, the engine's method it times, whether the call returns before its work is done)
TIMED = (("chunks", "_chunk", True), ("partial batch", "_plain", True),
         ("validation", "evaluate", False), ("kernels read", "kernels64", False))
PARTS = tuple(part for part, _, _ in TIMED)


def timed(parts: dict[str, float], name: str, call: Callable[..., Any],
          wait: Callable[[], Any] | None = None) -> Callable[..., Any]:
    """`call`, adding its wall seconds to `parts[name]`; `wait` for calls that return before their work ends."""
    def run(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        result = call(*args, **kwargs)
        if wait:
            wait()
        parts[name] += time.perf_counter() - t
        return result
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", nargs="?", default=str(ROOT / "configs" / "leaky_he.yaml"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "epoch_parts.json"))
    args = ap.parse_args()

    from gradexp import engine
    from gradexp.config import load_config
    from gradexp.train import prepare

    cfg = load_config(args.config, args.set)
    with engine.native_logs_hidden():
        dataset, built, _ = prepare(cfg, "cpu")
        eng = engine.Engine(cfg, built, dataset)
        parts: dict[str, float] = defaultdict(float)
        wait = eng.loss_sum.numpy  # a compiled chunk has finished once its running sums can be read
        for name, attr, asynchronous in TIMED:
            setattr(eng, attr, timed(parts, name, getattr(eng, attr), wait if asynchronous else None))
        rows = []
        print(f"{args.config}, {eng.steps_per_epoch()} steps per epoch (epoch 1 compiles):")
        print("| epoch | total s | " + " | ".join(f"{p} s" for p in PARTS) + " | rest s | ms per step in chunks |")
        print("|---" * (len(PARTS) + 4) + "|")
        for epoch in range(1, args.epochs + 1):
            parts.clear()
            t = time.perf_counter()
            eng.train_epoch(epoch)
            total = time.perf_counter() - t
            row = {"epoch": epoch, "total": total, **{p: parts[p] for p in PARTS},
                   "rest": total - sum(parts.values())}
            rows.append(row)
            per_step = parts["chunks"] / (len(dataset.x_train) // cfg.training.batch_size) * 1e3
            print(f"| {epoch} | {total:.3f} | " + " | ".join(f"{parts[p]:.3f}" for p in PARTS)
                  + f" | {row['rest']:.3f} | {per_step:.2f} |", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine(), "config": args.config, "set": args.set, "epochs": rows},
                              indent=2))
    print(f"\nraw figures: {out}")


if __name__ == "__main__":
    main()
