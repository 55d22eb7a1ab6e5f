"""What per-layer telemetry costs the compiled step: one config's chunk with telemetry on and off, paired.

Builds two engines on the same config and the same batches in one process, one with telemetry on (a
telemetry step opens every group of `telemetry.every` steps, as in an epoch) and one with it off,
compiles both, and then runs their chunks in turn, round after round in alternating order
(paired.py). Reported: the median milliseconds per step of each and the
median of the per-round ratios on / off (1.03 = telemetry adds 3 % to the step). Unlike the epochs of
`engine_vs_fit.py`, nothing else (validation, progress, reading the accumulators) is in the timing.

Run: `.venv/bin/python bench/telemetry_cost.py [CONFIG] [--set KEY=VALUE ...] [--steps 256] [--rounds 20]`
(default: the seed config).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from machine_info import machine
from paired import median_ratio, rotation

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", nargs="?", default=str(ROOT / "configs" / "leaky_he.yaml"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="applied to both engines")
    ap.add_argument("--steps", type=int, default=256, help="steps in the timed chunk")
    ap.add_argument("--rounds", type=int, default=20, help="timed chunks per engine, run in turn")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "telemetry_cost.json"))
    args = ap.parse_args()

    from chunk_timing import chunk_runner

    from gradexp.config import load_config
    from gradexp.engine import native_logs_hidden

    runs = {}
    with native_logs_hidden():
        for name, enabled in (("on", "true"), ("off", "false")):
            cfg = load_config(args.config, [*args.set, f"telemetry.enabled={enabled}"])
            _, run = chunk_runner(cfg, args.steps)
            run()  # compiles
            runs[name] = run
    every = cfg.telemetry.every
    times: dict[str, list[float]] = {"on": [], "off": []}
    for r in range(args.rounds):
        for name in rotation(("on", "off"), r):
            times[name].append(runs[name]() / args.steps * 1e3)
    ratio = median_ratio(times["on"], times["off"])
    summary = {name: statistics.median(t) for name, t in times.items()}

    print(f"{args.config}, {args.steps} steps per chunk (a telemetry step every {every}), "
          f"{args.rounds} chunks each, paired by round:")
    print("| telemetry on | telemetry off | on / off (median per round) |")
    print("|---|---|---|")
    print(f"| {summary['on']:.3f} ms/step | {summary['off']:.3f} ms/step | {ratio:.3f} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine(), "config": args.config, "set": args.set, "steps": args.steps,
                               "every": every, "median_ms_per_step": summary, "median_ratio": ratio,
                               "runs": times}, indent=2))
    print(f"\nraw figures: {out}")


if __name__ == "__main__":
    main()
