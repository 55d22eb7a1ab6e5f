"""Where one compiled training step spends its time, operation by operation.

Runs gradexp's engine on a config for one chunk of steps under TensorFlow's profiler, with XLA's
per-operation trace events switched on, and sorts every executed XLA operation of the chunk into:
forward matrix products, backward products for the input gradient (δ·Wᵀ) and for the weight
gradient (hᵀ·δ), fused element-wise kernels (bias, activation and its derivative, the optimizer's
update), copies, and the rest. The categories come from the optimised HLO that XLA dumps for the
chunk (a product's `grad_x`/`grad_y` attributes say which gradient it computes).

It also times a single batch-sized product (batch × width by width × width) three ways: inside one
XLA computation, as a TensorFlow graph op, and through NumPy's BLAS, to show how fast the matrix
library under each one multiplies matrices of this size.

Run: `.venv/bin/python bench/step_profile.py [CONFIG] [--steps N]` (default: the 100-layer SELU preset).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

from machine_info import machine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DUMP = tempfile.mkdtemp(prefix="gradexp-hlo-")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["XLA_FLAGS"] = " ".join(filter(None, [
    os.environ.get("XLA_FLAGS", ""), "--xla_cpu_enable_xprof_traceme=true",
    f"--xla_dump_to={DUMP}", "--xla_dump_hlo_as_text", "--xla_dump_hlo_module_re=.*chunk.*"]))

CATEGORIES = ("forward product", "input-gradient product", "weight-gradient product",
              "fused element-wise", "copy", "other")


def hlo_categories(dump: str) -> dict[str, str]:
    """Instruction name -> category, from the optimised HLO of the chunk's computation."""
    files = sorted(Path(dump).glob("*chunk*cpu_after_optimizations.txt"), key=lambda p: p.stat().st_size)
    if not files:
        raise SystemExit(f"no optimised HLO of the chunk was dumped to {dump}")
    names: dict[str, str] = {}
    for line in files[-1].read_text().splitlines():
        m = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = \S+ (\w[\w-]*)\(", line)
        if not m:
            continue
        name, op = m.groups()
        if op == "dot":
            if 'grad_x="true"' in line:
                names[name] = "input-gradient product"
            elif 'grad_y="true"' in line:
                names[name] = "weight-gradient product"
            else:
                names[name] = "forward product"
        elif op == "fusion":
            names[name] = "fused element-wise"
        elif op == "copy":
            names[name] = "copy"
        else:
            names[name] = "other"
    return names


def trace_events(logdir: str) -> list[tuple[str, int]]:
    """(event name, duration in ps) of every event on XLA's worker threads and the caller's."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    files = sorted(Path(logdir).rglob("*.xplane.pb"))
    space = xplane_pb2.XSpace()
    space.ParseFromString(files[-1].read_bytes())
    events = []
    for plane in space.planes:
        for line in plane.lines:
            for e in line.events:
                events.append((plane.event_metadata[e.metadata_id].name, e.duration_ps))
    return events


def profile_chunk(cfg, steps: int) -> dict:
    import tensorflow as tf
    from chunk_timing import chunk_runner

    _, run_chunk = chunk_runner(cfg, steps)
    run_chunk()  # compiles
    plain_wall = run_chunk()
    logdir = tempfile.mkdtemp(prefix="gradexp-prof-")
    tf.profiler.experimental.start(logdir)
    wall = run_chunk()
    tf.profiler.experimental.stop()

    categories = hlo_categories(DUMP)
    busy: collections.Counter = collections.Counter()
    count: collections.Counter = collections.Counter()
    events = trace_events(logdir)
    shutil.rmtree(logdir, ignore_errors=True)
    for name, ps in events:
        cat = categories.get(name)
        if cat:
            busy[cat] += ps
            count[cat] += 1
    return {
        "steps": steps, "telemetry": cfg.telemetry.enabled,
        "ms_per_step": plain_wall / steps * 1e3, "ms_per_step_profiled": wall / steps * 1e3,
        "busy_ms_per_step": {c: busy[c] / 1e9 / steps for c in CATEGORIES},
        "ops_per_step": {c: count[c] / steps for c in CATEGORIES},
        "us_per_op": {c: busy[c] / 1e6 / count[c] for c in CATEGORIES if count[c]},
    }


def _operands(batch: int, width: int) -> tuple:
    import numpy as np

    rng = np.random.default_rng(0)
    ws = [rng.normal(0, width ** -0.5, (width, width)).astype(np.float32) for _ in range(8)]
    return rng.normal(size=(batch, width)).astype(np.float32), ws


def numpy_product_speed(batch: int, width: int, repeats: int = 4500) -> float:
    """Microseconds per product through NumPy's BLAS. Timed before TensorFlow is imported: its idle
    worker threads would otherwise compete with BLAS's own."""
    h0, ws = _operands(batch, width)
    for i in range(100):
        h0 @ ws[i % len(ws)]
    t = time.perf_counter()
    for i in range(repeats):
        h0 @ ws[i % len(ws)]
    return (time.perf_counter() - t) / repeats * 1e6


def product_speeds(batch: int, width: int, repeats: int = 300) -> dict:
    """Microseconds for one (batch × width)·(width × width) product inside one XLA computation and
    as a TensorFlow graph op."""
    import tensorflow as tf

    h0, ws = _operands(batch, width)
    tws = [tf.constant(w) for w in ws]

    def chain(h):
        for i in range(repeats):
            h = tf.matmul(h, tws[i % len(tws)])
        return h

    out = {}
    for label, fn in (("XLA", tf.function(chain, jit_compile=True)), ("TensorFlow graph", tf.function(chain))):
        fn(tf.constant(h0))
        times = []
        for _ in range(15):
            t = time.perf_counter()
            fn(tf.constant(h0)).numpy()
            times.append(time.perf_counter() - t)
        out[label] = sorted(times)[len(times) // 2] / repeats * 1e6
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", nargs="?", default="configs/selu_lecun_100.yaml")
    ap.add_argument("--steps", type=int, default=256, help="steps in the profiled chunk")
    ap.add_argument("--telemetry", choices=("on", "off"), default="off",
                    help="profile with the telemetry step included (every telemetry.every steps)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "step_profile.json"))
    args = ap.parse_args()

    from gradexp.config import load_config

    cfg = load_config(args.config, [f"telemetry.enabled={args.telemetry == 'on'}"])
    width = max(cfg.model.width)
    numpy_us = numpy_product_speed(cfg.training.batch_size, width)
    try:
        result = {"machine": machine(), "config": args.config, **profile_chunk(cfg, args.steps)}
    finally:
        shutil.rmtree(DUMP, ignore_errors=True)
    result["product_us"] = {**product_speeds(cfg.training.batch_size, width), "NumPy (BLAS)": numpy_us}
    result["product_shape"] = f"{cfg.training.batch_size}x{width} by {width}x{width}"

    print(f"{args.config}: {result['ms_per_step']:.2f} ms per step "
          f"({result['ms_per_step_profiled']:.2f} ms while profiled), {args.steps} steps")
    busy = result["busy_ms_per_step"]
    total = sum(busy.values())
    print(f"{'operation':26s} {'busy ms/step':>12s} {'share':>6s} {'ops/step':>9s} {'µs/op':>7s}")
    for c in CATEGORIES:
        share = busy[c] / total if total else 0.0
        print(f"{c:26s} {busy[c]:12.3f} {share:6.1%} {result['ops_per_step'][c]:9.1f} "
              f"{result['us_per_op'].get(c, 0.0):7.2f}")
    print(f"{'all (summed over threads)':26s} {total:12.3f}")
    flops = 2 * cfg.training.batch_size * width * width
    print(f"one {result['product_shape']} product ({flops / 1e6:.2f} MFLOP):")
    for label, us in result["product_us"].items():
        print(f"  {label:18s} {us:7.2f} µs  {flops / us / 1e3:6.1f} GFLOP/s")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
