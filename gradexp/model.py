"""Keras models and optimizers from a validated Config. Imports Keras (and so TensorFlow) on call.

The net is Flatten → depth × [Dense → (BN) → activation layer → (BN) → (Dropout)] → Dense(10) →
softmax, built with the functional API so that the engine can also see each hidden layer's
pre-activation and activation without a second pass. Layer names are stable (`dense_1`, `act_1`,
…, `output`, `softmax`): telemetry and `layers.csv` use them.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import catalog
from .config import N_CLASSES, Config

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


@dataclass
class Built:
    """The saved model plus two views that share its layers and variables."""

    model: Any  # inputs → softmax probabilities; what `model.keras` holds
    logits_model: Any  # inputs → logits; what the engine trains through
    probe_model: Any  # inputs → [logits, pre-activations…, activations…] for telemetry
    layer_names: list[str]  # hidden Dense layers then "output"
    kernels: list[Any]  # the kernel variable of each of those layers


SEED_ROLES = {"kernel": 0, "bias": 1, "dropout": 2}


def layer_seed(base: int, role: str, index: int) -> int:
    """The seed of one layer's kernel, bias or dropout draws, derived from the base seed, the role and
    the layer's index by NumPy's SeedSequence. Each layer, role and base seed gets a stream of its
    own: with `seed + index`, same-shaped layers under an explicit initializer seed would all get the
    same matrix, and run s's layer i + 1 would start with run s + 1's layer i."""
    return int(np.random.SeedSequence([base, SEED_ROLES[role], index]).generate_state(1)[0] & 0x7FFF_FFFF)


def make_initializer(spec: dict[str, Any], run_seed: int, role: str, index: int) -> Any:
    """The initializer for one layer; its seed comes from the spec's own `seed` (when given) or the
    run's, with the layer's role and index."""
    import keras

    entry = catalog.INITIALIZER_BY_NAME[spec["name"]]
    kwargs = {k: v for k, v in spec.items() if k != "name"}
    if any(p.name == "seed" for p in entry.params):
        base = kwargs.get("seed")
        kwargs["seed"] = layer_seed(run_seed if base is None else base, role, index)
    return getattr(keras.initializers, entry.keras_class)(**kwargs)


def make_activation(spec: dict[str, Any], name: str) -> Any:
    """The activation layer the catalog names for `spec`, with the spec's parameters as its arguments
    (a parameter that sets an initializer, PReLU's starting slope, becomes a constant initializer)."""
    import keras

    entry = catalog.ACTIVATION_BY_NAME[spec["name"]]
    layer = getattr(keras.layers, entry.keras_layer)
    if entry.keras_layer == "Activation":
        return layer(entry.function, name=name)
    args = {key: keras.initializers.Constant(value) if key.endswith("_initializer") else value
            for key, value in entry.layer_arguments(spec).items()}
    return layer(**args, name=name)


def make_optimizer(cfg: Config) -> Any:
    import keras

    o = cfg.optimizer
    entry = catalog.OPTIMIZER_BY_NAME[o.name]
    kwargs: dict[str, Any] = {"learning_rate": o.learning_rate, **entry.fixed}
    for key in entry.keys:
        kwargs[key] = getattr(o, key)
    for key in catalog.CLIP_KEYS:
        if getattr(o, key) is not None:
            kwargs[key] = getattr(o, key)
    opt = getattr(keras.optimizers, entry.keras_class)(**kwargs)
    if cfg.training.precision == "mixed_float16":
        opt = keras.optimizers.LossScaleOptimizer(opt)
    return opt


def build(cfg: Config) -> Built:
    """Build the net for `cfg`. Seeds: every layer's kernel, bias and dropout draw from their own
    seed (`layer_seed`), so a run repeats exactly and no two layers or runs share a random stream."""
    import keras

    # Keras walks the functional graph recursively: ~4 frames per layer.
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 2_000 + 30 * cfg.model.depth))
    keras.mixed_precision.set_global_policy(cfg.training.precision)
    m = cfg.model
    bn = m.batch_norm
    inputs = keras.Input(shape=(28, 28), name="image")
    x = keras.layers.Flatten(name="flatten")(inputs)
    preacts, acts, names = [], [], []
    dense_layers = []
    for i, width in enumerate(m.width, start=1):
        dense = keras.layers.Dense(
            width, use_bias=(bn != "before_activation"), name=f"dense_{i}",
            kernel_initializer=make_initializer(m.initializer, cfg.seed, "kernel", i),
            bias_initializer=make_initializer(m.bias_initializer, cfg.seed, "bias", i),
        )
        x = dense(x)
        if bn == "before_activation":
            x = keras.layers.BatchNormalization(name=f"bn_{i}")(x)
        preacts.append(x)
        x = make_activation(m.activation, f"act_{i}")(x)
        acts.append(x)
        if bn == "after_activation":
            x = keras.layers.BatchNormalization(name=f"bn_{i}")(x)
        if m.dropout > 0:
            x = keras.layers.Dropout(m.dropout, seed=layer_seed(cfg.seed, "dropout", i), name=f"dropout_{i}")(x)
        names.append(dense.name)
        dense_layers.append(dense)
    out = keras.layers.Dense(N_CLASSES, name="output", kernel_initializer=keras.initializers.GlorotUniform(
        seed=layer_seed(cfg.seed, "kernel", len(m.width) + 1)))
    logits = out(x)
    names.append(out.name)
    dense_layers.append(out)
    probs = keras.layers.Activation("softmax", dtype="float32", name="softmax")(logits)
    model = keras.Model(inputs, probs, name="gradexp_mlp")
    logits_model = keras.Model(inputs, logits, name="gradexp_logits")
    probe_model = keras.Model(inputs, [logits, *preacts, probs, *acts], name="gradexp_probe")
    return Built(model, logits_model, probe_model, names, [d.kernel for d in dense_layers])

