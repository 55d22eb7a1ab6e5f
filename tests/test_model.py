"""The Keras model built for each kind of config: layers, initializers, batch-norm placement, biases."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from gradexp.config import validate
from gradexp.model import build, make_optimizer


def cfg_for(**model):
    base = {"activation": "relu", "initializer": "he_normal"}
    return validate({"model": {**base, **model}})


def layer_types(built):
    return [type(layer).__name__ for layer in built.model.layers]


def test_seed_net_layout():
    built = build(cfg_for(activation="leaky_relu"))
    assert layer_types(built) == ["InputLayer", "Flatten", "Dense", "LeakyReLU", "Dense", "LeakyReLU", "Dense",
                                  "Activation"]
    dense = [layer for layer in built.model.layers if isinstance(layer, keras.layers.Dense)]
    assert [d.units for d in dense] == [300, 100, 10]
    assert isinstance(dense[0].kernel_initializer, keras.initializers.HeNormal)
    assert built.layer_names == ["dense_1", "dense_2", "output"]
    assert built.model.count_params() == 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10


def test_depth_and_int_width():
    built = build(cfg_for(depth=5, width=16))
    assert layer_types(built).count("Dense") == 6
    assert built.model.output_shape == (None, 10)


@pytest.mark.parametrize("placement,expected", [
    ("before_activation", ["Dense", "BatchNormalization", "ReLU"]),
    ("after_activation", ["Dense", "ReLU", "BatchNormalization"]),
])
def test_batch_norm_placement_and_bias(placement, expected):
    built = build(cfg_for(batch_norm=placement))
    types = layer_types(built)
    assert types[2:5] == expected
    first_dense = built.model.get_layer("dense_1")
    # Before the activation, BN's beta replaces the bias (as in the notebook): Dense(use_bias=False).
    assert first_dense.use_bias is (placement == "after_activation")


def test_variance_scaling_fan_avg_from_yaml_mapping():
    built = build(cfg_for(initializer={"name": "variance_scaling", "scale": 2.0, "mode": "fan_avg",
                                       "distribution": "uniform"}))
    init = built.model.get_layer("dense_1").kernel_initializer
    assert isinstance(init, keras.initializers.VarianceScaling)
    assert (init.scale, init.mode, init.distribution) == (2.0, "fan_avg", "uniform")


def test_bias_initializer_constant():
    built = build(cfg_for(bias_initializer={"name": "constant", "value": -3.0}))
    bias = built.model.get_layer("dense_1").bias.numpy()
    assert (bias == -3.0).all()


@pytest.mark.parametrize("activation,layer_class,attr,value", [
    ({"name": "leaky_relu", "negative_slope": 0.2}, "LeakyReLU", "negative_slope", 0.2),
    ({"name": "elu", "alpha": 0.5}, "ELU", "alpha", 0.5),
    ({"name": "thresholded_relu", "theta": 1.5}, "ReLU", "threshold", 1.5),
    ({"name": "relu", "max_value": 2.5}, "ReLU", "max_value", 2.5),
    ("relu6", "ReLU", "max_value", 6.0),
    ("prelu", "PReLU", None, None),
    ("selu", "Activation", None, None),
])
def test_activation_layers_carry_parameters(activation, layer_class, attr, value):
    built = build(cfg_for(activation=activation))
    layer = built.model.get_layer("act_1")
    assert type(layer).__name__ == layer_class
    if attr:
        assert float(getattr(layer, attr)) == pytest.approx(value)


def test_prelu_starts_at_its_initial_slope():
    built = build(cfg_for(activation={"name": "prelu", "initial_slope": 0.25}))
    assert (built.model.get_layer("act_1").alpha.numpy() == 0.25).all()


def square_kernels(**model_keys):
    return [k.numpy() for k in build(cfg_for(depth=4, width=20, **model_keys)).kernels[1:4]]


def test_layers_of_one_shape_get_different_weights_even_under_an_explicit_initializer_seed():
    for spec in ("glorot_uniform", {"name": "glorot_uniform", "seed": 7}):
        kernels = square_kernels(initializer=spec)
        assert not any(np.array_equal(a, b) for i, a in enumerate(kernels) for b in kernels[i + 1:]), spec


def test_neighbouring_run_seeds_do_not_share_shifted_layers():
    cfg = cfg_for(depth=4, width=20)
    a = [k.numpy() for k in build(cfg).kernels[1:4]]
    b = [k.numpy() for k in build(cfg.model_copy(update={"seed": cfg.seed + 1})).kernels[1:4]]
    assert not any(np.array_equal(x, y) for x in a for y in b)
    assert all(np.array_equal(x, y) for x, y in zip(a, [k.numpy() for k in build(cfg).kernels[1:4]], strict=True))


def test_an_explicit_initializer_seed_is_a_base_that_changes_the_weights():
    assert not np.array_equal(square_kernels(initializer={"name": "glorot_uniform", "seed": 7})[0],
                              square_kernels(initializer={"name": "glorot_uniform", "seed": 8})[0])


def test_dropout_layers():
    built = build(cfg_for(dropout=0.2))
    assert layer_types(built).count("Dropout") == 2


@pytest.mark.parametrize("name,cls", [("sgd", "SGD"), ("momentum", "SGD"), ("nesterov", "SGD"), ("adam", "Adam"),
                                      ("adamw", "AdamW"), ("rmsprop", "RMSprop"), ("nadam", "Nadam")])
def test_optimizers(name, cls):
    cfg = validate({"model": {"activation": "relu", "initializer": "he_normal"},
                    "optimizer": {"name": name, "learning_rate": 0.01, "clipnorm": 1.0}})
    opt = make_optimizer(cfg)
    assert type(opt).__name__ == cls
    assert opt.clipnorm == 1.0
    if name == "nesterov":
        assert opt.nesterov and opt.momentum == pytest.approx(0.9)
