"""Config files: YAML in, one validated `Config` out, or one `ConfigError` line naming the key.

Order of work: safe YAML load and `--set` overrides (config_file.py) → unknown-key check with
did-you-mean → typed validation (pydantic, strict) → catalog names and parameters → size estimate.
Nothing here touches TensorFlow or the data, so every mistake is caught before anything slow happens.
The JSON Schema built from the same models is in config_schema.py.
"""

from __future__ import annotations

import datetime
import math
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import catalog
from .config_file import apply_overrides, parse_yaml, read_config_text, safe_name
from .diagnosis import DEFAULT_THRESHOLDS
from .errors import ConfigError, choices_text, did_you_mean, digits, got, short, shown

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$"
NAME_RULE = "letters, digits, '_', '.' or '-', starting with a letter or digit (at most 80 characters)"
DEFAULT_WIDTHS = [300, 100]  # the seed's net; other depths default to DEFAULT_WIDTH per layer
DEFAULT_WIDTH = 100
MAX_DEPTH = 10_000
MAX_TELEMETRY_EVERY = 60_000  # the most steps an epoch can have (60,000 images at batch size 1)
CLIP_KEYS = catalog.CLIP_KEYS
OPTIMIZER_NUMBERS = ("learning_rate", *catalog.OPTIMIZER_KEY_DEFAULTS, *CLIP_KEYS)  # each becomes a float32
NULLABLE_SECTIONS = ("data", "optimizer", "training", "telemetry")  # `section: null` means its defaults


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True, allow_inf_nan=False)


class DataConfig(_Section):
    dataset: Literal["fashion_mnist"] = "fashion_mnist"
    validation_size: int = Field(5000, ge=1, le=59_999, description="first N training images held out for validation")
    scaling: Literal["unit", "standardize"] = Field(
        "unit", description="unit: x/255; standardize: per-pixel mean/std of the training split")
    dir: str | None = Field(None, description="a folder holding the four Fashion-MNIST .gz files")
    limit: int | None = Field(None, ge=1, description="train on only the first N images after the validation split")


class ModelConfig(_Section):
    depth: int = Field(2, ge=1, description=f"number of hidden layers (at most {MAX_DEPTH:,})",
                       json_schema_extra={"maximum": MAX_DEPTH})  # check_size enforces it after the estimate
    width: int | list[int] | None = Field(
        None, description="one int for all hidden layers, or a list of length depth "
        "(default: [300, 100] at depth 2, else 100 per layer)")
    activation: str | dict[str, Any] = Field(description="a name, or a mapping {name: ..., parameter: value}")
    initializer: str | dict[str, Any] = Field(description="kernel initializer: a name or a mapping with parameters")
    bias_initializer: str | dict[str, Any] = Field("zeros", description="same forms as initializer")
    batch_norm: Literal["none", "before_activation", "after_activation"] = "none"
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout rate after each hidden layer")


class OptimizerConfig(_Section):
    name: str = Field("sgd", description="one of: " + ", ".join(o.name for o in catalog.OPTIMIZERS))
    learning_rate: float = Field(0.001, gt=0.0)
    momentum: float | None = Field(None, ge=0.0, lt=1.0)
    beta_1: float | None = Field(None, ge=0.0, lt=1.0)
    beta_2: float | None = Field(None, ge=0.0, lt=1.0)
    epsilon: float | None = Field(None, gt=0.0)
    rho: float | None = Field(None, ge=0.0, lt=1.0)
    weight_decay: float | None = Field(None, ge=0.0)
    clipnorm: float | None = Field(None, gt=0.0)
    clipvalue: float | None = Field(None, gt=0.0)
    global_clipnorm: float | None = Field(None, gt=0.0)


class TrainingConfig(_Section):
    epochs: int = Field(10, ge=1, le=100_000)
    batch_size: int = Field(32, ge=1, le=60_000)
    precision: Literal["float32", "mixed_float16", "mixed_bfloat16"] = "float32"
    memory_limit_gb: float = Field(8.0, gt=0.0, description="refuse models whose estimated training memory exceeds this")


class TelemetryConfig(_Section):
    enabled: bool = True
    every: int = Field(32, ge=1, le=MAX_TELEMETRY_EVERY,
                       description="measure layers on every Nth training step (1 = every step)")
    vanishing_ratio: float = Field(
        DEFAULT_THRESHOLDS["vanishing_ratio"], gt=0.0,
        description="vanishing when first-hidden / output backpropagated gradient norm is below this "
        "(must be less than exploding_ratio)")
    exploding_ratio: float = Field(
        DEFAULT_THRESHOLDS["exploding_ratio"], gt=0.0,
        description="exploding when first-hidden / output backpropagated gradient norm is above this")
    dead_fraction: float = Field(DEFAULT_THRESHOLDS["dead_fraction"], gt=0.0, le=1.0,
                                 description="dead_units when a layer has at least this fraction of dead units")
    saturation_threshold: float = Field(5.0, gt=0.0, description="|pre-activation| beyond which a sigmoid-like unit is flat")
    saturated_fraction: float = Field(DEFAULT_THRESHOLDS["saturated_fraction"], gt=0.0, le=1.0,
                                      description="saturated when a layer has more than this fraction of flat units")


class Config(_Section):
    name: str | None = Field(None, pattern=NAME_PATTERN, description="run-name suffix; default: the config file's stem")
    seed: int = Field(42, ge=0, le=2**31 - 1)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)

    # Convenience views used by the model builder and the engine.
    @property
    def widths(self) -> list[int]:
        return list(self.model.width)  # resolved to a list by validate()

    def resolved(self) -> dict[str, Any]:
        """The config as it ran: defaults filled in, names expanded to mappings, unused keys dropped."""
        data = self.model_dump(mode="json")
        opt = data["optimizer"]
        keep = catalog.optimizer_keys(opt["name"])
        data["optimizer"] = {k: v for k, v in opt.items() if k in keep}
        return data


# ---------------------------------------------------------------- loading


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read, override and validate a config file. Raises ConfigError with one line on any problem.
    `name` left out or null becomes the file's stem."""
    path = Path(path)
    raw = parse_yaml(read_config_text(path), str(path))
    raw = apply_overrides(raw, overrides)
    if raw.get("name") is None:
        raw["name"] = safe_name(path.stem)
    return validate(raw)


# ---------------------------------------------------------------- validation


def _check_keys(data: Any, model: type[BaseModel], prefix: str) -> None:
    if not isinstance(data, dict):
        return
    fields = model.model_fields
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if not isinstance(key, str) or key not in fields:
            raise ConfigError(
                f"unknown key {shown(dotted)}{did_you_mean(key, fields)} "
                f"(valid keys{' under ' + prefix[:-1] if prefix else ''}: {', '.join(fields)})")
        annotation = fields[key].annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if value is not None and not isinstance(value, dict):
                raise ConfigError(f"{dotted} must be a mapping of keys ({', '.join(annotation.model_fields)}), "
                                  f"got {got(value)}")
            _check_keys(value, annotation, dotted + ".")


def validate(raw: dict[str, Any]) -> Config:
    """Turn a plain mapping into a Config, or raise one ConfigError line."""
    if not isinstance(raw, dict):
        raise ConfigError(f"a config must be a mapping of config keys, got {got(raw)}; "
                          "write it as model:, optimizer:, ... sections")
    _check_keys(raw, Config, "")
    for section in NULLABLE_SECTIONS:
        if section in raw and raw[section] is None:
            raw[section] = {}
    if not isinstance(raw.get("model"), dict):
        raise ConfigError("model: missing; every config needs at least model.activation and model.initializer, "
                          "e.g. model: {activation: relu, initializer: he_normal}")
    for required in ("activation", "initializer"):
        if raw["model"].get(required) is None:
            raise ConfigError(f"model.{required}: missing; it is required (valid: {_names(required)})")
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_pydantic_line(exc)) from None
    _check_telemetry(cfg)
    _resolve_model(cfg)
    _resolve_optimizer(cfg)
    check_size(cfg)
    return cfg


def _names(kind: str) -> str:
    if kind == "activation":
        return choices_text(a.name for a in catalog.ACTIVATIONS)
    return choices_text(i.name for i in catalog.INITIALIZERS if i.for_dense)


def _pydantic_line(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"] if not (isinstance(p, str) and p in _PYDANTIC_UNION_TAGS))
    msg = err["msg"]
    if msg.startswith("Input should be "):
        msg = "must be " + msg[len("Input should be "):]
    elif msg.startswith("String should match pattern"):
        msg = f"must be {NAME_RULE}"
    value = err.get("input")
    line = f"{loc}: {msg} (got {got(value)})"
    if err["type"] == "literal_error" and isinstance(value, str):
        line += did_you_mean(value, re.findall(r"'([^']*)'", err.get("ctx", {}).get("expected", "")))
    if err["type"] == "string_type" and isinstance(value, int | float | datetime.date):
        # YAML reads 2020-01-01 as a date, 123 as a number and yes as a boolean
        if isinstance(value, bool):
            line += "; quote it to make it text (YAML reads yes, no, on, off, true and false as booleans)"
        else:
            text = value.isoformat() if isinstance(value, datetime.date) else str(value)
            line += f'; quote it to make it text: {loc.rsplit(".", 1)[-1]}: "{text}"'
    return line


_PYDANTIC_UNION_TAGS = {"int", "float", "str", "bool", "list[int]", "dict[str,any]", "dict[str, any]", "none"}


def _check_telemetry(cfg: Config) -> None:
    """A ratio below vanishing_ratio is vanishing, above exploding_ratio exploding: the first must be lower."""
    t = cfg.telemetry
    if t.vanishing_ratio >= t.exploding_ratio:
        raise ConfigError(f"telemetry.vanishing_ratio ({t.vanishing_ratio:g}) must be less than "
                          f"telemetry.exploding_ratio ({t.exploding_ratio:g}); lower vanishing_ratio or raise "
                          "exploding_ratio (defaults 1e-3 and 1e3)")


def _resolve_model(cfg: Config) -> None:
    m = cfg.model
    if m.depth > 100 * MAX_DEPTH:  # before a width list of that length is built: 10^10 entries fill any memory
        _refuse_depth(m.depth)
    if m.width is None:
        m.width = list(DEFAULT_WIDTHS) if m.depth == len(DEFAULT_WIDTHS) else [DEFAULT_WIDTH] * m.depth
    elif isinstance(m.width, int):
        m.width = [m.width] * m.depth
    if len(m.width) != m.depth:
        raise ConfigError(
            f"model.width has {len(m.width)} entries but model.depth is {m.depth}; give {m.depth} widths or one int for all")
    for i, w in enumerate(m.width):
        if w < 1:
            raise ConfigError(f"model.width[{i}]: must be at least 1 (got {shown(w)})")
    m.activation = resolve_spec("model.activation", m.activation, catalog.ACTIVATION_BY_NAME)
    m.initializer = resolve_spec("model.initializer", m.initializer, catalog.INITIALIZER_BY_NAME)
    m.bias_initializer = resolve_spec("model.bias_initializer", m.bias_initializer, catalog.INITIALIZER_BY_NAME)


def resolve_spec(key: str, value: Any, table: dict[str, Any]) -> dict[str, Any]:
    """`name` or `{name: ..., params}` → `{name, every param with its default}`; errors name the key."""
    if isinstance(value, str):
        value = {"name": value}
    usable = [n for n, e in table.items() if getattr(e, "for_dense", True)]
    if isinstance(value, dict) and "name" not in value:  # e.g. `--set model.bias_initializer.value=-3` alone
        fits = [n for n in usable if value.keys() <= {p.name for p in table[n].params}]
        example = f", e.g. {key}.name: {fits[0]}" if fits else ""
        raise ConfigError(f"{key}: the mapping {shown(value)} has no 'name' key; add {key}.name{example} "
                          f"(valid names: {choices_text(usable)})")
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: must be a name or a mapping with a 'name' key (got {got(value)})")
    name = value["name"]
    if not isinstance(name, str):
        raise ConfigError(f"{key}.name: must be text, one of the names (got {got(name)}; valid: {choices_text(usable)})")
    if name not in table:
        raise ConfigError(
            f"{key}: unknown name {shown(name)}{did_you_mean(name, usable)} (valid: {choices_text(usable)})")
    entry = table[name]
    if getattr(entry, "for_dense", True) is False:
        raise ConfigError(f"{key}: '{name}' builds {entry.scale.split(', for ')[-1]} and cannot fill a Dense layer; "
                          f"choose another (valid: {choices_text(usable)})")
    params = {p.name: p for p in entry.params}
    out: dict[str, Any] = {"name": name}
    for pname, pvalue in value.items():
        if pname == "name":
            continue
        if pname not in params:
            allowed = ", ".join(params) or "none"
            raise ConfigError(f"{short(f'{key}.{pname}')}: '{name}' has no parameter {shown(pname)}"
                              f"{did_you_mean(pname, params)} (its parameters: {allowed})")
        out[pname] = _check_param(f"{key}.{pname}", params[pname], pvalue)
    for p in entry.params:
        out.setdefault(p.name, p.default)
    for low, high in entry.ordered:
        if out[low] is None or out[high] is None:
            continue
        if not out[low] < out[high]:
            raise ConfigError(f"{key}.{low} ({out[low]!r}) must be less than {key}.{high} ({out[high]!r}); "
                              f"lower {low} or raise {high}")
        if out[high] - out[low] > FLOAT32_MAX:
            raise ConfigError(f"{key}: the range from {low} {out[low]!r} to {high} {out[high]!r} is wider than a "
                              "float32 holds (3.4e38), so drawn values overflow; narrow it")
    return out


def _check_param(key: str, p: catalog.Param, value: Any) -> Any:
    if value is None:
        if p.nullable:
            return None
        raise ConfigError(f"{key}: must not be null (expected {p.type_name()})")
    types = p.type if isinstance(p.type, tuple) else (p.type,)
    if isinstance(value, bool) or not isinstance(value, types):
        raise ConfigError(f"{key}: expected {p.type_name()}, got {got(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}: must be a finite number (got {value!r})")
    if isinstance(value, int) and abs(value) > MAX_PARAM_INT:
        raise ConfigError(f"{key}: must be at most {MAX_PARAM_INT:,} in size (got an integer of "
                          f"{digits(value)} digits)")
    if float in types:
        check_float32(key, value)
    if p.choices is not None and value not in p.choices:
        raise ConfigError(f"{key}: {shown(value)} is not one of {', '.join(p.choices)}{did_you_mean(value, p.choices)}")
    if p.positive and value <= 0:
        raise ConfigError(f"{key}: must be greater than 0 (got {value!r})")
    if p.minimum is not None and value < p.minimum:
        raise ConfigError(f"{key}: must be at least {p.minimum} (got {value!r})")
    if float in types and isinstance(value, int):
        value = float(value)
    return value


MAX_PARAM_INT = 2**53  # beyond this an int no longer converts exactly (or at all) to a float
FLOAT32_MAX = 3.4028234663852886e38
FLOAT32_TINY = 1.1754943508222875e-38  # the smallest normal float32: below it values lose precision, then become 0


def check_float32(key: str, value: float) -> None:
    """Values that reach TensorFlow become float32: 1e39 would turn into inf, 1e-50 into 0."""
    if value != 0 and not FLOAT32_TINY <= abs(value) <= FLOAT32_MAX:
        raise ConfigError(f"{key}: {shown(value)} does not fit a float32, which training computes in (magnitudes "
                          "from 1.2e-38 to 3.4e38, or 0); use a value in that range")


def _resolve_optimizer(cfg: Config) -> None:
    o = cfg.optimizer
    names = catalog.OPTIMIZER_BY_NAME
    if o.name not in names:
        raise ConfigError(f"optimizer.name: unknown optimizer {shown(o.name)}{did_you_mean(o.name, names)} "
                          f"(valid: {', '.join(names)})")
    for key in OPTIMIZER_NUMBERS:
        if getattr(o, key) is not None:
            check_float32(f"optimizer.{key}", getattr(o, key))
    allowed = catalog.optimizer_keys(o.name)
    for key in catalog.OPTIMIZER_KEY_DEFAULTS:
        value = getattr(o, key)
        if key in allowed:
            if value is None:
                setattr(o, key, catalog.optimizer_default(o.name, key))
        elif value is not None:
            users = [x.name for x in catalog.OPTIMIZERS if key in x.keys]
            raise ConfigError(f"optimizer.{key}: does not apply to '{o.name}' (it applies to {', '.join(users)}); "
                              f"remove it or change optimizer.name")
    clips = [k for k in CLIP_KEYS if getattr(o, k) is not None]
    if len(clips) > 1:
        raise ConfigError(f"optimizer: {' and '.join(clips)} are both set; Keras takes only one of clipnorm, "
                          "clipvalue, global_clipnorm")


# ---------------------------------------------------------------- size estimate

N_INPUTS = 28 * 28
N_CLASSES = 10


def estimate_size(cfg: Config) -> tuple[int, float]:
    """(parameters, bytes) a training run needs at least: weights, gradients, optimizer slots and
    the activations of one batch kept for backprop. An order-of-magnitude guard, not an allocator."""
    dims = [N_INPUTS, *cfg.model.width, N_CLASSES]
    params = sum(a * b + b for a, b in zip(dims, dims[1:], strict=False))
    slots = {"sgd": 0, "momentum": 1, "nesterov": 1, "adagrad": 1, "rmsprop": 2}.get(cfg.optimizer.name, 2)
    per_unit = 4 if cfg.model.batch_norm == "none" else 6  # pre-activation, activation, grads (+ BN)
    acts = cfg.training.batch_size * sum(dims) * per_unit
    nbytes = 4 * (params * (2 + slots) + acts)  # exact int: widths of any size cannot overflow a float here
    return params, float(nbytes) if nbytes < 2**1000 else math.inf


def check_size(cfg: Config) -> None:
    params, nbytes = estimate_size(cfg)
    limit = cfg.training.memory_limit_gb * 2**30
    if nbytes > limit:
        count = f"{params:,}" if params < 10**15 else f"10^{digits(params) - 1}"
        gib = nbytes / 2**30
        need = (f"~{gib:,.1f} GiB" if gib < 1e6 else f"~{gib:.2g} GiB") if math.isfinite(gib) else \
            "more memory than any machine has"
        raise ConfigError(
            f"model too large: about {count} parameters needing {need} to train, over "
            f"training.memory_limit_gb={cfg.training.memory_limit_gb:g}; reduce model.depth or model.width "
            f"(or raise training.memory_limit_gb)")
    if cfg.model.depth > MAX_DEPTH:  # small enough in memory, but Keras builds every layer in Python
        _refuse_depth(cfg.model.depth)


def _refuse_depth(depth: int) -> None:
    raise ConfigError(f"model.depth: {got(depth)} is over the {MAX_DEPTH:,} hidden layers gradexp builds; "
                      f"use at most {MAX_DEPTH:,}")
