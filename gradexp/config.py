"""Config files: YAML in, one validated `Config` out, or one `ConfigError` line naming the key.

Order of work: safe YAML load → `--set` overrides → unknown-key check with did-you-mean → typed
validation (pydantic, strict) → catalog names and parameters → size estimate. Nothing here touches
TensorFlow or the data, so every mistake is caught before anything slow happens.
"""

from __future__ import annotations

import math
import re
import reprlib
import stat
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import catalog
from .errors import ConfigError, choices_text, did_you_mean

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$"
DEFAULT_WIDTHS = [300, 100]  # the seed's net; other depths default to DEFAULT_WIDTH per layer
DEFAULT_WIDTH = 100
MAX_DEPTH = 10_000
MAX_TELEMETRY_EVERY = 60_000  # the most steps an epoch can have (60,000 images at batch size 1)
MAX_CONFIG_BYTES = 2**20  # a config is a few hundred bytes; anything near this is not one
MAX_SHOWN = 60  # characters of a bad value an error line echoes
CLIP_KEYS = ("clipnorm", "clipvalue", "global_clipnorm")
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
        1e-3, gt=0.0, description="vanishing when first-hidden / output backpropagated gradient norm is below this "
        "(must be less than exploding_ratio)")
    exploding_ratio: float = Field(
        1e3, gt=0.0, description="exploding when first-hidden / output backpropagated gradient norm is above this")
    dead_fraction: float = Field(0.7, gt=0.0, le=1.0, description="dead_units when a layer has at least this fraction of dead units")
    saturation_threshold: float = Field(5.0, gt=0.0, description="|pre-activation| beyond which a sigmoid-like unit is flat")
    saturated_fraction: float = Field(0.5, gt=0.0, le=1.0, description="saturated when a layer has more than this fraction of flat units")


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


class _Refused(yaml.MarkedYAMLError):
    """YAML that parses but that gradexp refuses (an alias, a duplicate key): `note` holds the fix."""


class _Loader(yaml.SafeLoader):
    """Safe YAML that also reads `1e-3` as a number (YAML 1.2; YAML 1.1 wants `1.0e-3`), and refuses
    what a config never needs: aliases (`*name` can expand exponentially, the "billion laughs") and
    keys given twice (YAML would keep the last one silently)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _Refused(problem=f"alias '*{event.anchor}' refused", problem_mark=event.start_mark,
                           note="gradexp configs do not use anchors and aliases; write the value out in full")
        return super().compose_node(parent, index)

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, AttributeError, KeyError) as exc:  # e.g. `2001-02-30`, `!!int abc`
            value = _shown(node.value) if isinstance(node, yaml.ScalarNode) else "the value"
            reason = f" ({str(exc).split(';')[0]})" if isinstance(exc, ValueError) else ""
            tag = str(node.tag).rsplit(":", 1)[-1]
            kind = {"int": "integer", "float": "number", "bool": "boolean", "timestamp": "date"}.get(tag, tag)
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {value} as {_with_article(kind)}{reason}", node.start_mark) from None

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            first_line: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                if not isinstance(key_node, yaml.ScalarNode):
                    kind = "list" if isinstance(key_node, yaml.SequenceNode) else "mapping"
                    raise _Refused(problem=f"a {kind} is used as a key", problem_mark=key_node.start_mark,
                                   note="a key is a plain name such as model or depth; check the indentation")
                key = self.construct_object(key_node)
                if key in first_line:
                    raise _Refused(problem=f"duplicate key {_shown(key)} (first on line {first_line[key]})",
                                   problem_mark=key_node.start_mark,
                                   note="give each key once; YAML would silently keep only the last")
                first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def _safe_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: never builds Python objects


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read, override and validate a config file. Raises ConfigError with one line on any problem.
    `name` left out or null becomes the file's stem."""
    path = Path(path)
    raw = parse_yaml(read_config_text(path), str(path))
    raw = apply_overrides(raw, overrides)
    if raw.get("name") is None:
        raw["name"] = _safe_name(path.stem)
    return validate(raw)


def read_config_text(path: Path) -> str:
    """The text of a config file; refuses folders, devices, pipes and files over MAX_CONFIG_BYTES."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}; give the path of a YAML file, e.g. configs/leaky_he.yaml") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}; check the path and its permissions") from None
    if stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{path} is a folder, not a config file; give a YAML file inside it")
    if not stat.S_ISREG(info.st_mode):
        kind = "a named pipe" if stat.S_ISFIFO(info.st_mode) else "a socket" if stat.S_ISSOCK(info.st_mode) else "a device"
        raise ConfigError(f"{path} is {kind}, not a regular file; give a YAML file")
    too_big = (f"{path} is over {MAX_CONFIG_BYTES // 2**20} MiB, far larger than any config; "
               "give a YAML config file (a few lines)")
    if info.st_size > MAX_CONFIG_BYTES:
        raise ConfigError(too_big)
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)  # files that report no size (/proc) are capped too
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}; check the file's permissions") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(too_big)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}; save it as UTF-8") from None


def parse_yaml(text: str, source: str) -> dict[str, Any]:
    """`text` as a mapping, or one ConfigError line naming `source` and, where known, line and column."""
    try:
        raw = _safe_load(text)
    except RecursionError:
        raise ConfigError(
            f"{source} nests lists or mappings too deeply to read; a config is a few levels deep") from None
    except _Refused as exc:
        raise ConfigError(f"{source}{_where(exc.problem_mark)}: {exc.problem}; {exc.note}") from None
    except yaml.constructor.ConstructorError as exc:
        problem = (exc.problem or str(exc)).strip()
        fix = ("gradexp loads YAML safely and never builds Python objects, remove the tag"
               if "constructor for the tag" in problem else "quote it if it is meant as a string, or fix the value"
               if problem.startswith("cannot read") else "remove the !! tag or fix the value")
        raise ConfigError(f"{source}{_where(exc.problem_mark)}: {problem}; {fix}") from None
    except yaml.reader.ReaderError as exc:  # a NUL byte or another character YAML does not allow
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - text.rfind("\n", 0, exc.position)
        raise ConfigError(f"{source} is not valid YAML (line {line}, column {column}): character "
                          f"{_shown(chr(exc.character))} is not allowed; remove it") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or "syntax error"
        raise ConfigError(f"{source} is not valid YAML{_where(mark)}: {problem}; fix the syntax") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source} must be a YAML mapping of config keys (model:, optimizer:, ...), "
                          f"not {_with_article(_yaml_type(raw))}")
    return raw


def _where(mark: Any) -> str:
    return f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""


def _safe_name(stem: str) -> str:
    cleaned = "".join(c if (c.isalnum() or c in "_.-") else "_" for c in stem).lstrip("_.-")
    return (cleaned or "run")[:80]


def parse_override(item: str) -> tuple[list[str], Any]:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set expects KEY=VALUE (e.g. --set optimizer.learning_rate=0.01), got {_shown(item)}")
    parts = key.split(".")
    if any(not p for p in parts):
        raise ConfigError(f"--set {_short(key)}: empty part in the dotted key; write it like model.depth")
    try:
        value = _safe_load(text) if text.strip() else None
    except _Refused as exc:
        raise ConfigError(f"--set {_short(key)}: {exc.problem}; {exc.note}") from None
    except yaml.constructor.ConstructorError as exc:
        raise ConfigError(f"--set {_short(key)}: {exc.problem}; quote strings or fix the value") from None
    except (yaml.YAMLError, RecursionError) as exc:
        problem = getattr(exc, "problem", None)
        raise ConfigError(f"--set {_short(key)}: cannot parse the value {_shown(text)}"
                          f"{f' ({problem})' if problem else ''}; quote strings or fix the value") from None
    return parts, value


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply `--set a.b=value` items in order; a name-or-mapping key is widened to a mapping when a
    parameter is set under it (`--set model.activation.negative_slope=0.2`)."""
    for item in overrides:
        parts, value = parse_override(item)
        node = raw
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif isinstance(child, str) and depth == 1 and part in _SPEC_FIELDS:
                child = node[part] = {"name": child}
            elif not isinstance(child, dict):
                prefix = _short(".".join(parts[: depth + 1]))
                raise ConfigError(f"--set {_short('.'.join(parts))}: {prefix} is a value, not a section; "
                                  f"set {prefix} itself")
            node = child
        node[parts[-1]] = value
    return raw


_SPEC_FIELDS = {"activation": "activation", "initializer": "initializer", "bias_initializer": "initializer"}


# ---------------------------------------------------------------- validation


def _check_keys(data: Any, model: type[BaseModel], prefix: str) -> None:
    if not isinstance(data, dict):
        return
    fields = model.model_fields
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if not isinstance(key, str) or key not in fields:
            raise ConfigError(
                f"unknown key {_shown(dotted)}{did_you_mean(key, fields)} "
                f"(valid keys{' under ' + prefix[:-1] if prefix else ''}: {', '.join(fields)})")
        annotation = fields[key].annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if value is not None and not isinstance(value, dict):
                raise ConfigError(f"{dotted} must be a mapping of keys ({', '.join(annotation.model_fields)}), "
                                  f"got {_got(value)}")
            _check_keys(value, annotation, dotted + ".")


def validate(raw: dict[str, Any]) -> Config:
    """Turn a plain mapping into a Config, or raise one ConfigError line."""
    if not isinstance(raw, dict):
        raise ConfigError(f"a config must be a mapping of config keys, got {_got(raw)}; "
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


def _yaml_type(value: Any) -> str:
    return {dict: "mapping", list: "list", str: "string", bool: "boolean", int: "integer",
            float: "number", type(None): "null"}.get(type(value), type(value).__name__)


def _with_article(noun: str) -> str:
    return f"{'an' if noun[:1] in tuple('aeiou') else 'a'} {noun}"


def _short(text: str) -> str:
    """`text` cut to MAX_SHOWN characters with an ellipsis: a pasted blob keeps the error line short."""
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 1] + "…"


def _huge_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200


def _shown(value: Any) -> str:
    """`repr(value)`, shortened; the repr itself is bounded too (an int of a million digits, a huge list)."""
    if _huge_int(value):
        return f"an integer of {_digits(value)} digits"
    return _short(_REPR.repr(value))


def _digits(n: int) -> int:
    """Decimal digits of |n|, without str(n) once n is too long for Python to print."""
    n = abs(n)
    return len(str(n)) if n.bit_length() <= 10_000 else int(n.bit_length() * math.log10(2)) + 1


def _got(value: Any) -> str:
    """'string 'ten'', 'integer 0', 'an integer of 5000 digits', or just 'null'."""
    if value is None:
        return "null"
    return _shown(value) if _huge_int(value) else f"{_yaml_type(value)} {_shown(value)}"


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = 4 * MAX_SHOWN
_REPR.maxlist = _REPR.maxdict = _REPR.maxtuple = _REPR.maxset = MAX_SHOWN // 2


def _pydantic_line(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"] if not (isinstance(p, str) and p in _PYDANTIC_UNION_TAGS))
    msg = err["msg"]
    if msg.startswith("Input should be "):
        msg = "must be " + msg[len("Input should be "):]
    elif msg.startswith("String should match pattern"):
        msg = "must be letters, digits, '_', '.' or '-' (at most 80 characters)"
    return f"{loc}: {msg} (got {_got(err.get('input'))})"


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
    if m.width is None:
        m.width = list(DEFAULT_WIDTHS) if m.depth == len(DEFAULT_WIDTHS) else [DEFAULT_WIDTH] * m.depth
    elif isinstance(m.width, int):
        m.width = [m.width] * m.depth
    if len(m.width) != m.depth:
        raise ConfigError(
            f"model.width has {len(m.width)} entries but model.depth is {m.depth}; give {m.depth} widths or one int for all")
    for i, w in enumerate(m.width):
        if w < 1:
            raise ConfigError(f"model.width[{i}]: must be at least 1 (got {_shown(w)})")
    m.activation = resolve_spec("model.activation", m.activation, catalog.ACTIVATION_BY_NAME)
    m.initializer = resolve_spec("model.initializer", m.initializer, catalog.INITIALIZER_BY_NAME)
    m.bias_initializer = resolve_spec("model.bias_initializer", m.bias_initializer, catalog.INITIALIZER_BY_NAME)


def resolve_spec(key: str, value: Any, table: dict[str, Any]) -> dict[str, Any]:
    """`name` or `{name: ..., params}` → `{name, every param with its default}`; errors name the key."""
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict) or "name" not in value:
        raise ConfigError(f"{key}: must be a name or a mapping with a 'name' key (got {_got(value)})")
    name = value["name"]
    usable = [n for n, e in table.items() if getattr(e, "for_dense", True)]
    if not isinstance(name, str) or name not in table:
        raise ConfigError(
            f"{key}: unknown name {_shown(name)}{did_you_mean(name, usable)} (valid: {choices_text(usable)})")
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
            raise ConfigError(f"{_short(f'{key}.{pname}')}: '{name}' has no parameter {_shown(pname)}"
                              f"{did_you_mean(pname, params)} (its parameters: {allowed})")
        out[pname] = _check_param(f"{key}.{pname}", params[pname], pvalue)
    for p in entry.params:
        out.setdefault(p.name, p.default)
    for low, high in entry.ordered:
        if out[low] is not None and out[high] is not None and not out[low] < out[high]:
            raise ConfigError(f"{key}.{low} ({out[low]!r}) must be less than {key}.{high} ({out[high]!r}); "
                              f"lower {low} or raise {high}")
    return out


def _check_param(key: str, p: catalog.Param, value: Any) -> Any:
    if value is None:
        if p.nullable:
            return None
        raise ConfigError(f"{key}: must not be null (expected {p.type_name()})")
    types = p.type if isinstance(p.type, tuple) else (p.type,)
    if isinstance(value, bool) or not isinstance(value, types):
        raise ConfigError(f"{key}: expected {p.type_name()}, got {_got(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}: must be a finite number (got {value!r})")
    if isinstance(value, int) and abs(value) > _MAX_PARAM_INT:
        raise ConfigError(f"{key}: must be at most {_MAX_PARAM_INT:,} in size (got an integer of "
                          f"{_digits(value)} digits)")
    if p.choices is not None and value not in p.choices:
        raise ConfigError(f"{key}: {_shown(value)} is not one of {', '.join(p.choices)}{did_you_mean(value, p.choices)}")
    if p.positive and value <= 0:
        raise ConfigError(f"{key}: must be greater than 0 (got {value!r})")
    if p.minimum is not None and value < p.minimum:
        raise ConfigError(f"{key}: must be at least {p.minimum} (got {value!r})")
    if float in types and isinstance(value, int):
        value = float(value)
    return value


_MAX_PARAM_INT = 2**53  # beyond this an int no longer converts exactly (or at all) to a float


def _resolve_optimizer(cfg: Config) -> None:
    o = cfg.optimizer
    names = catalog.OPTIMIZER_BY_NAME
    if o.name not in names:
        raise ConfigError(f"optimizer.name: unknown optimizer {_shown(o.name)}{did_you_mean(o.name, names)} "
                          f"(valid: {', '.join(names)})")
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
        count = f"{params:,}" if params < 10**15 else f"10^{len(str(params)) - 1}"
        gib = nbytes / 2**30
        need = (f"~{gib:,.1f} GiB" if gib < 1e6 else f"~{gib:.2g} GiB") if math.isfinite(gib) else \
            "more memory than any machine has"
        raise ConfigError(
            f"model too large: about {count} parameters needing {need} to train, over "
            f"training.memory_limit_gb={cfg.training.memory_limit_gb:g}; reduce model.depth or model.width "
            f"(or raise training.memory_limit_gb)")
    if cfg.model.depth > MAX_DEPTH:  # small enough in memory, but Keras builds every layer in Python
        raise ConfigError(f"model.depth: {cfg.model.depth} hidden layers is over the {MAX_DEPTH:,} gradexp builds "
                          f"(got {cfg.model.depth}); use at most {MAX_DEPTH:,}")


# ---------------------------------------------------------------- schema
#
# Built from the pydantic models and the catalog, so it carries the validator's rules: bounds, names,
# parameter types and ranges, and the optimizer's cross-key rules as if/then and not. JSON Schema cannot
# compare two values, so the orderings (random_uniform minval < maxval, relu threshold < max_value,
# telemetry.vanishing_ratio < exploding_ratio), a width list's length and the size estimate are left to
# the validator (the first are stated in the descriptions).


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
        prop.setdefault("minimum", -_MAX_PARAM_INT)
        prop["maximum"] = _MAX_PARAM_INT
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
    optimizer["allOf"] = _optimizer_rules()
    for key, text in catalog.OPTIMIZER_KEY_HELP.items():
        users = [o.name for o in catalog.OPTIMIZERS if key in o.keys]
        optimizer["properties"][key]["description"] = text + (f"; used by {', '.join(users)}" if users else "")
    return schema
