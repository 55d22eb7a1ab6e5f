"""Reading a config file and `--set` items: safe YAML, and nothing a config never needs.

Refused with one ConfigError line, with line and column where YAML gives them: folders, devices, pipes
and files over MAX_CONFIG_BYTES; YAML tags that build Python objects; aliases (`*name` can expand
exponentially, the "billion laughs"); a key given twice in one mapping; a list or mapping used as a key;
values YAML cannot read (`2001-02-30`, `!!int abc`). What comes out is a plain mapping for config.py
to validate.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, os_error_line, short, short_path, shown, with_article, yaml_type

MAX_CONFIG_BYTES = 2**20  # a config is a few hundred bytes; anything near this is not one


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
            value = shown(node.value) if isinstance(node, yaml.ScalarNode) else "the value"
            reason = f" ({str(exc).split(';')[0]})" if isinstance(exc, ValueError) else ""
            tag = str(node.tag).rsplit(":", 1)[-1]
            kind = {"int": "integer", "float": "number", "bool": "boolean", "timestamp": "date"}.get(tag, tag)
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {value} as {with_article(kind)}{reason}", node.start_mark) from None

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
                    raise _Refused(problem=f"duplicate key {shown(key)} (first on line {first_line[key]})",
                                   problem_mark=key_node.start_mark,
                                   note="give each key once; YAML would silently keep only the last")
                first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def safe_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: never builds Python objects


def _read_error(path: Path, exc: OSError, fallback: str) -> str:
    """'PATH: reason; fix', the path shortened, the fix the one every command gives for that error."""
    line = os_error_line(OSError(exc.errno, exc.strerror, str(path)))
    return line if line is not None else f"{short_path(str(path))}: {exc.strerror or exc}; {fallback}"


def read_config_text(path: Path) -> str:
    """The text of a config file; refuses folders, devices, pipes and files over MAX_CONFIG_BYTES."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}; give the path of a YAML file, e.g. configs/leaky_he.yaml") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {_read_error(path, exc, 'check the path and its permissions')}") from None
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
        raise ConfigError(f"cannot read config file {_read_error(path, exc, 'check the file and its permissions')}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(too_big)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}; save it as UTF-8") from None


def parse_yaml(text: str, source: str) -> dict[str, Any]:
    """`text` as a mapping, or one ConfigError line naming `source` and, where known, line and column."""
    try:
        raw = safe_load(text)
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
                          f"{shown(chr(exc.character))} is not allowed; remove it") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or "syntax error"
        raise ConfigError(f"{source} is not valid YAML{_where(mark)}: {problem}; fix the syntax") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source} must be a YAML mapping of config keys (model:, optimizer:, ...), "
                          f"not {with_article(yaml_type(raw))}")
    return raw


def _where(mark: Any) -> str:
    return f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""


def safe_name(stem: str) -> str:
    cleaned = "".join(c if (c.isascii() and c.isalnum()) or c in "_.-" else "_" for c in stem).lstrip("_.-")
    return (cleaned or "run")[:80]


def parse_override(item: str) -> tuple[list[str], Any]:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set expects KEY=VALUE (e.g. --set optimizer.learning_rate=0.01), got {shown(item)}")
    parts = key.split(".")
    if any(not p for p in parts):
        raise ConfigError(f"--set {short(key)}: empty part in the dotted key; write it like model.depth")
    try:
        value = safe_load(text) if text.strip() else None
    except _Refused as exc:
        raise ConfigError(f"--set {short(key)}: {exc.problem}; {exc.note}") from None
    except yaml.constructor.ConstructorError as exc:
        raise ConfigError(f"--set {short(key)}: {exc.problem}; quote strings or fix the value") from None
    except (yaml.YAMLError, RecursionError) as exc:
        problem = getattr(exc, "problem", None)
        raise ConfigError(f"--set {short(key)}: cannot parse the value {shown(text)}"
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
                prefix = short(".".join(parts[: depth + 1]))
                raise ConfigError(f"--set {short('.'.join(parts))}: {prefix} is a value, not a section; "
                                  f"set {prefix} itself")
            node = child
        node[parts[-1]] = value
    return raw


_SPEC_FIELDS = ("activation", "initializer", "bias_initializer")  # a name, or a mapping with a name
