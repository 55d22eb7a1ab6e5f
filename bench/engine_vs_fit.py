"""Seconds per epoch: plain Keras `model.fit` (the seed notebook's code) against gradexp's engine,
side by side in one process on the same data, after a warm-up epoch each.

Epochs are interleaved (fit, engine with telemetry, engine without, fit, ...) so that a slow
moment of the machine hits every contender alike. Reported: the median epoch time of each and the
ratios. Run: `make bench`, or `.venv/bin/python bench/engine_vs_fit.py --help`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gradexp import data as data_mod  # noqa: E402
from gradexp.config import load_config  # noqa: E402


def plain_keras_model(cfg, keras):
    """The seed's Sequential model, generalised to the config's depth/width/activation/initializer."""
    from gradexp.model import make_activation, make_initializer

    layers = [keras.layers.Input(shape=(28, 28)), keras.layers.Flatten()]
    for i, width in enumerate(cfg.model.width, start=1):
        layers.append(keras.layers.Dense(width, kernel_initializer=make_initializer(cfg.model.initializer, i)))
        layers.append(make_activation(cfg.model.activation, f"a{i}"))
    layers.append(keras.layers.Dense(10, activation="softmax"))
    model = keras.models.Sequential(layers)
    model.compile(loss="sparse_categorical_crossentropy", optimizer=keras.optimizers.SGD(learning_rate=cfg.optimizer.learning_rate),
                  metrics=["accuracy"])
    return model


def bench_config(path: str, rounds: int, limit: int | None) -> dict:
    import keras

    from gradexp import engine, model

    sets = [f"data.limit={limit}"] if limit else []
    cfg = load_config(path, sets)
    ds = data_mod.load(cfg.data.validation_size, cfg.data.scaling, cfg.data.dir, cfg.data.limit)
    keras.utils.set_random_seed(cfg.seed)
    fit_model = plain_keras_model(cfg, keras)
    engines = {}
    for label, on in (("telemetry_on", True), ("telemetry_off", False)):
        c = cfg.model_copy(deep=True)
        c.telemetry.enabled = on
        engines[label] = engine.Engine(c, model.build(c), ds)

    def fit_epoch(verbose="auto"):
        # verbose="auto" is the seed's call (Keras draws its per-step progress bar; we discard
        # the text); verbose=0 is fit at its quietest.
        t = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            fit_model.fit(ds.x_train, ds.y_train, epochs=1, batch_size=cfg.training.batch_size,
                          validation_data=(ds.x_val, ds.y_val), verbose=verbose)
        return time.perf_counter() - t

    def engine_epoch(eng, epoch):
        t = time.perf_counter()
        eng.train_epoch(epoch)
        return time.perf_counter() - t

    times: dict[str, list[float]] = {"fit": [], "fit_silent": [], "telemetry_on": [], "telemetry_off": []}
    fit_epoch()  # warm-up: tracing and compilation
    for eng in engines.values():
        engine_epoch(eng, 0)
    for r in range(1, rounds + 1):
        times["fit"].append(fit_epoch())
        times["fit_silent"].append(fit_epoch(0))
        for label, eng in engines.items():
            times[label].append(engine_epoch(eng, r))
        print(f"  round {r}: " + "  ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()), flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "config": path, "train_images": len(ds.x_train), "batch_size": cfg.training.batch_size, "rounds": rounds,
        "median_seconds": med, "all_seconds": times,
        "speedup_telemetry_on": med["fit"] / med["telemetry_on"],
        "speedup_telemetry_off": med["fit"] / med["telemetry_off"],
        "speedup_vs_silent_fit": med["fit_silent"] / med["telemetry_on"],
        "telemetry_overhead": med["telemetry_on"] / med["telemetry_off"] - 1.0,
    }


def machine() -> dict:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "tensorflow": tf.__version__, "gpu": [tf.config.experimental.get_device_details(g).get("device_name")
                                                  for g in gpus]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("configs", nargs="*", default=["configs/leaky_he.yaml", "configs/selu_lecun_100.yaml"])
    ap.add_argument("--rounds", type=int, default=3, help="timed epochs per contender after the warm-up")
    ap.add_argument("--limit", type=int, default=None, help="data.limit for a quick run")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "engine_vs_fit.json"))
    args = ap.parse_args()
    results = {"machine": machine(), "runs": []}
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
