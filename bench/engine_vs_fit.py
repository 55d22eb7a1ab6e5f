"""Seconds per epoch: plain Keras `model.fit` (the seed notebook's code) against gradexp's engine,
side by side in one run on the same data, after a warm-up epoch each.

Each contender lives in its own worker process (its own TensorFlow runtime and thread pools, so one
cannot slow the other down with lingering threads or memory), and the parent runs their epochs in
turn, one at a time: fit, fit verbose=0, gradexp with telemetry, gradexp without, then the next
round in a rotated order. A slow moment of the machine therefore hits every contender alike.
Reported: the median epoch time of each, the speed-ups, and the telemetry cost as the median of the
per-round paired ratios. Run: `make bench`, or `.venv/bin/python bench/engine_vs_fit.py --help`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

from machine_info import machine
from paired import median_ratio, rotation

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONTENDERS = ("fit", "fit_silent", "telemetry_on", "telemetry_off")


def plain_keras_model(cfg, keras):
    """The seed's Sequential model, generalised to the config's depth/width/activation/initializer."""
    from gradexp.model import make_activation, make_initializer

    layers = [keras.layers.Input(shape=(28, 28)), keras.layers.Flatten()]
    for i, width in enumerate(cfg.model.width, start=1):
        layers.append(keras.layers.Dense(width, kernel_initializer=make_initializer(cfg.model.initializer, cfg.seed, "kernel", i)))
        layers.append(make_activation(cfg.model.activation, f"a{i}"))
    layers.append(keras.layers.Dense(10, activation="softmax"))
    model = keras.models.Sequential(layers)
    model.compile(loss="sparse_categorical_crossentropy",
                  optimizer=keras.optimizers.SGD(learning_rate=cfg.optimizer.learning_rate), metrics=["accuracy"])
    return model


def seed_fit_epoch(cfg, keras, ds, verbose: str | int):
    """One epoch of the seed's `model.fit(..., validation_data=...)` per call, its text discarded.
    verbose "auto" is the seed's call (Keras draws its per-step progress bar); 0 is fit at its quietest."""
    model = plain_keras_model(cfg, keras)

    def epoch(_: int = 0) -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            model.fit(ds.x_train, ds.y_train, epochs=1, batch_size=cfg.training.batch_size,
                      validation_data=(ds.x_val, ds.y_val), verbose=verbose)

    return epoch


def worker(kind: str, path: str, limit: int | None, conn) -> None:
    """Build one contender, then run one epoch per request and send back its seconds."""
    sys.path.insert(0, str(ROOT))
    from gradexp.engine import native_logs_hidden

    with native_logs_hidden():  # TensorFlow's start-up notices, once per worker, would bury the table
        import keras

    from gradexp import data as data_mod
    from gradexp.config import load_config

    cfg = load_config(path, [f"data.limit={limit}"] if limit else [])
    ds = data_mod.load(cfg.data.validation_size, cfg.data.scaling, cfg.data.dir, cfg.data.limit)
    keras.utils.set_random_seed(cfg.seed)
    if kind.startswith("fit"):
        epoch = seed_fit_epoch(cfg, keras, ds, "auto" if kind == "fit" else 0)
    else:
        from gradexp import engine
        from gradexp import model as model_mod

        cfg.telemetry.enabled = kind == "telemetry_on"
        eng = engine.Engine(cfg, model_mod.build(cfg), ds)

        def epoch(n: int) -> None:
            eng.train_epoch(n)

    conn.send(("ready", len(ds.x_train)))
    n = 0
    while conn.recv() == "epoch":
        t = time.perf_counter()
        epoch(n)
        conn.send(time.perf_counter() - t)
        n += 1


def bench_config(path: str, rounds: int, limit: int | None) -> dict:
    ctx = mp.get_context("spawn")
    procs, conns = {}, {}
    for kind in CONTENDERS:
        parent, child = ctx.Pipe()
        procs[kind] = ctx.Process(target=worker, args=(kind, path, limit, child), daemon=True)
        procs[kind].start()
        conns[kind] = parent
    n_train = 0
    for kind in CONTENDERS:  # wait for every worker's set-up before timing anything
        _, n_train = conns[kind].recv()

    def epoch(kind: str) -> float:
        conns[kind].send("epoch")
        return conns[kind].recv()

    for kind in CONTENDERS:  # warm-up: tracing and compilation
        epoch(kind)
    times: dict[str, list[float]] = {k: [] for k in CONTENDERS}
    for r in range(rounds):
        for kind in rotation(CONTENDERS, r):
            times[kind].append(epoch(kind))
        print(f"  round {r + 1}: " + "  ".join(f"{k} {times[k][-1]:.2f}s" for k in CONTENDERS), flush=True)
    for kind in CONTENDERS:
        conns[kind].send("stop")
        procs[kind].join(timeout=60)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "config": path, "train_images": n_train, "rounds": rounds, "median_seconds": med, "all_seconds": times,
        "speedup_telemetry_on": med["fit"] / med["telemetry_on"],
        "speedup_telemetry_off": med["fit"] / med["telemetry_off"],
        "speedup_vs_silent_fit": med["fit_silent"] / med["telemetry_on"],
        "telemetry_overhead": median_ratio(times["telemetry_on"], times["telemetry_off"]) - 1.0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("configs", nargs="*", default=["configs/leaky_he.yaml", "configs/selu_lecun_100.yaml"])
    ap.add_argument("--rounds", type=int, default=5, help="timed epochs per contender after the warm-up")
    ap.add_argument("--limit", type=int, default=None, help="data.limit for a quick run")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "engine_vs_fit.json"))
    args = ap.parse_args()
    results = {"machine": machine(), "runs": []}
    print("machine: " + ", ".join(f"{k} {v}" for k, v in results["machine"].items()), flush=True)
    for path in args.configs:
        print(f"{path}:", flush=True)
        results["runs"].append(bench_config(path, args.rounds, args.limit))
    print("\n| config | fit (seed call) | fit verbose=0 | gradexp, telemetry on | gradexp, off | speed-up on "
          "| speed-up off | on vs fit verbose=0 | telemetry cost |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results["runs"]:
        m = r["median_seconds"]
        print(f"| {r['config']} | {m['fit']:.2f} s | {m['fit_silent']:.2f} s | {m['telemetry_on']:.2f} s | "
              f"{m['telemetry_off']:.2f} s | {r['speedup_telemetry_on']:.1f}x | {r['speedup_telemetry_off']:.1f}x | "
              f"{r['speedup_vs_silent_fit']:.1f}x | {r['telemetry_overhead']:+.1%} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nraw figures: {out}")


if __name__ == "__main__":
    main()
