"""The catalog against the Keras it names: classes, parameter names and defaults, formulas."""

from __future__ import annotations

import inspect
import json
import os
import re

import numpy as np
import pytest
from click.testing import CliRunner

from gradexp import catalog
from gradexp.cli import main

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras")  # once per module: the import takes seconds

FAN_IN, FAN_OUT = 784, 300
DENSE_INITIALIZERS = [i for i in catalog.INITIALIZERS if i.for_dense]
# Catalog parameters that reach Keras under another name (see gradexp.model.make_activation).
SPEC_ACTIVATIONS = ["relu", "leaky_relu", "prelu", "elu", "selu", "gelu", "swish", "sigmoid", "tanh",
                    "softplus", "thresholded_relu"]


def _init_params(cls: type) -> dict[str, inspect.Parameter]:
    params = inspect.signature(cls.__init__).parameters
    return {n: p for n, p in params.items() if n not in ("self", "args", "kwargs")}


def _keras_initializer_classes() -> dict[type, list[str]]:
    base = keras.initializers.Initializer
    found: dict[type, list[str]] = {}
    for name in dir(keras.initializers):
        obj = getattr(keras.initializers, name)
        if name.startswith("_") or not inspect.isclass(obj) or not issubclass(obj, base) or obj is base:
            continue
        found.setdefault(obj, []).append(name)
    return found


# ---------------------------------------------------------------- initializers


def test_every_keras_initializer_class_is_in_the_catalog() -> None:
    classes = _keras_initializer_classes()
    assert len(classes) >= 15  # Zeros … STFT: the discovery itself works
    in_catalog = {getattr(keras.initializers, i.keras_class) for i in catalog.INITIALIZERS}
    missing = {cls.__name__: names for cls, names in classes.items() if cls not in in_catalog}
    assert not missing, f"keras.initializers classes not in the catalog: {missing}"


def test_catalog_names_are_unique() -> None:
    for table in (catalog.INITIALIZERS, catalog.ACTIVATIONS, catalog.OPTIMIZERS):
        names = [e.name for e in table]
        assert len(names) == len(set(names))
    classes = [i.keras_class for i in catalog.INITIALIZERS]
    assert len(classes) == len(set(classes))


@pytest.mark.parametrize("entry", catalog.INITIALIZERS, ids=lambda i: i.name)
def test_initializer_class_and_alias_match_keras(entry: catalog.Initializer) -> None:
    cls = getattr(keras.initializers, entry.keras_class)
    assert cls.__name__ == entry.keras_class  # the canonical name, not an alias
    # the config name is the alias Keras itself resolves
    assert getattr(keras.initializers, entry.name) is cls


@pytest.mark.parametrize("entry", catalog.INITIALIZERS, ids=lambda i: i.name)
def test_initializer_params_exist_with_keras_defaults(entry: catalog.Initializer) -> None:
    keras_params = _init_params(getattr(keras.initializers, entry.keras_class))
    for p in entry.params:
        assert p.name in keras_params, f"{entry.keras_class} has no parameter {p.name}"
        default = keras_params[p.name].default
        if default is not inspect.Parameter.empty:
            assert p.default == default, (entry.name, p.name, p.default, default)
        if p.choices:
            assert default in p.choices


@pytest.mark.parametrize("entry", DENSE_INITIALIZERS, ids=lambda i: i.name)
def test_initializer_fills_a_dense_kernel(entry: catalog.Initializer) -> None:
    cls = getattr(keras.initializers, entry.keras_class)
    kwargs = {p.name: p.default for p in entry.params}
    if "seed" in kwargs:
        kwargs["seed"] = 7
    layer = keras.layers.Dense(FAN_OUT, kernel_initializer=cls(**kwargs))
    layer.build((None, FAN_IN))
    kernel = np.asarray(layer.kernel)
    assert kernel.shape == (FAN_IN, FAN_OUT)
    assert np.isfinite(kernel).all()


def test_variance_scaling_variants_build_with_every_choice() -> None:
    vs = catalog.INITIALIZER_BY_NAME["variance_scaling"]
    params = {p.name: p for p in vs.params}
    for mode in params["mode"].choices:
        for distribution in params["distribution"].choices:
            init = keras.initializers.VarianceScaling(scale=2.0, mode=mode, distribution=distribution, seed=1)
            assert np.asarray(init((FAN_IN, FAN_OUT))).shape == (FAN_IN, FAN_OUT)


def _stated_variance(scale: str) -> float:
    """The variance a catalog scale text states, e.g. 'var = 2 / fan_in' -> 2/784."""
    match = re.findall(r"= (\d+(?:\.\d+)?) / (fan_in|fan_out|fan_avg)\b", scale)
    assert match, f"no 'var = k / fan' in {scale!r}"
    k, fan = match[-1]
    fans = {"fan_in": FAN_IN, "fan_out": FAN_OUT, "fan_avg": (FAN_IN + FAN_OUT) / 2}
    return float(k) / fans[fan]


FAN_SCALED = [i for i in catalog.INITIALIZERS if i.name.split("_")[0] in ("glorot", "he", "lecun")]


@pytest.mark.parametrize("entry", FAN_SCALED, ids=lambda i: i.name)
def test_fan_scaled_formula_matches_the_kernel_keras_draws(entry: catalog.Initializer) -> None:
    kernel = np.asarray(getattr(keras.initializers, entry.keras_class)(seed=3)((FAN_IN, FAN_OUT)))
    expected = _stated_variance(entry.scale)
    assert kernel.var() == pytest.approx(expected, rel=0.03), (entry.name, entry.scale)
    dist = "uniform" if entry.name.endswith("uniform") else "normal"
    assert dist in entry.distribution


def test_fan_scaled_set_is_complete() -> None:
    assert {i.name for i in FAN_SCALED} == {f"{a}_{b}" for a in ("glorot", "he", "lecun")
                                           for b in ("normal", "uniform")}


def test_seed_variance_scaling_formula() -> None:
    # The seed: VarianceScaling(scale=2., mode='fan_avg', distribution='uniform') has var = 2 / fan_avg.
    init = keras.initializers.VarianceScaling(scale=2.0, mode="fan_avg", distribution="uniform", seed=5)
    kernel = np.asarray(init((FAN_IN, FAN_OUT)))
    assert kernel.var() == pytest.approx(2.0 / ((FAN_IN + FAN_OUT) / 2), rel=0.03)
    assert "fan_avg" in catalog.INITIALIZER_BY_NAME["variance_scaling"].scale


def test_not_for_dense_entries_are_the_convolution_ones() -> None:
    others = [i.name for i in catalog.INITIALIZERS if not i.for_dense]
    assert others == ["stft"]
    assert "Conv1D" in catalog.INITIALIZER_BY_NAME["stft"].scale


# ---------------------------------------------------------------- activations


def test_spec_activations_are_present() -> None:
    for name in SPEC_ACTIVATIONS:
        assert name in catalog.ACTIVATION_BY_NAME, name
    for name, param in (("leaky_relu", "negative_slope"), ("elu", "alpha"), ("relu", "threshold"),
                        ("thresholded_relu", "theta")):
        assert param in {p.name for p in catalog.ACTIVATION_BY_NAME[name].params}


@pytest.mark.parametrize("entry", catalog.ACTIVATIONS, ids=lambda a: a.name)
def test_activation_layer_and_params_exist_in_keras(entry: catalog.Activation) -> None:
    layer_cls = getattr(keras.layers, entry.keras_layer)
    if entry.keras_layer == "Activation":
        assert entry.function is not None
        assert callable(keras.activations.get(entry.function))
        assert not entry.params
    else:
        assert entry.function is None
        keras_params = _init_params(layer_cls)
        for key, _ in entry.fixed:
            assert key in keras_params, (entry.name, key)
        for p in entry.params:
            keras_name = p.keras_name or p.name
            assert keras_name in keras_params, (entry.name, p.name, keras_name)
            default = keras_params[keras_name].default
            if keras_name == p.name and default is not inspect.Parameter.empty:
                assert p.default == default, (entry.name, p.name, p.default, default)
    assert entry.suggested_initializer in catalog.INITIALIZER_BY_NAME
    assert catalog.INITIALIZER_BY_NAME[entry.suggested_initializer].for_dense
    assert entry.saturation in ("none", "two-sided", "negative side", "above the cap")


def test_thresholded_relu_is_relu_with_threshold() -> None:
    theta = catalog.ACTIVATION_BY_NAME["thresholded_relu"].params[0].default
    z = np.array([[-2.0, 0.5 * theta, 1.5 * theta, 3.0]], dtype="float32")
    out = np.asarray(keras.layers.ReLU(threshold=theta)(z))
    np.testing.assert_allclose(out, np.where(z > theta, z, 0.0))


def test_swish_is_silu() -> None:
    z = np.linspace(-4, 4, 9).astype("float32")
    entry = catalog.ACTIVATION_BY_NAME["swish"]
    out = np.asarray(keras.activations.get(entry.function)(z))
    np.testing.assert_allclose(out, z / (1 + np.exp(-z)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("entry", [a for a in catalog.ACTIVATIONS if a.saturation == "two-sided"],
                         ids=lambda a: a.name)
def test_two_sided_saturation_is_real(entry: catalog.Activation) -> None:
    f = keras.activations.get(entry.function)
    z = np.array([-50.0, 50.0], dtype="float32")
    slope = np.asarray(f(z + 1e-2) - f(z)) / 1e-2
    assert np.all(np.abs(slope) < 1e-3)


# ---------------------------------------------------------------- optimizers


@pytest.mark.parametrize("entry", catalog.OPTIMIZERS, ids=lambda o: o.name)
def test_optimizer_class_accepts_its_keys(entry: catalog.Optimizer) -> None:
    cls = getattr(keras.optimizers, entry.keras_class)
    keras_params = _init_params(cls)
    for key in (*catalog.optimizer_keys(entry.name)[1:], *entry.fixed):
        assert key in keras_params, (entry.keras_class, key)
    kwargs = {"learning_rate": 0.01, **entry.fixed,
              **{k: catalog.optimizer_default(entry.name, k) for k in entry.keys}}
    opt = cls(**kwargs)
    assert float(np.asarray(opt.learning_rate)) == pytest.approx(0.01)


@pytest.mark.parametrize("entry", catalog.OPTIMIZERS, ids=lambda o: o.name)
def test_optimizer_defaults_match_keras_unless_the_name_implies_otherwise(entry: catalog.Optimizer) -> None:
    keras_params = _init_params(getattr(keras.optimizers, entry.keras_class))
    overrides = catalog.OPTIMIZER_DEFAULT_OVERRIDES.get(entry.name, {})
    for key in entry.keys:
        ours = catalog.optimizer_default(entry.name, key)
        if key in overrides:
            continue
        assert ours == keras_params[key].default, (entry.name, key, ours, keras_params[key].default)
    documented = set(catalog.COMMON_OPTIMIZER_KEYS[1:]) | set(catalog.OPTIMIZER_KEY_DEFAULTS)
    assert set(catalog.OPTIMIZER_KEY_HELP) >= documented


def test_nesterov_and_momentum_are_sgd_with_momentum() -> None:
    assert catalog.optimizer_default("momentum", "momentum") == 0.9
    assert catalog.optimizer_default("nesterov", "momentum") == 0.9
    assert catalog.optimizer_default("sgd", "momentum") == 0.0
    opt = keras.optimizers.SGD(momentum=0.9, **catalog.OPTIMIZER_BY_NAME["nesterov"].fixed)
    assert opt.nesterov is True


# ---------------------------------------------------------------- list commands


def test_list_initializers_json_lists_every_entry_with_its_formula() -> None:
    result = CliRunner().invoke(main, ["list-initializers", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["name"] for r in rows] == [i.name for i in catalog.INITIALIZERS]
    for row, entry in zip(rows, catalog.INITIALIZERS, strict=True):
        assert row["class"] == f"keras.initializers.{entry.keras_class}"
        assert row["scale"] == entry.scale
        assert row["distribution"] == entry.distribution
        assert row["dense"] is entry.for_dense
        assert row["params"] == {p.name: p.default for p in entry.params}
    by_name = {r["name"]: r for r in rows}
    for fan in ("fan_in", "fan_out", "fan_avg"):
        assert fan in by_name["variance_scaling"]["scale"]
    assert "fan_in" in by_name["he_normal"]["scale"]
    assert "fan_avg" in by_name["glorot_uniform"]["scale"]


def test_list_activations_json() -> None:
    result = CliRunner().invoke(main, ["list-activations", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert set(rows) == set(catalog.ACTIVATION_BY_NAME)
    assert rows["sigmoid"]["saturating"] is True
    assert rows["relu"]["saturating"] is False
    assert rows["leaky_relu"]["params"] == {"negative_slope": 0.3}
    assert rows["selu"]["suggested_initializer"] == "lecun_normal"


def test_list_optimizers_json() -> None:
    result = CliRunner().invoke(main, ["list-optimizers", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert set(rows) == set(catalog.OPTIMIZER_BY_NAME)
    assert rows["adam"]["keys"] == {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}
    assert rows["momentum"]["keys"] == {"momentum": 0.9}
    assert "clipnorm" in rows["sgd"]["common_keys"]


def test_exact_flat_regions_do_not_follow_the_saturation_threshold():
    """hard_sigmoid is flat beyond |z| = 3 and relu6 from 6 on, whatever telemetry.saturation_threshold;
    the smooth sigmoid-likes scale with it."""
    from gradexp.telemetry import saturation_for

    for threshold in (2.0, 5.0, 10.0):
        assert saturation_for({"name": "hard_sigmoid"}, threshold).threshold == 3.0
        assert saturation_for({"name": "relu6"}, threshold).threshold == 6.0
        assert saturation_for({"name": "tanh"}, threshold).threshold == threshold / 2
        assert saturation_for({"name": "sigmoid"}, threshold).threshold == threshold
