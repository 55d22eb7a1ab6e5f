"""Milliseconds per step of gradexp's compiled chunk under different XLA CPU options, paired chunk by chunk.

XLA reads `XLA_FLAGS` once, at its first compilation, so every variant lives in its own worker
process: it builds the engine on the config under its flags, compiles one chunk of plain steps and
then runs that chunk, on the same batches, each time the parent asks. The parent asks the variants in
turn, one chunk each, round after round in a rotated order, so the timings of one round are seconds
apart and a slow moment of the machine (this one has many) hits every variant alike. Reported per
variant: the median milliseconds per step, the median of its per-round ratios to the first variant,
in how many rounds it was faster than the first, and the mean training loss of its timed steps
(equal: the same arithmetic; different: another summation order).

gradexp adds its own XLA options (`gradexp.engine.XLA_OPTIONS`) to each option a variant does not
set, so a variant that spells out an option measures that value; "TensorFlow's defaults" spells out
TensorFlow's own values. A variant whose compilation fails is reported as failed.

Run: `.venv/bin/python bench/xla_flags.py [CONFIG] [--rounds N] [--variant NAME=FLAGS ...]`
(default: the 100-layer SELU preset and the variants below). Keep to a handful of variants per run:
every worker holds a compiled engine, and with more of them alive the timings of all grow.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from machine_info import machine
from paired import rotation

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TF_DEFAULTS = ("--xla_cpu_multi_thread_eigen=true --xla_cpu_prefer_vector_width=256 "
               "--xla_backend_extra_options=xla_llvm_ir_gemm_tile_size=11:9:1*vectwidth")
VARIANTS = {
    "gradexp's options": "",
    "TensorFlow's defaults": TF_DEFAULTS,
    "single-threaded Eigen products only": "--xla_cpu_prefer_vector_width=256 "
                                           "--xla_backend_extra_options=xla_llvm_ir_gemm_tile_size=11:9:1*vectwidth",
    "512-bit vectors only": "--xla_cpu_multi_thread_eigen=true",
    "tiled products, 256-bit vectors, 8x4x2 tiles": "--xla_cpu_prefer_vector_width=256 "
                                                    "--xla_backend_extra_options=xla_llvm_ir_gemm_tile_size=8:4:2*vectwidth",
}


def worker(config: str, steps: int) -> None:
    """Runs in the child process, under the XLA_FLAGS its parent set: one chunk per line on stdin."""
    from chunk_timing import chunk_runner

    from gradexp.config import load_config

    eng, run = chunk_runner(load_config(config, ["telemetry.enabled=false"]), steps)
    run()  # compiles
    run()
    eng.reset_running()
    print("ready", flush=True)
    for _ in sys.stdin:
        seconds = run()
        print(json.dumps({"ms_per_step": seconds / steps * 1e3, "mean_loss": eng.running()[0]}), flush=True)


def start(flags: str, config: str, steps: int) -> subprocess.Popen | str:
    """A ready worker, or the reason it failed (its last line of stderr)."""
    env = {**os.environ, "XLA_FLAGS": flags, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen([sys.executable, __file__, config, "--steps", str(steps), "--worker"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()
    if not line:
        proc.wait()
        lines = [ln for ln in proc.stderr.read().splitlines() if ln.strip()]
        last = lines[-1] if lines else f"exit {proc.returncode}"
        return last.split("] ", 1)[-1]  # without the log line's prefix
    return proc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", nargs="?", default="configs/selu_lecun_100.yaml")
    ap.add_argument("--steps", type=int, default=128, help="steps in the timed chunk")
    ap.add_argument("--rounds", type=int, default=30, help="timed chunks per variant, run in turn")
    ap.add_argument("--variant", action="append", metavar="NAME=FLAGS",
                    help="a variant to compare instead of the built-in list (repeatable; the first is the baseline)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "xla_flags.json"))
    args = ap.parse_args()
    if args.worker:
        worker(args.config, args.steps)
        return

    variants = dict(v.split("=", 1) if "=" in v else (v, "") for v in args.variant) if args.variant else VARIANTS
    workers = {name: start(flags, args.config, args.steps) for name, flags in variants.items()}
    live = [n for n, w in workers.items() if not isinstance(w, str)]
    runs: dict[str, list[dict]] = {n: [] for n in live}
    for r in range(args.rounds):
        for name in rotation(live, r):
            proc = workers[name]
            proc.stdin.write("chunk\n")
            proc.stdin.flush()
            runs[name].append(json.loads(proc.stdout.readline()))
        print(f"  round {r + 1}: " + ", ".join(f"{n} {runs[n][-1]['ms_per_step']:.2f}" for n in live), flush=True)
    for name in live:
        workers[name].stdin.close()
        workers[name].wait()

    base = live[0] if live else None
    summary: dict[str, dict] = {}
    for name, flags in variants.items():
        if name not in runs:
            summary[name] = {"flags": flags, "failed": workers[name]}
            continue
        ms = [x["ms_per_step"] for x in runs[name]]
        ratios = [a["ms_per_step"] / b["ms_per_step"] for a, b in zip(runs[name], runs[base], strict=True)]
        summary[name] = {"flags": flags, "median_ms_per_step": statistics.median(ms),
                         "median_ratio": statistics.median(ratios),
                         "faster_rounds": sum(x < 1 for x in ratios), "mean_loss": runs[name][-1]["mean_loss"]}
    print(f"\n{args.config}, {args.steps} steps per chunk, {args.rounds} chunks per variant, paired by round:")
    print(f"| variant | XLA_FLAGS (besides gradexp's) | ms per step (median) | per-round ratio to {base} "
          f"(median) | faster rounds | mean loss |")
    print("|---|---|---|---|---|---|")
    for name, s in summary.items():
        if "failed" in s:
            print(f"| {name} | `{s['flags']}` | failed: {s['failed'][:80]} | | | |")
            continue
        print(f"| {name} | `{s['flags'] or '(none)'}` | {s['median_ms_per_step']:.2f} | {s['median_ratio']:.3f} | "
              f"{s['faster_rounds']}/{args.rounds} | {s['mean_loss']:.6f} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine(), "config": args.config, "steps": args.steps,
                               "rounds": args.rounds, "summary": summary, "runs": runs}, indent=2))
    print(f"\nraw figures: {out}")


if __name__ == "__main__":
    main()
