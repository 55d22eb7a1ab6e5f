"""`gradexp schema`: the config file's JSON Schema, built from config.py's models and the catalog.

It carries the validator's rules: bounds, names, parameter types and ranges, and the optimizer's
cross-key rules as if/then and not. JSON Schema cannot compare two values, so the orderings
(random_uniform minval < maxval, relu threshold < max_value, telemetry.vanishing_ratio <
exploding_ratio), a width list's length and the size estimate are left to the validator (the first
are stated in the descriptions).
"""

from __future__ import annotations

from typing import Any

from . import catalog
from .config import (
    CLIP_KEYS,
    FLOAT32_MAX,
    MAX_DEPTH,
    MAX_PARAM_INT,
    NULLABLE_SECTIONS,
    OPTIMIZER_NUMBERS,
    Config,
    OptimizerConfig,
)


def _param_schema(p: catalog.Param) -> dict[str, Any]:
    """One catalog parameter: the type, choices and bounds `_check_param` enforces."""
    types = p.type if isinstance(p.type, tuple) else (p.type,)
    names = {"string" if t is str else "number" if t is float else "integer" for t in types}
    if "number" in names:
        names.discard("integer")
    js = sorted(names) + (["null"] if p.nullable else [])
    prop: dict[str, Any] = {"type": js if len(js) > 1 else js[0], "description": p.help}
    if p.default is not None:
        prop["default"] = p.default
    if p.choices:
        prop["enum"] = list(p.choices)
    if p.positive:
        prop["exclusiveMinimum"] = 0
    if p.minimum is not None:
        prop["minimum"] = p.minimum
    if names == {"integer"}:
        prop.setdefault("minimum", -MAX_PARAM_INT)
        prop["maximum"] = MAX_PARAM_INT
    if "number" in names:  # it becomes a float32 (the validator also refuses magnitudes below 1.2e-38)
        if "minimum" not in prop and "exclusiveMinimum" not in prop:
            prop["minimum"] = -FLOAT32_MAX
        prop["maximum"] = FLOAT32_MAX
    return prop


def _spec_schema(table: dict[str, Any]) -> dict[str, Any]:
    """A name, or a mapping with `name` and that entry's parameters only."""
    variants = []
    for name, entry in table.items():
        props: dict[str, Any] = {"name": {"const": name}}
        props.update({p.name: _param_schema(p) for p in entry.params})
        variant = {"type": "object", "properties": props, "required": ["name"], "additionalProperties": False}
        if entry.ordered:
            variant["description"] = "; ".join(f"{a} must be less than {b}" for a, b in entry.ordered)
        variants.append(variant)
    return {"anyOf": [{"type": "string", "enum": list(table)}, *variants]}


def _optimizer_rules() -> list[dict[str, Any]]:
    """Keys an optimizer does not use must be absent or null; at most one of the clip keys is set."""
    default = OptimizerConfig.model_fields["name"].default
    rules: list[dict[str, Any]] = []
    for opt in catalog.OPTIMIZERS:
        when: dict[str, Any] = {"properties": {"name": {"const": opt.name}}}
        if opt.name != default:
            when["required"] = ["name"]  # an absent name is the default optimizer
        foreign = [k for k in catalog.OPTIMIZER_KEY_DEFAULTS if k not in opt.keys]
        rules.append({"if": when, "then": {"properties": {k: {"type": "null"} for k in foreign}}})
    for i, a in enumerate(CLIP_KEYS):
        for b in CLIP_KEYS[i + 1:]:
            both = {"required": [a, b], "properties": {a: {"type": "number"}, b: {"type": "number"}}}
            rules.append({"not": both})
    return rules


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the config file, with catalog names as enums for editors."""
    schema = Config.model_json_schema()
    schema["title"] = "gradexp config"
    for section in NULLABLE_SECTIONS:  # `optimizer:` with nothing under it means the defaults
        schema["properties"][section] = {"anyOf": [schema["properties"][section], {"type": "null"}]}
    model = schema["$defs"]["ModelConfig"]["properties"]
    dense_inits = {n: e for n, e in catalog.INITIALIZER_BY_NAME.items() if e.for_dense}
    for key, table in (("activation", catalog.ACTIVATION_BY_NAME), ("initializer", dense_inits),
                       ("bias_initializer", dense_inits)):
        desc = model[key].get("description", "")
        model[key] = {**_spec_schema(table), "description": desc}
    model["width"]["anyOf"] = [
        {"type": "integer", "minimum": 1},
        {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 1, "maxItems": MAX_DEPTH},
        {"type": "null"}]
    optimizer = schema["$defs"]["OptimizerConfig"]
    optimizer["properties"]["name"]["enum"] = list(catalog.OPTIMIZER_BY_NAME)
    for key in OPTIMIZER_NUMBERS:
        for variant in optimizer["properties"][key].get("anyOf", [optimizer["properties"][key]]):
            if variant.get("type") == "number":
                variant["maximum"] = FLOAT32_MAX
    optimizer["allOf"] = _optimizer_rules()
    for key, text in catalog.OPTIMIZER_KEY_HELP.items():
        users = [o.name for o in catalog.OPTIMIZERS if key in o.keys]
        optimizer["properties"][key]["description"] = (
            text + (f"; used by {', '.join(users)}" if users else "") + _optimizer_default_text(key, users))
    return schema


def _optimizer_default_text(key: str, users: list[str]) -> str:
    """'; default 0.0 (0.9 for momentum, nesterov)': the key's default is null in the schema because
    it depends on optimizer.name."""
    if key not in catalog.OPTIMIZER_KEY_DEFAULTS:
        return ""
    usual = catalog.OPTIMIZER_KEY_DEFAULTS[key]
    others: dict[Any, list[str]] = {}
    for name in users:
        if (value := catalog.optimizer_default(name, key)) != usual:
            others.setdefault(value, []).append(name)
    return f"; default {usual!r}" + "".join(f" ({value!r} for {', '.join(names)})" for value, names in others.items())
