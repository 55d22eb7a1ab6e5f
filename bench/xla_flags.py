"""Milliseconds per step of gradexp's compiled chunk under different XLA CPU options, side by side.

XLA reads `XLA_FLAGS` once, when TensorFlow starts, so every variant runs in its own process: it
builds the engine on the config, compiles one chunk of plain steps, runs it `--repeats` times on the
same batches and reports the median. The parent runs the variants in turn, round after round in a
rotated order, so that a slow moment of the machine hits every variant alike, and reports each
variant's median over the rounds, its ratio to the first variant (TensorFlow's defaults) and the
mean training loss of the timed steps (equal: the same arithmetic; different: another summation
order, or a variant that changes the math). A variant whose compilation fails is reported as failed.

Run: `.venv/bin/python bench/xla_flags.py [CONFIG] [--rounds N] [--variant NAME=FLAGS ...]`
(default: the 100-layer SELU preset and the variants below).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = {
    "TensorFlow's defaults": "",
    "single-threaded Eigen products": "--xla_cpu_multi_thread_eigen=false",
    "legacy (non-thunk) runtime": "--xla_cpu_use_thunk_runtime=false",
    "YNNPACK product fusions": "--xla_cpu_experimental_ynn_fusion_type=dot",
    "concurrency-optimised scheduler": "--xla_cpu_enable_concurrency_optimized_scheduler=true",
    "512-bit vectors": "--xla_cpu_prefer_vector_width=512",
    # Without multi-threaded Eigen, XLA writes small row-major products (the forward ones here) as its
    # own tiled loops; 8×4×2 tiles were the fastest of those tried on one 32×100·100×100 product.
    "tiled LLVM IR products": "--xla_cpu_multi_thread_eigen=false "
                              "--xla_backend_extra_options=xla_llvm_ir_gemm_tile_size=8:4:2*vectwidth",
}


def worker(config: str, steps: int, repeats: int) -> dict:
    """Runs in the child process, under the XLA_FLAGS its parent set."""
    from chunk_timing import chunk_runner

    from gradexp.config import load_config

    eng, run = chunk_runner(load_config(config, ["telemetry.enabled=false"]), steps)
    run()  # compiles
    eng.reset_running()
    seconds = sorted(run() for _ in range(repeats))
    return {"ms_per_step": seconds[len(seconds) // 2] / steps * 1e3, "mean_loss": eng.running()[0]}


def run_variant(flags: str, config: str, steps: int, repeats: int) -> dict:
    env = {**os.environ, "XLA_FLAGS": flags, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, __file__, config, "--steps", str(steps), "--repeats", str(repeats),
                           "--worker"], capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        last = lines[-1] if lines else f"exit {proc.returncode}"
        return {"failed": last.split("] ", 1)[-1]}  # without the log line's prefix
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", nargs="?", default="configs/selu_lecun_100.yaml")
    ap.add_argument("--steps", type=int, default=128, help="steps in the timed chunk")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs of the chunk per process")
    ap.add_argument("--rounds", type=int, default=3, help="processes per variant, run in turn")
    ap.add_argument("--variant", action="append", metavar="NAME=FLAGS",
                    help="a variant to compare instead of the built-in list (repeatable; the first is the baseline)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "xla_flags.json"))
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.config, args.steps, args.repeats)))
        return

    variants = dict(v.split("=", 1) if "=" in v else (v, "") for v in args.variant) if args.variant else VARIANTS
    names = list(variants)
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            result = run_variant(variants[name], args.config, args.steps, args.repeats)
            runs[name].append(result)
            shown = f"{result['ms_per_step']:.2f} ms/step" if "ms_per_step" in result else "failed"
            print(f"  round {r + 1}: {name}: {shown}", flush=True)

    summary = {}
    for name in names:
        ok = [x for x in runs[name] if "ms_per_step" in x]
        summary[name] = ({"flags": variants[name], "median_ms_per_step": statistics.median(x["ms_per_step"] for x in ok),
                          "mean_loss": ok[0]["mean_loss"]} if ok else
                         {"flags": variants[name], "failed": runs[name][0]["failed"]})
    base = summary[names[0]].get("median_ms_per_step")
    print(f"\n{args.config}, {args.steps} steps per chunk, median of {args.rounds} processes:")
    print(f"| variant | XLA_FLAGS | ms per step | vs {names[0]} | mean loss |")
    print("|---|---|---|---|---|")
    for name, s in summary.items():
        if "failed" in s:
            print(f"| {name} | `{s['flags']}` | failed: {s['failed'][:80]} | | |")
            continue
        ratio = f"{s['median_ms_per_step'] / base:.2f}" if base else "—"
        print(f"| {name} | `{s['flags'] or '(none)'}` | {s['median_ms_per_step']:.2f} | {ratio} | {s['mean_loss']:.6f} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"config": args.config, "steps": args.steps, "rounds": args.rounds,
                               "summary": summary, "runs": runs}, indent=2))
    print(f"\nraw figures: {out}")


if __name__ == "__main__":
    main()
