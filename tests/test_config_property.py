"""Whatever YAML and --set items a user writes, loading ends in a Config or one ConfigError."""

from __future__ import annotations

import copy
import importlib.util
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gradexp import catalog
from gradexp.config import (
    Config,
    DataConfig,
    ModelConfig,
    OptimizerConfig,
    TelemetryConfig,
    TrainingConfig,
    load_config,
    validate,
)
from gradexp.config_file import parse_yaml
from gradexp.config_schema import json_schema
from gradexp.errors import ConfigError

SECTIONS = {"data": DataConfig, "model": ModelConfig, "optimizer": OptimizerConfig,
            "training": TrainingConfig, "telemetry": TelemetryConfig}
FIELD_NAMES = sorted(
    set(Config.model_fields)
    | {name for section in SECTIONS.values() for name in section.model_fields}
    | {p.name for table in (catalog.INITIALIZERS, catalog.ACTIVATIONS)
       for entry in table for p in entry.params}
)
NAMES = sorted(
    {a.name for a in catalog.ACTIVATIONS} | {i.name for i in catalog.INITIALIZERS}
    | set(catalog.OPTIMIZER_BY_NAME)
    | {"none", "before_activation", "after_activation", "unit", "standardize", "fashion_mnist", "float32",
       "mixed_float16", "fan_in", "fan_out", "fan_avg", "uniform", "truncated_normal"}
)

# YAML scalars of every kind, biased toward numbers that fit the config's ranges.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 400),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(0, 1),
    st.sampled_from(NAMES),
    st.text(max_size=12),
)
keys = st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=10), st.integers(-3, 3), st.booleans())


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=6))


values = st.recursive(scalars, _containers, max_leaves=25)


def _floats(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


NAME_RE = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}"
# Values a user would plausibly write for each key; the generators below mix them with noise.
PLAUSIBLE: dict[tuple[str, str], st.SearchStrategy[Any]] = {
    ("", "name"): st.from_regex(NAME_RE, fullmatch=True),
    ("", "seed"): st.integers(0, 2**31 - 1),
    ("data", "dataset"): st.just("fashion_mnist"),
    ("data", "validation_size"): st.integers(1, 59_999),
    ("data", "scaling"): st.sampled_from(["unit", "standardize"]),
    ("data", "dir"): st.one_of(st.none(), st.text(max_size=10)),
    ("data", "limit"): st.one_of(st.none(), st.integers(1, 10**6)),
    ("model", "depth"): st.integers(1, 8),
    ("model", "width"): st.one_of(st.none(), st.integers(1, 300),
                                  st.lists(st.integers(1, 300), min_size=1, max_size=8)),
    ("model", "batch_norm"): st.sampled_from(["none", "before_activation", "after_activation"]),
    ("model", "dropout"): _floats(0, 0.99),
    ("optimizer", "name"): st.sampled_from(list(catalog.OPTIMIZER_BY_NAME)),
    ("optimizer", "learning_rate"): _floats(1e-6, 1),
    ("optimizer", "momentum"): _floats(0, 0.99),
    ("optimizer", "beta_1"): _floats(0, 0.99),
    ("optimizer", "beta_2"): _floats(0, 0.999),
    ("optimizer", "epsilon"): _floats(1e-10, 1e-3),
    ("optimizer", "rho"): _floats(0, 0.99),
    ("optimizer", "weight_decay"): _floats(0, 0.1),
    ("optimizer", "clipnorm"): st.one_of(st.none(), _floats(0.01, 10)),
    ("optimizer", "clipvalue"): st.one_of(st.none(), _floats(0.01, 10)),
    ("optimizer", "global_clipnorm"): st.one_of(st.none(), _floats(0.01, 10)),
    ("training", "epochs"): st.integers(1, 50),
    ("training", "batch_size"): st.integers(1, 512),
    ("training", "precision"): st.sampled_from(["float32", "mixed_float16", "mixed_bfloat16"]),
    ("training", "memory_limit_gb"): _floats(0.5, 64),
    ("telemetry", "enabled"): st.booleans(),
    ("telemetry", "every"): st.integers(1, 16),
    ("telemetry", "vanishing_ratio"): _floats(1e-9, 1),
    ("telemetry", "exploding_ratio"): _floats(1, 1e9),
    ("telemetry", "dead_fraction"): _floats(0.01, 1),
    ("telemetry", "saturation_threshold"): _floats(0.1, 10),
    ("telemetry", "saturated_fraction"): _floats(0.01, 1),
}
DENSE_INITIALIZERS = tuple(i for i in catalog.INITIALIZERS if i.for_dense)


def _rarely(draw: st.DrawFn, odds: int) -> bool:
    """True about one time in `odds` (a middle value: hypothesis favours the ends of a range)."""
    return draw(st.integers(0, odds - 1)) == odds // 2


def _noisy(good: st.SearchStrategy[Any], odds: int = 12) -> st.SearchStrategy[Any]:
    """Mostly `good`; about one time in `odds` anything at all."""
    return st.integers(0, odds - 1).flatmap(lambda n: values if n == odds // 2 else good)


def _param_value(p: catalog.Param) -> st.SearchStrategy[Any]:
    if p.choices:
        return st.sampled_from(p.choices)
    if p.name == "seed":
        return st.one_of(st.none(), st.integers(0, 10**6))
    lo = 0.01 if p.positive else (p.minimum if p.minimum is not None else -3.0)
    good = _floats(lo, 5.0)
    return st.one_of(st.none(), good) if p.nullable else good


@st.composite
def spec_values(draw: st.DrawFn, table: tuple[Any, ...], noise: bool = True) -> Any:
    """A catalog name, or a mapping with its name and some of its parameters (now and then a wrong one)."""
    entry = draw(st.sampled_from(table))
    if draw(st.booleans()):
        return entry.name
    out: dict[Any, Any] = {"name": entry.name}
    for p in entry.params:
        if draw(st.booleans()):
            out[p.name] = draw(_noisy(_param_value(p)) if noise else _param_value(p))
    if noise and _rarely(draw, 12):
        out[draw(keys)] = draw(scalars)
    return out


@st.composite
def config_like(draw: st.DrawFn) -> Any:
    """Mostly mappings shaped like a config, with random holes, extra keys and wrong values."""
    if _rarely(draw, 20):
        return draw(values)  # anything at all
    doc: dict[Any, Any] = {}
    for field in ("name", "seed"):
        if draw(st.booleans()):
            doc[field] = draw(_noisy(PLAUSIBLE[("", field)]))
    model: dict[Any, Any] = {}
    if not _rarely(draw, 20):
        model["activation"] = draw(_noisy(spec_values(catalog.ACTIVATIONS)))
    if not _rarely(draw, 20):
        model["initializer"] = draw(_noisy(spec_values(catalog.INITIALIZERS)))
    if _rarely(draw, 4):
        model["bias_initializer"] = draw(_noisy(spec_values(DENSE_INITIALIZERS)))
    for name in ("depth", "width", "batch_norm", "dropout"):
        if _rarely(draw, 3):
            model[name] = draw(_noisy(PLAUSIBLE[("model", name)]))
    doc["model"] = draw(values) if _rarely(draw, 20) else model
    for section, cls in SECTIONS.items():
        if section == "model" or draw(st.booleans()):
            continue
        part: dict[Any, Any] = {}
        for name in draw(st.lists(st.sampled_from(sorted(cls.model_fields)), max_size=3, unique=True)):
            part[name] = draw(_noisy(PLAUSIBLE[(section, name)]))
        doc[section] = draw(values) if _rarely(draw, 20) else part
    if _rarely(draw, 8):
        doc[draw(keys)] = draw(values)
    return doc


def _yaml_value(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, allow_unicode=True).removesuffix("\n...\n").strip()


REAL_KEYS = sorted(f"{s}.{f}".lstrip(".") for s, f in PLAUSIBLE)
SPEC_PARAM_KEYS = sorted({f"model.{k}.{p.name}" for k, table in (("activation", catalog.ACTIVATIONS),
                                                                 ("initializer", catalog.INITIALIZERS),
                                                                 ("bias_initializer", catalog.INITIALIZERS))
                          for e in table for p in e.params})
dotted_keys = st.one_of(
    st.sampled_from(REAL_KEYS + SPEC_PARAM_KEYS),
    st.lists(st.one_of(st.sampled_from(FIELD_NAMES + list(SECTIONS)), st.text(max_size=6)),
             min_size=1, max_size=4).map(".".join),
)
set_values = st.one_of(
    scalars.map(_yaml_value),
    st.sampled_from(["[1,", "{a: 1", "[]", "{}", "~", "'x", ".inf", "1e-3", "0x1F", "!!python/name:os.system",
                     "[1, 2, 3]", "{name: elu, alpha: 2}", "- a", "a: b", "[" * 300]),
    st.text(max_size=12),
)
plausible_set = st.sampled_from(sorted(PLAUSIBLE)).flatmap(
    lambda k: PLAUSIBLE[k].map(lambda v: f"{'.'.join(k).lstrip('.')}={_yaml_value(v)}"))
any_set = st.builds(lambda k, v: f"{k}={v}", dotted_keys, set_values)
overrides = st.lists(
    st.integers(0, 9).flatmap(
        lambda n: st.text(max_size=20) if n == 5 else any_set if n in (3, 4) else plausible_set),
    max_size=3,
)


def _load(doc: Any, sets: list[str]) -> Config | ConfigError:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "prop.yaml"
        path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
        try:
            return load_config(path, sets)
        except ConfigError as exc:
            return exc


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=config_like(), sets=overrides)
def test_any_yaml_and_set_items_give_config_or_config_error(doc: Any, sets: list[str]) -> None:
    outcome = _load(doc, sets)  # any other exception fails the test
    if isinstance(outcome, ConfigError):
        message = str(outcome)
        assert message.strip()
        assert "\n" not in message, message
        assert message.isprintable(), message  # one line the terminal can show as is
        message.encode("utf-8")
        assert "Traceback" not in message
    else:
        assert isinstance(outcome, Config)
        assert len(outcome.widths) == outcome.model.depth


@st.composite
def valid_docs(draw: st.DrawFn) -> dict[str, Any]:
    """Configs built from valid pieces only (the size estimate may still refuse a few)."""
    depth = draw(st.integers(1, 6))
    model: dict[str, Any] = {
        "activation": draw(spec_values(catalog.ACTIVATIONS, noise=False)),
        "initializer": draw(spec_values(DENSE_INITIALIZERS, noise=False)),
        "depth": depth,
    }
    width = draw(st.one_of(st.none(), st.integers(1, 512), st.lists(st.integers(1, 512), min_size=depth,
                                                                     max_size=depth)))
    if width is not None:
        model["width"] = width
    if draw(st.booleans()):
        model["bias_initializer"] = draw(spec_values(DENSE_INITIALIZERS, noise=False))
    model["batch_norm"] = draw(st.sampled_from(["none", "before_activation", "after_activation"]))
    model["dropout"] = draw(st.floats(0, 0.9))
    name = draw(st.sampled_from(list(catalog.OPTIMIZER_BY_NAME)))
    optimizer: dict[str, Any] = {"name": name, "learning_rate": draw(st.floats(1e-6, 10))}
    for key in catalog.OPTIMIZER_BY_NAME[name].keys:
        if draw(st.booleans()):
            optimizer[key] = draw(st.floats(0, 0.99))
    clip = draw(st.sampled_from([None, "clipnorm", "clipvalue", "global_clipnorm"]))
    if clip:
        optimizer[clip] = draw(st.floats(0.01, 100))
    return {
        "name": draw(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True)),
        "seed": draw(st.integers(0, 2**31 - 1)),
        "data": {"validation_size": draw(st.integers(1, 59_999)),
                 "scaling": draw(st.sampled_from(["unit", "standardize"])),
                 "limit": draw(st.one_of(st.none(), st.integers(1, 10**6)))},
        "model": model,
        "optimizer": optimizer,
        "training": {"epochs": draw(st.integers(1, 100)), "batch_size": draw(st.integers(1, 4096)),
                     "precision": draw(st.sampled_from(["float32", "mixed_float16", "mixed_bfloat16"]))},
        "telemetry": {"enabled": draw(st.booleans()), "every": draw(st.integers(1, 64)),
                      "vanishing_ratio": draw(st.floats(1e-9, 1)),
                      "exploding_ratio": draw(st.floats(1, 1e9))},
    }


@settings(max_examples=200, deadline=None)
@given(doc=valid_docs())
def test_resolved_round_trips(doc: dict[str, Any]) -> None:
    try:
        cfg = validate(doc)
    except ConfigError as exc:
        # Valid pieces can only fail on parameters hypothesis picked at random or the size estimate.
        assume(False)
        raise AssertionError from exc  # pragma: no cover
    resolved = cfg.resolved()
    assert validate(resolved).resolved() == resolved
    # and through the YAML text config.yaml holds, read as gradexp reads a config (no aliases, no duplicates)
    again = validate(parse_yaml(yaml.safe_dump(resolved), "config.yaml"))
    assert again.resolved() == resolved


@pytest.mark.skipif(importlib.util.find_spec("jsonschema") is None, reason="jsonschema is not installed")
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(doc=st.one_of(valid_docs(), config_like()))
def test_schema_accepts_every_config_the_validator_accepts(doc: Any) -> None:
    """The schema is never stricter than the validator (it may be looser only where JSON Schema cannot
    compare two values or estimate sizes)."""
    import jsonschema

    try:
        validate(copy.deepcopy(doc))
    except ConfigError:
        assume(False)
    errors = [e.message for e in jsonschema.Draft202012Validator(SCHEMA).iter_errors(doc)]
    assert not errors, errors


SCHEMA = json_schema()
