"""Config loading: defaults, width expansion, --set overrides, the seed's forms, the JSON Schema."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from gradexp import catalog
from gradexp.config import MAX_DEPTH, Config, load_config, validate
from gradexp.config_schema import json_schema
from gradexp.errors import ConfigError

MINIMAL = {"model": {"activation": "relu", "initializer": "he_normal"}}
REPO = Path(__file__).resolve().parent.parent


def _write(tmp_path: Path, cfg: dict, name: str = "exp") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _load(tmp_path: Path, cfg: dict, *sets: str, name: str = "exp") -> Config:
    return load_config(_write(tmp_path, cfg, name), list(sets))


# ---------------------------------------------------------------- defaults


def test_minimal_config_gets_every_default(tmp_path: Path) -> None:
    r = _load(tmp_path, MINIMAL).resolved()
    assert r["seed"] == 42
    assert r["data"] == {"dataset": "fashion_mnist", "validation_size": 5000, "scaling": "unit",
                         "dir": None, "limit": None}
    m = r["model"]
    assert m["depth"] == 2
    assert m["width"] == [300, 100]
    assert m["batch_norm"] == "none"
    assert m["dropout"] == 0.0
    assert m["bias_initializer"] == {"name": "zeros"}
    assert r["training"]["epochs"] == 10
    assert r["training"]["batch_size"] == 32
    assert r["training"]["precision"] == "float32"
    assert r["telemetry"]["enabled"] is True


def test_optimizer_section_keeps_only_the_keys_sgd_uses(tmp_path: Path) -> None:
    opt = _load(tmp_path, MINIMAL).resolved()["optimizer"]
    assert opt == {"name": "sgd", "learning_rate": 0.001, "momentum": 0.0,
                   "clipnorm": None, "clipvalue": None, "global_clipnorm": None}
    assert set(opt) == set(catalog.optimizer_keys("sgd"))
    for foreign in ("beta_1", "beta_2", "epsilon", "rho", "weight_decay"):
        assert foreign not in opt


@pytest.mark.parametrize("name", ["adam", "rmsprop", "momentum", "nesterov", "adamw"])
def test_optimizer_defaults_follow_the_catalog(tmp_path: Path, name: str) -> None:
    opt = _load(tmp_path, {**MINIMAL, "optimizer": {"name": name}}).resolved()["optimizer"]
    assert set(opt) == set(catalog.optimizer_keys(name))
    for key in catalog.OPTIMIZER_BY_NAME[name].keys:
        assert opt[key] == catalog.optimizer_default(name, key)
    if name in ("momentum", "nesterov"):
        assert opt["momentum"] == 0.9


def test_activation_name_expands_to_mapping_with_default_params(tmp_path: Path) -> None:
    cfg = _load(tmp_path, {"model": {"activation": "leaky_relu", "initializer": "he_normal"}})
    assert cfg.resolved()["model"]["activation"] == {"name": "leaky_relu", "negative_slope": 0.3}
    assert cfg.model.activation == {"name": "leaky_relu", "negative_slope": 0.3}
    assert cfg.resolved()["model"]["initializer"] == {"name": "he_normal", "seed": None}


@pytest.mark.parametrize("entry", catalog.ACTIVATIONS, ids=lambda a: a.name)
def test_every_activation_expands_with_all_its_params(tmp_path: Path, entry: catalog.Activation) -> None:
    cfg = _load(tmp_path, {"model": {"activation": entry.name, "initializer": "he_normal"}})
    expected = {"name": entry.name, **{p.name: p.default for p in entry.params}}
    assert cfg.model.activation == expected


def test_explicit_activation_params_are_kept(tmp_path: Path) -> None:
    cfg = _load(tmp_path, {"model": {"activation": {"name": "elu", "alpha": 2}, "initializer": "he_normal"}})
    assert cfg.model.activation == {"name": "elu", "alpha": 2.0}
    assert isinstance(cfg.model.activation["alpha"], float)


# ---------------------------------------------------------------- width


def test_width_int_expands_to_depth(tmp_path: Path) -> None:
    cfg = _load(tmp_path, {"model": {**MINIMAL["model"], "depth": 5, "width": 64}})
    assert cfg.model.width == [64] * 5
    assert cfg.widths == [64] * 5
    assert cfg.resolved()["model"]["width"] == [64] * 5


@pytest.mark.parametrize("depth", [1, 3, 20])
def test_default_width_is_100_per_layer_when_depth_is_not_2(tmp_path: Path, depth: int) -> None:
    cfg = _load(tmp_path, {"model": {**MINIMAL["model"], "depth": depth}})
    assert cfg.widths == [100] * depth


def test_width_list_is_kept(tmp_path: Path) -> None:
    cfg = _load(tmp_path, {"model": {**MINIMAL["model"], "depth": 3, "width": [50, 40, 30]}})
    assert cfg.widths == [50, 40, 30]


# ---------------------------------------------------------------- --set


def test_set_overrides_dotted_keys_with_yaml_scalars(tmp_path: Path) -> None:
    cfg = _load(tmp_path, MINIMAL, "optimizer.learning_rate=0.01", "model.depth=20", "training.epochs=3",
                "telemetry.enabled=false", "data.scaling=standardize", "name=other")
    assert cfg.optimizer.learning_rate == 0.01
    assert cfg.model.depth == 20
    assert cfg.widths == [100] * 20
    assert cfg.training.epochs == 3
    assert cfg.telemetry.enabled is False
    assert cfg.data.scaling == "standardize"
    assert cfg.name == "other"


def test_set_value_types_come_from_yaml(tmp_path: Path) -> None:
    cfg = _load(tmp_path, MINIMAL, "optimizer.learning_rate=1e-2", "optimizer.name=adam",
                "optimizer.beta_1=0.8", "data.dir=null")
    assert cfg.optimizer.learning_rate == pytest.approx(0.01)
    assert cfg.optimizer.beta_1 == 0.8
    assert cfg.data.dir is None


def test_exponent_floats_are_numbers_in_set_and_in_files(tmp_path: Path) -> None:
    cfg = _load(tmp_path, MINIMAL, "optimizer.learning_rate=1e-3")
    assert cfg.optimizer.learning_rate == pytest.approx(0.001)
    path = tmp_path / "exp.yaml"
    path.write_text("model: {activation: relu, initializer: he_normal}\n"
                    "optimizer: {name: adam, learning_rate: 3e-4, epsilon: 1E-8}\n")
    cfg = load_config(path)
    assert cfg.optimizer.learning_rate == pytest.approx(3e-4)
    assert cfg.optimizer.epsilon == pytest.approx(1e-8)


def test_set_list_value(tmp_path: Path) -> None:
    cfg = _load(tmp_path, MINIMAL, "model.depth=3", "model.width=[30, 20, 10]")
    assert cfg.widths == [30, 20, 10]


def test_set_mapping_value(tmp_path: Path) -> None:
    cfg = _load(tmp_path, MINIMAL, "model.initializer={name: constant, value: -3}")
    assert cfg.model.initializer == {"name": "constant", "value": -3.0}


def test_set_later_wins(tmp_path: Path) -> None:
    cfg = _load(tmp_path, MINIMAL, "training.epochs=3", "training.epochs=4")
    assert cfg.training.epochs == 4


def test_set_widens_a_name_to_a_mapping(tmp_path: Path) -> None:
    cfg = _load(tmp_path, {"model": {"activation": "leaky_relu", "initializer": "he_normal"}},
                "model.activation.negative_slope=0.2")
    assert cfg.model.activation == {"name": "leaky_relu", "negative_slope": 0.2}


def test_set_widens_initializer_name(tmp_path: Path) -> None:
    cfg = _load(tmp_path, {"model": {"activation": "relu", "initializer": "variance_scaling"}},
                "model.initializer.mode=fan_avg", "model.initializer.scale=2")
    assert cfg.model.initializer == {"name": "variance_scaling", "scale": 2.0, "mode": "fan_avg",
                                     "distribution": "truncated_normal", "seed": None}


def test_set_changes_name_inside_mapping(tmp_path: Path) -> None:
    cfg = _load(tmp_path, MINIMAL, "model.activation=leaky_relu", "model.activation.negative_slope=0.1")
    assert cfg.model.activation == {"name": "leaky_relu", "negative_slope": 0.1}


def test_set_creates_missing_sections(tmp_path: Path) -> None:
    path = _write(tmp_path, {})
    cfg = load_config(path, ["model.activation=tanh", "model.initializer=glorot_uniform"])
    assert cfg.model.activation == {"name": "tanh"}
    assert cfg.model.initializer["name"] == "glorot_uniform"


def test_set_does_not_touch_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL)
    before = path.read_text()
    load_config(path, ["model.depth=4"])
    assert path.read_text() == before
    assert load_config(path).model.depth == 2


# ---------------------------------------------------------------- the seed's forms and the shipped configs


def test_seed_variance_scaling_as_a_mapping(tmp_path: Path) -> None:
    init = {"name": "variance_scaling", "scale": 2.0, "mode": "fan_avg", "distribution": "uniform"}
    cfg = _load(tmp_path, {"model": {"activation": "relu", "initializer": init}})
    assert cfg.model.initializer == {**init, "seed": None}


def test_constant_bias_initializer(tmp_path: Path) -> None:
    bias = {"name": "constant", "value": -3.0}
    cfg = _load(tmp_path, {"model": {**MINIMAL["model"], "bias_initializer": bias}})
    assert cfg.model.bias_initializer == {"name": "constant", "value": -3.0}


def test_thresholded_relu_takes_theta(tmp_path: Path) -> None:
    cfg = _load(tmp_path, {"model": {"activation": {"name": "thresholded_relu", "theta": 0.5},
                                     "initializer": "he_normal"}})
    assert cfg.model.activation == {"name": "thresholded_relu", "theta": 0.5}


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_configs_load(path: Path) -> None:
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    assert cfg.resolved()["model"]["activation"]["name"] in catalog.ACTIVATION_BY_NAME


# ---------------------------------------------------------------- name


def test_name_defaults_to_file_stem(tmp_path: Path) -> None:
    assert _load(tmp_path, MINIMAL, name="relu_he_deep").name == "relu_he_deep"
    assert _load(tmp_path, MINIMAL, name="relu_he_deep").resolved()["name"] == "relu_he_deep"


@pytest.mark.parametrize("sets", [[], ["name=null"], ["name="]])
def test_null_name_means_the_file_stem(tmp_path: Path, sets: list[str]) -> None:
    path = tmp_path / "stem_here.yaml"
    path.write_text("name: null\nmodel: {activation: relu, initializer: he_normal}\n")
    cfg = load_config(path, sets)
    assert cfg.name == "stem_here"
    assert cfg.resolved()["name"] == "stem_here"


def test_name_from_file_wins_over_stem(tmp_path: Path) -> None:
    assert _load(tmp_path, {"name": "given", **MINIMAL}, name="stem").name == "given"


def test_odd_file_stem_becomes_a_valid_name(tmp_path: Path) -> None:
    cfg = _load(tmp_path, MINIMAL, name="my run (v2)")
    assert cfg.name == "my_run__v2_"
    assert _load(tmp_path, MINIMAL, name="läufer").name == "l_ufer"  # ASCII only, as the name rule says


# ---------------------------------------------------------------- resolved


def test_resolved_is_yaml_and_validates_back(tmp_path: Path) -> None:
    cfg = _load(tmp_path, {**MINIMAL, "optimizer": {"name": "adam", "clipnorm": 1.0}})
    resolved = cfg.resolved()
    text = yaml.safe_dump(resolved)
    again = validate(yaml.safe_load(text))
    assert again.resolved() == resolved


# ---------------------------------------------------------------- schema


def test_json_schema_is_json_and_lists_catalog_names() -> None:
    schema = json.loads(json.dumps(json_schema()))
    assert schema["title"] == "gradexp config"
    assert schema["type"] == "object"
    assert set(schema["properties"]) == {"name", "seed", "data", "model", "optimizer", "training",
                                         "telemetry"}
    assert "model" in schema["required"]
    model = schema["$defs"]["ModelConfig"]
    assert {"activation", "initializer"} <= set(model["required"])

    act = model["properties"]["activation"]
    names = act["anyOf"][0]
    assert names["type"] == "string"
    assert set(names["enum"]) == {a.name for a in catalog.ACTIVATIONS}
    variants = {v["properties"]["name"]["const"] for v in act["anyOf"][1:]}
    assert variants == {a.name for a in catalog.ACTIVATIONS}

    init = model["properties"]["initializer"]["anyOf"]
    dense = {i.name for i in catalog.INITIALIZERS if i.for_dense}
    assert set(init[0]["enum"]) == dense
    assert "stft" not in init[0]["enum"]
    vs = next(v for v in init[1:] if v["properties"]["name"]["const"] == "variance_scaling")
    assert vs["properties"]["mode"]["enum"] == ["fan_in", "fan_out", "fan_avg"]
    assert vs["additionalProperties"] is False

    opt_name = schema["$defs"]["OptimizerConfig"]["properties"]["name"]
    assert opt_name["enum"] == [o.name for o in catalog.OPTIMIZERS]


def _walk_refs(node: object, out: list[str]) -> None:
    if isinstance(node, dict):
        if "$ref" in node:
            out.append(node["$ref"])
        for v in node.values():
            _walk_refs(v, out)
    elif isinstance(node, list):
        for v in node:
            _walk_refs(v, out)


def test_json_schema_refs_resolve() -> None:
    schema = json_schema()
    refs: list[str] = []
    _walk_refs(schema, refs)
    assert refs
    for ref in refs:
        assert ref.startswith("#/$defs/")
        assert ref.split("/")[-1] in schema["$defs"]


@pytest.mark.skipif(importlib.util.find_spec("jsonschema") is None, reason="jsonschema is not installed")
def test_json_schema_is_valid_draft_and_accepts_shipped_configs() -> None:
    import jsonschema

    schema = json_schema()
    validator_cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    validator_cls.check_schema(schema)
    validator = validator_cls(schema)
    for path in sorted((REPO / "configs").glob("*.yaml")):
        validator.validate(yaml.safe_load(path.read_text()))
    assert not validator.is_valid({"model": {"activation": "leaky_rellu", "initializer": "he_normal"}})


def _model(**extra: object) -> dict:
    return {"model": {**MINIMAL["model"], **extra}}


# Configs the validator refuses; the schema must refuse each as well.
REFUSED = {
    "depth-over-max": _model(depth=MAX_DEPTH + 1, width=1),
    "every-over-max": {**MINIMAL, "telemetry": {"every": 60_001}},
    "every-zero": {**MINIMAL, "telemetry": {"every": 0}},
    "elu-alpha-zero": _model(activation={"name": "elu", "alpha": 0}),
    "negative-slope": _model(activation={"name": "leaky_relu", "negative_slope": -0.1}),
    "relu-cap-zero": _model(activation={"name": "relu", "max_value": 0}),
    "threshold-negative": _model(activation={"name": "thresholded_relu", "theta": -1}),
    "stddev-zero": _model(initializer={"name": "random_normal", "stddev": 0}),
    "seed-float": _model(initializer={"name": "he_normal", "seed": 1.5}),
    "seed-string": _model(initializer={"name": "he_normal", "seed": "1"}),
    "seed-huge": _model(initializer={"name": "he_normal", "seed": 2**60}),
    "param-of-another": _model(activation={"name": "relu", "alpha": 1.0}),
    "width-empty-list": _model(width=[]),
    "beta-on-sgd": {**MINIMAL, "optimizer": {"name": "sgd", "beta_1": 0.9}},
    "beta-on-default": {**MINIMAL, "optimizer": {"beta_1": 0.9}},
    "momentum-on-adam": {**MINIMAL, "optimizer": {"name": "adam", "momentum": 0.5}},
    "weight-decay-on-adam": {**MINIMAL, "optimizer": {"name": "adam", "weight_decay": 0.01}},
    "rho-on-nesterov": {**MINIMAL, "optimizer": {"name": "nesterov", "rho": 0.9}},
    "two-clips": {**MINIMAL, "optimizer": {"clipnorm": 1.0, "clipvalue": 1.0}},
    "clip-and-global": {**MINIMAL, "optimizer": {"name": "adam", "clipvalue": 1.0, "global_clipnorm": 2.0}},
    "momentum-one": {**MINIMAL, "optimizer": {"name": "momentum", "momentum": 1.0}},
    "constant-over-float32": _model(initializer={"name": "constant", "value": 1e39}),
    "clipnorm-over-float32": {**MINIMAL, "optimizer": {"clipnorm": 1e39}},
    "learning-rate-over-float32": {**MINIMAL, "optimizer": {"learning_rate": 1e39}},
}
# Configs the validator accepts; the schema must accept them too.
ACCEPTED = {
    "null-sections": {**MINIMAL, "data": None, "optimizer": None, "training": None, "telemetry": None},
    "null-name": {**MINIMAL, "name": None},
    "momentum-on-default-sgd": {**MINIMAL, "optimizer": {"momentum": 0.5}},
    "null-foreign-key": {**MINIMAL, "optimizer": {"name": "sgd", "beta_1": None}},
    "adamw": {**MINIMAL, "optimizer": {"name": "adamw", "weight_decay": 0.01, "beta_1": 0.8, "epsilon": 1e-8}},
    "rmsprop": {**MINIMAL, "optimizer": {"name": "rmsprop", "rho": 0.8, "momentum": 0.1}},
    "one-clip-others-null": {**MINIMAL, "optimizer": {"clipnorm": 1.0, "clipvalue": None, "global_clipnorm": None}},
    "seed-int": _model(initializer={"name": "he_normal", "seed": 7}),
    "relu-params": _model(activation={"name": "relu", "max_value": 6, "threshold": 0.5}),
    "depth-max": _model(depth=MAX_DEPTH, width=1),
    "every-max": {**MINIMAL, "telemetry": {"every": 60_000}},
}


def _schema_validator() -> Any:
    import jsonschema

    schema = json_schema()
    return jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)(schema)


@pytest.mark.skipif(importlib.util.find_spec("jsonschema") is None, reason="jsonschema is not installed")
@pytest.mark.parametrize("case", REFUSED)
def test_json_schema_refuses_what_the_validator_refuses(case: str) -> None:
    doc = REFUSED[case]
    with pytest.raises(ConfigError):
        validate(copy.deepcopy(doc))
    assert not _schema_validator().is_valid(doc)


@pytest.mark.skipif(importlib.util.find_spec("jsonschema") is None, reason="jsonschema is not installed")
@pytest.mark.parametrize("case", ACCEPTED)
def test_json_schema_accepts_what_the_validator_accepts(case: str) -> None:
    doc = ACCEPTED[case]
    validate(copy.deepcopy(doc))
    errors = [e.message for e in _schema_validator().iter_errors(doc)]
    assert not errors


def test_json_schema_carries_bounds_and_integer_params() -> None:
    defs = json_schema()["$defs"]
    assert defs["ModelConfig"]["properties"]["depth"]["maximum"] == MAX_DEPTH
    assert defs["TelemetryConfig"]["properties"]["every"]["maximum"] == 60_000
    inits = defs["ModelConfig"]["properties"]["initializer"]["anyOf"][1:]
    he = next(v for v in inits if v["properties"]["name"]["const"] == "he_normal")
    assert he["properties"]["seed"]["type"] == ["integer", "null"]
    uniform = next(v for v in inits if v["properties"]["name"]["const"] == "random_uniform")
    assert "minval must be less than maxval" in uniform["description"]


def test_json_schema_states_the_defaults_that_depend_on_the_optimizer() -> None:
    props = json_schema()["$defs"]["OptimizerConfig"]["properties"]
    assert props["momentum"]["description"].endswith("; default 0.0 (0.9 for momentum, nesterov)")
    for name in ("sgd", "momentum"):  # what the text says is what a config resolves to
        cfg = validate({"model": {"activation": "relu", "initializer": "he_normal"}, "optimizer": {"name": name}})
        assert cfg.optimizer.momentum == (0.0 if name == "sgd" else 0.9)
