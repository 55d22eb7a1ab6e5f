"""The telemetry values themselves, checked against an independent NumPy forward and backward pass.

The reference below recomputes, in float64 from the Keras model's current kernels and biases, what
README "The measurements (layers.csv)" says each column holds:

- grad_norm        Frobenius norm of ∂L/∂W of the layer's kernel, L the batch-mean cross-entropy;
- delta_norm       Frobenius norm of ∂L/∂z over the [batch, units] pre-activation matrix;
- act_mean/act_std of the activation's output over the batch (softmax probabilities for `output`);
- dead_fraction    fraction of units whose output is exactly 0 for every sample of the batch;
- saturated_fraction  fraction of pre-activations in the flat region (two-sided |z| > t for sigmoid,
                   |z| > t/2 for tanh, z < -t for ELU, z ≥ 6 for ReLU6, none for ReLU; t = telemetry.saturation_threshold);
- grad_norm, delta_norm, act_*, *_fraction are means over the measured steps, grad_norm_max the max;
- weight_norm      ‖W‖ at the end; update_ratio ‖W_end − W_start‖ / ‖W_start‖ over the epoch.

Only the data (the engine's training arrays), the weights at the start and the seed (to reproduce the
engine's batch order) come from gradexp; the arithmetic is all here. A wrong formula fails a test.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import engine_for

RTOL = 2e-4  # float32 engine vs float64 reference
ATOL = 1e-7


def make(tiny_data, seed=3, **sections):
    return engine_for(tiny_data, {
        "seed": seed, "model": {"activation": "relu", "initializer": "he_normal", "depth": 3, "width": [32, 24, 16]},
        "optimizer": {"name": "sgd", "learning_rate": 0.05}, "training": {"epochs": 1, "batch_size": 32},
        "telemetry": {"every": 1}}, **sections)


# ------------------------------------------------------------ the independent reference

def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


ACTIVATIONS = {  # name: (f, f')
    "relu": (lambda z: np.maximum(z, 0.0), lambda z: (z > 0).astype(np.float64)),
    "relu6": (lambda z: np.clip(z, 0.0, 6.0), lambda z: ((z > 0) & (z < 6)).astype(np.float64)),
    "tanh": (np.tanh, lambda z: 1.0 - np.tanh(z) ** 2),
    "sigmoid": (_sigmoid, lambda z: _sigmoid(z) * (1.0 - _sigmoid(z))),
    "elu": (lambda z: np.where(z > 0, z, np.expm1(np.minimum(z, 0.0))), lambda z: np.where(z > 0, 1.0, np.exp(np.minimum(z, 0.0)))),
}

FLAT = {  # name: (z, t) -> bool mask of the flat region, as README states it
    "relu": lambda z, t: np.zeros(z.shape, bool),
    "relu6": lambda z, t: z >= 6.0,  # flat at and above its cap, whatever t
    "sigmoid": lambda z, t: np.abs(z) > t,
    "tanh": lambda z, t: np.abs(z) > t / 2,
    "elu": lambda z, t: z < -t,
}


def params_of(eng):
    """(kernel, bias) per Dense layer, input to output, as float64 copies."""
    out = []
    for name in eng.built.layer_names:
        layer = eng.built.logits_model.get_layer(name)
        out.append((layer.kernel.numpy().astype(np.float64), layer.bias.numpy().astype(np.float64)))
    return out


def reference(params, x, y, activation, threshold):
    """Forward and backward by hand: per-layer statistics of one batch plus the gradients of
    every kernel and bias of the batch-mean cross-entropy."""
    f, df = ACTIVATIONS[activation]
    n, depth = len(x), len(params)
    a = np.asarray(x, np.float64).reshape(n, -1)
    inputs, zs, acts = [], [], []
    for i, (w, b) in enumerate(params):
        inputs.append(a)
        z = a @ w + b
        if i < depth - 1:
            a = f(z)
        else:
            e = np.exp(z - z.max(axis=1, keepdims=True))
            a = e / e.sum(axis=1, keepdims=True)
        zs.append(z)
        acts.append(a)
    onehot = np.eye(z.shape[1])[y]
    delta = (acts[-1] - onehot) / n  # ∂(mean CE)/∂logits
    deltas, kgrads, bgrads = [None] * depth, [None] * depth, [None] * depth
    for i in reversed(range(depth)):
        deltas[i] = delta
        kgrads[i] = inputs[i].T @ delta
        bgrads[i] = delta.sum(axis=0)
        if i:
            delta = (delta @ params[i][0].T) * df(zs[i - 1])
    hidden = range(depth - 1)
    stats = {
        "grad_norm": np.array([np.sqrt(np.sum(g * g)) for g in kgrads]),
        "delta_norm": np.array([np.sqrt(np.sum(d * d)) for d in deltas]),
        "act_mean": np.array([a.mean() for a in acts]),
        "act_std": np.array([np.sqrt(np.mean((a - a.mean()) ** 2)) for a in acts]),
        "dead_fraction": np.array([np.mean(np.all(acts[i] == 0.0, axis=0)) for i in hidden]),
        "saturated_fraction": np.array([np.mean(FLAT[activation](zs[i], threshold)) for i in hidden]),
    }
    return stats, kgrads, bgrads


def mean_over(steps):
    out = {k: np.mean([s[k] for s in steps], axis=0) for k in steps[0]}
    out["grad_norm_max"] = np.max([s["grad_norm"] for s in steps], axis=0)
    return out


def column(rows, key, hidden_only=False):
    rows = rows[:-1] if hidden_only else rows
    return np.array([r[key] for r in rows], np.float64)


def assert_rows_match(rows, expected):
    for key in ("grad_norm", "grad_norm_max", "delta_norm", "act_mean", "act_std"):
        np.testing.assert_allclose(column(rows, key), expected[key], rtol=RTOL, atol=ATOL, err_msg=key)
    # Fractions are counts over a few hundred entries: exact up to float32 rounding of the mean.
    for key in ("dead_fraction", "saturated_fraction"):
        np.testing.assert_allclose(column(rows, key, hidden_only=True), expected[key], rtol=0, atol=1e-6, err_msg=key)
    assert rows[-1]["dead_fraction"] is None and rows[-1]["saturated_fraction"] is None


# Each variant makes the checked quantity non-trivial: some dead ReLU units, some saturated
# sigmoid/tanh pre-activations, ReLU6 pre-activations past its cap, ELU pre-activations past its
# negative knee.
VARIANTS = {
    "relu": {"model": {"activation": "relu", "initializer": "he_normal",
                       "bias_initializer": {"name": "constant", "value": -0.15}}},
    "relu6": {"model": {"activation": "relu6", "initializer": {"name": "random_normal", "stddev": 0.4},
                        "bias_initializer": {"name": "constant", "value": 1.0}}},
    "tanh": {"model": {"activation": "tanh", "initializer": {"name": "random_normal", "stddev": 0.15}},
             "telemetry": {"saturation_threshold": 3.0}},
    "sigmoid": {"model": {"activation": "sigmoid", "initializer": {"name": "random_normal", "stddev": 0.15}},
                "telemetry": {"saturation_threshold": 2.0}},
    "elu": {"model": {"activation": "elu", "initializer": "he_normal",
                      "bias_initializer": {"name": "constant", "value": -0.3}},
            "telemetry": {"saturation_threshold": 0.5}},
}


def threshold_of(eng):
    return eng.cfg.telemetry.saturation_threshold


# ------------------------------------------------------------ epoch 0 (no updates)

def zero_order(eng, n):
    """Row 0's batch order: a permutation from a stream of its own, spawned from the seed (the
    epochs shuffle with np.random.default_rng(seed))."""
    return np.random.default_rng(np.random.SeedSequence(eng.cfg.seed, spawn_key=(1,))).permutation(n)


@pytest.mark.parametrize("compiled", [True, False], ids=["xla", "eager"])
@pytest.mark.parametrize("activation", list(VARIANTS))
def test_epoch_zero_matches_reference(tiny_data, activation, compiled):
    eng = make(tiny_data, **VARIANTS[activation])
    params = params_of(eng)
    x, y = eng.x_train.numpy(), eng.y_train.numpy()
    order = zero_order(eng, len(x))  # cut into batches of 32
    batches = 3
    steps = [reference(params, x[order[b * 32:(b + 1) * 32]], y[order[b * 32:(b + 1) * 32]],
                       activation, threshold_of(eng))[0] for b in range(batches)]
    expected = mean_over(steps)

    result = eng.epoch_zero(batches=batches, compiled=compiled)
    rows = result.layers
    assert [r["layer"] for r in rows] == ["dense_1", "dense_2", "dense_3", "output"]
    assert float(eng.acc.count.numpy()) == batches
    assert_rows_match(rows, expected)
    np.testing.assert_allclose(column(rows, "weight_norm"), [np.linalg.norm(w) for w, _ in params], rtol=1e-5)
    assert all(r["update_ratio"] is None for r in rows)
    for layer, (w, b) in zip(eng.built.layer_names, params, strict=True):  # nothing was updated
        dense = eng.built.logits_model.get_layer(layer)
        np.testing.assert_array_equal(dense.kernel.numpy(), w.astype(np.float32))
        np.testing.assert_array_equal(dense.bias.numpy(), b.astype(np.float32))

    # The variant really exercises the quantity it is there for.
    if activation == "relu":
        assert 0 < expected["dead_fraction"].max() < 1
    elif activation in ("tanh", "sigmoid", "elu", "relu6"):
        assert 0 < expected["saturated_fraction"].max() < 1
    assert expected["grad_norm_max"][0] > expected["grad_norm"][0]  # batches differ: max ≠ mean


def test_output_layer_delta_is_softmax_minus_onehot_over_batch(tiny_data):
    """The output row on its own, with a closed form: δ = (softmax − onehot) / B, the kernel gradient
    a_lastᵀ δ, and softmax probabilities averaging exactly 1/10."""
    eng = make(tiny_data)
    params = params_of(eng)
    x, y = eng.x_train.numpy(), eng.y_train.numpy()
    idx = zero_order(eng, len(x))[:32]
    logits_model = eng.built.logits_model
    logits = logits_model(x[idx]).numpy().astype(np.float64)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    delta = (p - np.eye(10)[y[idx]]) / 32
    hidden = x[idx].reshape(32, -1).astype(np.float64)
    for w, b in params[:-1]:
        hidden = np.maximum(hidden @ w + b, 0.0)
    out = eng.epoch_zero(batches=1).layers[-1]
    assert out["layer"] == "output"
    np.testing.assert_allclose(out["delta_norm"], np.linalg.norm(delta), rtol=RTOL)
    np.testing.assert_allclose(out["grad_norm"], np.linalg.norm(hidden.T @ delta), rtol=RTOL)
    np.testing.assert_allclose(out["act_mean"], 0.1, rtol=1e-5)
    np.testing.assert_allclose(out["act_std"], p.std(), rtol=RTOL)


# ------------------------------------------------------------ one training epoch, replayed

def test_train_epoch_telemetry_and_update_ratio_match_a_replayed_sgd_epoch(tiny_data):
    """200 images, batch 32: six full batches and a partial one of 8. With telemetry.every = 2 the
    measured steps are 0, 2 and 4 (each on the weights before that step's update); the partial batch
    is trained on but not measured. The replay is plain SGD in float64."""
    lr, every = 0.05, 2
    sigmoid = VARIANTS["sigmoid"]
    eng = make(tiny_data, data={"limit": 200}, model=sigmoid["model"],
               telemetry={**sigmoid["telemetry"], "every": every})
    x, y = eng.x_train.numpy(), eng.y_train.numpy()
    assert len(x) == 200
    order = np.random.default_rng(eng.cfg.seed).permutation(len(x))  # row 0 draws from a stream of its own
    eng.epoch_zero(batches=1)

    start = params_of(eng)
    params = [(w.copy(), b.copy()) for w, b in start]
    measured = []
    for step in range((len(x) + 31) // 32):
        idx = order[step * 32:(step + 1) * 32]
        stats, kgrads, bgrads = reference(params, x[idx], y[idx], "sigmoid", threshold_of(eng))
        if step % every == 0 and len(idx) == 32:
            measured.append(stats)
        params = [(w - lr * gw, b - lr * gb) for (w, b), gw, gb in zip(params, kgrads, bgrads, strict=True)]
    assert len(measured) == 3
    expected = mean_over(measured)

    result = eng.train_epoch(1)
    rows = result.layers
    assert float(eng.acc.count.numpy()) == len(measured)
    assert_rows_match(rows, expected)

    end = params_of(eng)
    for (w_eng, b_eng), (w_ref, b_ref) in zip(end, params, strict=True):  # the replay is faithful
        np.testing.assert_allclose(w_eng, w_ref, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(b_eng, b_ref, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(column(rows, "weight_norm"), [np.linalg.norm(w) for w, _ in end], rtol=1e-5)
    ratios = [np.linalg.norm(we - ws) / np.linalg.norm(ws) for (we, _), (ws, _) in zip(end, start, strict=True)]
    np.testing.assert_allclose(column(rows, "update_ratio"), ratios, rtol=1e-4)
    replayed = [np.linalg.norm(wr - ws) / np.linalg.norm(ws) for (wr, _), (ws, _) in zip(params, start, strict=True)]
    np.testing.assert_allclose(column(rows, "update_ratio"), replayed, rtol=2e-3)
    assert all(r > 0 for r in ratios)


# ------------------------------------------------------------ loss scaling undone

def test_mixed_float16_measurements_are_unscaled(tiny_data):
    """Under mixed_float16 the backward pass runs on the loss times the dynamic scale (2**15 at the
    start); grad_norm and delta_norm must be divided back. float16 arithmetic: a loose tolerance, far
    tighter than the factor 32768 a missing unscale would leave."""
    try:
        eng = make(tiny_data, training={"precision": "mixed_float16"})
        params = params_of(eng)
        x, y = eng.x_train.numpy(), eng.y_train.numpy()
        idx = zero_order(eng, len(x))[:32]
        expected = reference(params, x[idx], y[idx], "relu", threshold_of(eng))[0]
        rows = eng.epoch_zero(batches=1).layers
    finally:
        keras.mixed_precision.set_global_policy("float32")
    for key in ("grad_norm", "delta_norm", "act_mean", "act_std"):
        np.testing.assert_allclose(column(rows, key), expected[key], rtol=2e-2, err_msg=key)


@pytest.mark.parametrize("compiled", [False, True])
def test_measurements_of_huge_but_finite_values_stay_finite(compiled):
    """Values of 1e25 are finite in float32 but their squares, and their sum over a few hundred
    entries of 1e36, are not: the norms, means and stds must still come out right, eagerly (probe)
    and under XLA (the training step)."""
    import tensorflow as tf

    from gradexp.telemetry import Saturation, layer_stats

    rng = np.random.default_rng(0)
    z = rng.standard_normal((32, 16)) * 1e25
    a = np.maximum(z, 0.0)
    g = rng.standard_normal((8, 16)) * 1e25
    d = rng.standard_normal((32, 16)) * 1e36
    as32 = [tf.constant(v, tf.float32) for v in (z, a, g, d)]
    def measure(z, a, g, d):
        return layer_stats([z, z], [a, a], [g, g], [d, d], Saturation("none", 0.0))

    stats = (tf.function(measure, jit_compile=True) if compiled else measure)(*as32).numpy()
    assert np.isfinite(stats).all()
    np.testing.assert_allclose(stats[0, 0], np.linalg.norm(g), rtol=1e-4)
    np.testing.assert_allclose(stats[1, 0], np.linalg.norm(d), rtol=1e-4)
    np.testing.assert_allclose(stats[2, 0], a.mean(), rtol=1e-4)
    np.testing.assert_allclose(stats[3, 0], a.std(), rtol=1e-4)


def test_a_norm_beyond_float32_reads_infinite_and_its_layer_is_left_out():
    """The measurements overflow only where the result itself is beyond float32: 1,000 values of 3e38
    have a norm of 9.5e39. The cell reads infinite and the accumulator leaves it out, while the
    mean and std of the same finite values are measured."""
    import tensorflow as tf

    from gradexp.telemetry import Accumulator, Saturation, layer_stats

    big = tf.fill([1000, 1], 3e38)
    small = tf.ones([4, 1])
    stats = layer_stats([small, small], [big, small], [big, small], [small, small], Saturation("none", 0.0))
    assert np.isinf(stats[0, 0].numpy()) and np.isfinite(stats[0, 1].numpy())
    np.testing.assert_allclose([stats[2, 0].numpy(), stats[3, 0].numpy()], [3e38, 0.0], rtol=1e-6, atol=1e-6)
    acc = Accumulator(2)
    acc.add(stats)
    read = acc.read()
    assert np.isnan(read["grad_norm"][0]) and read["grad_norm"][1] == 2.0  # ‖ones(4)‖
