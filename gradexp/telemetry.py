"""Per-layer measurements taken inside the compiled training step.

A telemetry step runs the probe view of the model (logits, every hidden pre-activation and
activation), asks the one backward pass for the gradients of the weights *and* of each layer's
pre-activation (the backpropagated signal δ), and folds a handful of scalars per layer into
accumulator variables. Python reads the accumulators once per epoch. Nothing is recomputed and no
batch is seen twice.

Per layer and step:
- grad_norm      ‖∂L/∂W‖ of the Dense kernel;
- delta_norm     ‖∂L/∂z‖ of the pre-activation (vanishing/exploding shows most clearly here: the
                 kernel gradient aᵀδ multiplies in the forward activations and can hide it);
- act_mean/std   of the activation output;
- dead_fraction  units whose output is exactly zero for every sample of the batch;
- saturated_fraction  pre-activations in the activation's flat region (catalog.Activation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import catalog

STATS = ("grad_norm", "delta_norm", "act_mean", "act_std", "dead_fraction", "saturated_fraction")


@dataclass
class Saturation:
    kind: str  # "none" | "two-sided" | "negative side" | "above the cap"
    threshold: float  # |z| or -z beyond it is flat; for "above the cap", the cap itself


def saturation_for(activation: dict[str, Any], threshold: float) -> Saturation:
    """Where the activation is flat. A capped ReLU (relu6, relu with max_value) is flat at and above
    its cap, and hard_sigmoid beyond |z| = 3, whatever the threshold: the gradient there is exactly zero."""
    entry = catalog.ACTIVATION_BY_NAME[activation["name"]]
    cap = entry.layer_arguments(activation).get("max_value")
    if cap is not None:
        return Saturation("above the cap", float(cap))
    if entry.flat_beyond is not None:
        return Saturation(entry.saturation, entry.flat_beyond)
    return Saturation(entry.saturation, entry.flat_scale * threshold)


class Accumulator:
    """tf.Variables holding per-layer sums over the telemetry steps of one epoch.

    Each cell (statistic × layer) keeps its own count of finite values: a step whose later layers
    overflowed still records the layers before them, which is where a net that explodes at
    initialisation shows how it does so. A cell with no finite value reads as NaN."""

    def __init__(self, n_layers: int) -> None:
        import tensorflow as tf

        self.n_layers = n_layers
        self.sums = tf.Variable(tf.zeros([len(STATS), n_layers], tf.float32), trainable=False, name="telemetry_sums")
        self.counts = tf.Variable(tf.zeros([len(STATS), n_layers], tf.float32), trainable=False,
                                  name="telemetry_counts")
        self.grad_max = tf.Variable(tf.zeros([n_layers], tf.float32), trainable=False, name="telemetry_grad_max")
        self.count = tf.Variable(0.0, trainable=False, name="telemetry_count")  # steps measured

    def reset(self) -> None:
        self.sums.assign(np.zeros(self.sums.shape, np.float32))
        self.counts.assign(np.zeros(self.counts.shape, np.float32))
        self.grad_max.assign(np.zeros(self.grad_max.shape, np.float32))
        self.count.assign(0.0)

    def add(self, stats: Any) -> None:
        """Inside the compiled step: `stats` is a [len(STATS), n_layers] tensor. Non-finite values
        are left out cell by cell (the gradients of a loss-scaled step that overflowed and was
        skipped, the layers after an overflow); divergence is the engine's to detect, from the loss
        and gradients."""
        import tensorflow as tf

        finite = tf.math.is_finite(stats)
        self.sums.assign_add(tf.where(finite, stats, tf.zeros_like(stats)))
        self.counts.assign_add(tf.cast(finite, tf.float32))
        self.grad_max.assign(tf.where(finite[0], tf.maximum(self.grad_max, stats[0]), self.grad_max))
        self.count.assign_add(1.0)

    def read(self) -> dict[str, np.ndarray]:
        """Means over each cell's finite values; NaN (an empty cell in layers.csv) where there was none."""
        counts = self.counts.numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.where(counts > 0, self.sums.numpy() / counts, np.nan).astype(np.float32)
        out = {name: means[i] for i, name in enumerate(STATS)}
        out["grad_norm_max"] = np.where(counts[0] > 0, self.grad_max.numpy(), np.nan).astype(np.float32)
        return out


def layer_stats(preacts: list[Any], acts: list[Any], kernel_grads: list[Any], deltas: list[Any],
                saturation: Saturation) -> Any:
    """[len(STATS), n_layers] float32 tensor for hidden layers followed by the output layer.
    The last entries of `acts`/`preacts` are the output layer's probabilities and logits."""
    import tensorflow as tf

    f32 = tf.float32
    nan = tf.constant(np.nan, f32)
    rows: list[list[Any]] = [[] for _ in STATS]
    n_hidden = len(preacts) - 1
    for i, (z, a, g, d) in enumerate(zip(preacts, acts, kernel_grads, deltas, strict=True)):
        z = tf.cast(z, f32)
        a = tf.cast(a, f32)
        rows[0].append(_wide(tf.norm, g))
        rows[1].append(_wide(tf.norm, d))
        rows[2].append(_wide(tf.reduce_mean, a))
        rows[3].append(_wide(tf.math.reduce_std, a))
        if i < n_hidden:
            # A fraction of values that overflowed means nothing (NaN is neither zero nor flat): NaN,
            # so that the cell keeps only the steps where it was measured.
            dead = tf.reduce_mean(tf.cast(tf.reduce_all(tf.equal(a, 0.0), axis=0), f32))
            rows[4].append(tf.where(tf.reduce_all(tf.math.is_finite(a)), dead, nan))
            if saturation.kind == "two-sided":
                flat = tf.abs(z) > saturation.threshold
            elif saturation.kind == "negative side":
                flat = z < -saturation.threshold
            elif saturation.kind == "above the cap":
                flat = z >= saturation.threshold
            else:
                flat = tf.zeros_like(z, dtype=tf.bool)
            rows[5].append(tf.where(tf.reduce_all(tf.math.is_finite(z)), tf.reduce_mean(tf.cast(flat, f32)), nan))
        else:  # output layer: dead/saturated do not apply to softmax probabilities
            rows[4].append(tf.constant(0.0))
            rows[5].append(tf.constant(0.0))
    return tf.stack([tf.stack(r) for r in rows])


def _wide(reduce: Any, x: Any) -> Any:
    """`reduce(x)` computed in float64 and returned as float32. A norm or a variance squares its values
    and a mean sums them, so in float32 they overflow once values pass about 1e19 (or 3e38 / their
    count), long before the values themselves do: an exploding net would read as infinite while its
    numbers are still finite. In float64 the square of any float32 value (at most 1.2e77), summed over
    any tensor that fits in memory, stays finite, so the result overflows only when it is itself beyond
    float32. One pass over each value: dividing by max|x| first, the other way to keep the sums finite,
    takes two, and over the kernel gradients that second pass cost the seed config's telemetry a tenth
    of its epoch (bench/RESULTS.md, "What telemetry costs")."""
    import tensorflow as tf

    return tf.cast(reduce(tf.cast(x, tf.float64)), tf.float32)


def epoch_rows(epoch: int, names: list[str], stats: dict[str, np.ndarray], weight_norms: np.ndarray,
               update_ratios: np.ndarray | None) -> list[dict[str, Any]]:
    """One `layers.csv` row per layer; the output layer's dead/saturated cells stay empty."""
    rows = []
    last = len(names) - 1
    for i, name in enumerate(names):
        rows.append({
            "epoch": epoch, "layer": name,
            "grad_norm": float(stats["grad_norm"][i]), "grad_norm_max": float(stats["grad_norm_max"][i]),
            "weight_norm": float(weight_norms[i]),
            "update_ratio": None if update_ratios is None else float(update_ratios[i]),
            "act_mean": float(stats["act_mean"][i]), "act_std": float(stats["act_std"][i]),
            "dead_fraction": None if i == last else float(stats["dead_fraction"][i]),
            "saturated_fraction": None if i == last else float(stats["saturated_fraction"][i]),
            "delta_norm": float(stats["delta_norm"][i]),
        })
    return rows
