"""The compiled training loop: learning, shuffling, the partial batch, repeatability, exact SGD math,
divergence and the telemetry it records. Tiny IDX data through the real loader."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import engine_for

from gradexp.engine import Engine


def make(tiny_data, seed=1, engine_class=None, **sections):
    return engine_for(tiny_data, {
        "seed": seed, "model": {"activation": "relu", "initializer": "he_normal", "depth": 2, "width": [32, 16]},
        "optimizer": {"name": "sgd", "learning_rate": 0.05}, "training": {"epochs": 3, "batch_size": 32},
        "telemetry": {"every": 4}}, engine_class, **sections)


def test_loss_decreases(tiny_data):
    eng = make(tiny_data)
    losses = [eng.train_epoch(e).loss for e in range(1, 4)]
    assert losses[2] < losses[0]
    assert eng.train_epoch(4).val_accuracy > 0.5  # the toy classes are separable


def test_every_sample_once_per_epoch_including_partial_batch(tiny_data):
    eng = make(tiny_data, training={"batch_size": 64})
    assert eng.n_train == 600 and 600 % 64  # so there is a partial batch of 24
    eng.train_epoch(1)
    assert sorted(eng._current_order.tolist()) == list(range(600))
    assert float(eng.seen.numpy()) == 600.0
    first = eng._current_order.copy()
    eng.train_epoch(2)
    assert not np.array_equal(first, eng._current_order)  # reshuffled every epoch
    assert eng.steps_per_epoch() == 10


def test_partial_batch_alone_is_trained_on(tiny_data):
    # 20 images with batch 32: no full batch at all, so only the partial batch can move the weights.
    eng = make(tiny_data, data={"limit": 20})
    before = [k.numpy().copy() for k in eng.built.kernels]
    eng.train_epoch(1)
    assert float(eng.seen.numpy()) == 20.0
    assert all(not np.allclose(b, k.numpy()) for b, k in zip(before, eng.built.kernels, strict=True))


def test_fixed_seed_repeats_and_other_seed_differs(tiny_data):
    a = [make(tiny_data, seed=7).train_epoch(1).loss for _ in range(2)]
    b = make(tiny_data, seed=8).train_epoch(1).loss
    assert a[0] == a[1]
    assert b != a[0]


def test_row_zero_leaves_the_training_order_alone(tiny_data):
    # Row 0 is measured only with telemetry on; it must not shift the shuffling that training sees.
    plain, measured = make(tiny_data, seed=7), make(tiny_data, seed=7)
    measured.epoch_zero()
    a, b = plain.train_epoch(1), measured.train_epoch(1)
    np.testing.assert_array_equal(plain._current_order, measured._current_order)
    assert a.loss == b.loss
    # and row 0 measured other batches than the epoch's first ones: a stream of its own, not a copy
    zero_order = np.random.default_rng(np.random.SeedSequence(7, spawn_key=(1,))).permutation(measured.n_train)
    assert not np.array_equal(zero_order[:128], measured._current_order[:128])


def test_one_step_is_exact_sgd(tiny_data):
    # One batch of exactly batch_size images: w' = w - lr * dL/dw, with L the mean cross-entropy.
    eng = make(tiny_data, data={"limit": 32}, telemetry={"enabled": False})
    model = eng.built.logits_model
    x, y = eng.x_train, eng.y_train
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=model(x)))
    grads = tape.gradient(loss, model.trainable_variables)
    expected = [v.numpy() - 0.05 * g.numpy() for v, g in zip(model.trainable_variables, grads, strict=True)]
    eng.train_epoch(1)
    for v, e in zip(model.trainable_variables, expected, strict=True):
        np.testing.assert_allclose(v.numpy(), e, rtol=1e-4, atol=1e-6)


def test_divergence_stops_with_finite_weights(tiny_data):
    eng = make(tiny_data, model={"depth": 6, "width": 64, "activation": "relu",
                                 "initializer": {"name": "random_normal", "stddev": 1.0}},
               optimizer={"learning_rate": 10.0})
    result = None
    for epoch in range(1, 4):
        result = eng.train_epoch(epoch)
        if eng.divergence(epoch):
            break
    div = eng.divergence(epoch)
    assert div is not None, "lr=10 on N(0,1) weights must diverge"
    assert div.step >= 1 and div.where in {"activation", "gradient", "loss"}  # not "weights": none were updated
    assert all(np.isfinite(k.numpy()).all() for k in eng.built.kernels)  # the bad update was skipped
    assert math.isnan(result.val_loss)


def test_telemetry_rows(tiny_data):
    eng = make(tiny_data)
    zero = eng.epoch_zero()
    assert [r["layer"] for r in zero.layers] == ["dense_1", "dense_2", "output"]
    assert all(r["epoch"] == 0 and r["update_ratio"] is None for r in zero.layers)
    one = eng.train_epoch(1)
    rows = {r["layer"]: r for r in one.layers}
    assert rows["dense_1"]["update_ratio"] > 0
    assert rows["dense_1"]["grad_norm_max"] >= rows["dense_1"]["grad_norm"] > 0
    assert 0 <= rows["dense_1"]["dead_fraction"] <= 1
    assert rows["output"]["dead_fraction"] is None
    assert float(eng.acc.count.numpy()) == math.ceil(600 / 32 / 4)  # every 4th step measured


class StepMarkingEngine(Engine):
    """The engine, recording which steps of the epoch were telemetry steps."""

    def __init__(self, *args, **kwargs):
        self.marks = tf.Variable(tf.zeros([64]), trainable=False)
        super().__init__(*args, **kwargs)

    def _telemetry_step(self, x, y, step):
        super()._telemetry_step(x, y, step)
        self.marks.scatter_nd_update(tf.reshape(step, [1, 1]), [1.0])


@pytest.mark.parametrize("every", [1, 2, 5, 7, 100])
def test_telemetry_steps_are_the_epochs_multiples_of_every_whatever_the_chunks(tiny_data, every):
    """18 full batches in chunks of at most 3: a telemetry step opens a chunk, the chunks between two
    of them run plain steps only, and the chunks stay small whatever `every` is (progress and Ctrl-C
    are handled between them)."""
    eng = make(tiny_data, engine_class=StepMarkingEngine, telemetry={"every": every})
    bounds = eng._chunk_bounds(600 // 32)
    assert bounds[0][0] == 0 and bounds[-1][1] == 18
    assert all(a[1] == b[0] for a, b in zip(bounds[:-1], bounds[1:], strict=True))  # contiguous
    assert all(1 <= end - start <= 3 for start, end in bounds)  # small, whatever `every` is
    # a chunk holding a telemetry step starts on one (the compiled loop's groups count from its start)
    assert all(start % every == 0 or not any(s % every == 0 for s in range(start, end)) for start, end in bounds)
    eng.train_epoch(1)
    assert float(eng.acc.count.numpy()) == math.ceil((600 // 32) / every)
    assert np.flatnonzero(eng.marks.numpy()).tolist() == list(range(0, 18, every))  # which steps, too


def test_dead_units_are_measured(tiny_data):
    eng = make(tiny_data, model={"bias_initializer": {"name": "constant", "value": -50.0}})
    rows = {r["layer"]: r for r in eng.epoch_zero().layers}
    assert rows["dense_1"]["dead_fraction"] == 1.0
    assert rows["dense_1"]["grad_norm"] == 0.0


def test_saturation_is_measured(tiny_data):
    eng = make(tiny_data, model={"activation": "sigmoid", "initializer": {"name": "random_normal", "stddev": 2.0}})
    rows = {r["layer"]: r for r in eng.epoch_zero().layers}
    assert rows["dense_1"]["saturated_fraction"] > 0.5


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_trains(tiny_data, precision):
    eng = make(tiny_data, training={"precision": precision})
    r = eng.train_epoch(1)
    keras.mixed_precision.set_global_policy("float32")
    assert math.isfinite(r.loss) and r.accuracy > 0.1


def test_telemetry_measures_the_partial_batch_when_it_is_the_only_one(tiny_data):
    eng = make(tiny_data, data={"limit": 20})
    rows = eng.train_epoch(1).layers
    assert all(r["grad_norm"] is not None and r["grad_norm"] > 0 for r in rows)
    assert float(eng.acc.count.numpy()) == 1.0


def test_accumulator_keeps_the_finite_cells_of_a_step():
    """A step whose later layers overflowed still counts for the layers before them; each cell is
    the mean of its own finite values, NaN where it had none."""
    from gradexp.telemetry import STATS, Accumulator

    acc = Accumulator(3)
    first = np.ones((len(STATS), 3), np.float32)
    second = np.full((len(STATS), 3), 3.0, np.float32)
    second[:, 2] = np.inf  # layer 3 overflowed in the second step
    second[0, 1] = np.nan  # and one gradient norm of layer 2
    third = np.full((len(STATS), 3), np.nan, np.float32)
    for stats in (first, second, third):
        acc.add(tf.constant(stats))
    out = acc.read()
    assert float(acc.count.numpy()) == 3
    assert out["act_mean"].tolist() == [2.0, 2.0, 1.0]
    assert out["grad_norm"].tolist() == [2.0, 1.0, 1.0]
    assert out["grad_norm_max"].tolist() == [3.0, 1.0, 1.0]
    acc.reset()
    acc.add(tf.constant(third))
    out = acc.read()
    assert np.isnan(out["delta_norm"]).all() and np.isnan(out["grad_norm_max"]).all()


def test_xla_options_leave_the_users_own_settings(monkeypatch):
    from gradexp import engine

    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_prefer_vector_width=256 --xla_dump_to=/tmp/hlo")
    flags = engine.use_xla_options().split()
    assert flags[:2] == ["--xla_cpu_prefer_vector_width=256", "--xla_dump_to=/tmp/hlo"]  # the user's, first and kept
    assert "--xla_cpu_prefer_vector_width=512" not in flags
    assert {f.split("=", 1)[0] for f in flags[2:]} == {"--xla_cpu_multi_thread_eigen", "--xla_backend_extra_options"}
    assert engine.use_xla_options().split() == flags  # applying twice adds nothing
    monkeypatch.delenv("XLA_FLAGS")
    assert len(engine.use_xla_options().split()) == len(engine.XLA_OPTIONS)
