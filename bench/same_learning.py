"""Same learning: validation accuracy after 10 epochs of configs/leaky_he.yaml, plain Keras `fit`
(the seed notebook's code, verbatim apart from loading the data through gradexp's verified loader)
against `gradexp train`, in one run. Both seed Python, NumPy and TensorFlow with the config's seed.

Run: `.venv/bin/python bench/same_learning.py [--epochs 10] [--seeds 42 ...]`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gradexp import data as data_mod  # noqa: E402
from gradexp.config import load_config  # noqa: E402
from gradexp.runs import read_csv  # noqa: E402
from gradexp.train import train  # noqa: E402


def seed_notebook(epochs: int, seed: int) -> list[float]:
    import keras

    ds = data_mod.load()
    keras.utils.set_random_seed(seed)
    model = keras.models.Sequential([
        keras.layers.Input(shape=[28, 28]),
        keras.layers.Flatten(),
        keras.layers.Dense(300, kernel_initializer="he_normal"),
        keras.layers.LeakyReLU(),
        keras.layers.Dense(100, kernel_initializer="he_normal"),
        keras.layers.LeakyReLU(),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(loss="sparse_categorical_crossentropy", optimizer=keras.optimizers.SGD(learning_rate=1e-3),
                  metrics=["accuracy"])
    history = model.fit(ds.x_train, ds.y_train, epochs=epochs, validation_data=(ds.x_val, ds.y_val), verbose=0)
    return history.history["val_accuracy"]


def gradexp_run(epochs: int, seed: int) -> list[float]:
    cfg = load_config(ROOT / "configs" / "leaky_he.yaml", [f"training.epochs={epochs}", f"seed={seed}"])
    with tempfile.TemporaryDirectory() as tmp:
        outcome = train(cfg, runs_dir=tmp, device="cpu")
        return [float(r["val_accuracy"]) for r in read_csv(outcome.run_dir / "history.csv")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seeds", type=int, nargs="*", default=[42])
    args = ap.parse_args()
    print("| seed | plain Keras fit: val acc (final, best) | gradexp: val acc (final, best) | difference (final) |")
    print("|---|---|---|---|")
    for seed in args.seeds:
        k = seed_notebook(args.epochs, seed)
        g = gradexp_run(args.epochs, seed)
        print(f"| {seed} | {k[-1]:.4f}, {max(k):.4f} | {g[-1]:.4f}, {max(g):.4f} | {100 * (g[-1] - k[-1]):+.2f} points |",
              flush=True)


if __name__ == "__main__":
    main()
