"""Configs from dicts, YAML files and `--key value` overrides, checked key by key.

A config is a dataclass whose fields are values (int, float, bool, str, list[str], `X | None`) or
nested dataclass sections. `from_dict` builds one from a mapping and stops at the first unknown key
(suggesting the closest known one) or value of the wrong kind, naming it; `apply_overrides` applies
command-line pairs such as `--train.lr 1e-3` or, when the last part is unique, `--lr 1e-3`. A class may
list keys of earlier versions in a class variable `RENAMED = {"full.old.key": "new.key"}`: using an old
key is an error that names the new one.

Support layer: imports nothing from the course.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """A config key that does not exist, or a value of the wrong kind; the message names it."""


def coerce(value, kind, key: str):
    """`value` as the annotated type `kind` (int, float, bool, str, list[str], X | None); command-line
    strings are converted, anything else of the wrong kind raises ConfigError naming `key`."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return coerce(value, inner[0], key)
    if origin is list:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return [coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                pass
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML reads 1e-3 (no dot) as a string
            except ValueError:
                pass
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if kind is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key} must be a string, got {value!r}")
    raise TypeError(f"{key}: no conversion to {kind}")


def unknown_key(key: str, known, renamed: dict | None = None, value=None) -> ConfigError:
    """The error for an unknown key: its new name if it was renamed (`renamed` maps full old names to
    new ones; a key typed without its section matches too), else the closest known key."""
    renamed = renamed or {}
    old = key if key in renamed else next((o for o in renamed if "." not in key and o.rsplit(".", 1)[-1] == key), None)
    if old is not None:
        inside = [
            f"{old}.{k} is now {renamed[f'{old}.{k}']!r}"
            for k in (value if isinstance(value, dict) else {})
            if f"{old}.{k}" in renamed
        ]
        return ConfigError(
            f"config key {key!r} is now {renamed[old]!r}" + (f" (and {'; '.join(inside)})" if inside else "")
        )
    last = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(last, [k.rsplit(".", 1)[-1] for k in known], n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint} (known here: {', '.join(sorted(known))})")


def from_dict(cls, values: dict | None, where: str = "", renamed: dict | None = None):
    """Build the dataclass `cls` (with nested dataclass sections) from a dict, checking every key and value.
    `renamed`: full old key -> new key (default: `cls.RENAMED`)."""
    renamed = dict(getattr(cls, "RENAMED", {})) if renamed is None else renamed
    values = {} if values is None else values
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'the config'} must be a mapping of keys to values, got {values!r}")
    if not where:  # a file of an earlier version: every old key in one message, not one per attempt
        old = [str(unknown_key(str(key), [], renamed, value)) for key, value in values.items() if key in renamed]
        old += [
            f"config key {f'{key}.{inner}'!r} is now {renamed[f'{key}.{inner}']!r}"
            for key, value in values.items()
            if key not in renamed and isinstance(value, dict)
            for inner in value
            if f"{key}.{inner}" in renamed
        ]
        if old:
            raise ConfigError("; ".join(old))
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in values.items():
        full = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise unknown_key(full, [f"{where}.{n}" if where else n for n in names], renamed, value)
        kind = hints[key]
        kwargs[key] = (
            from_dict(kind, value, full, renamed) if dataclasses.is_dataclass(kind) else coerce(value, kind, full)
        )
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except ValueError as e:  # a section's own validation (EncoderConfig's, TrainConfig's)
        raise ConfigError(f"{where or 'config'}: {e}") from None


def all_keys(cls, where: str = "") -> list[str]:
    """Every leaf key of `cls` by its full dotted name."""
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        full = f"{where}.{f.name}" if where else f.name
        keys += all_keys(hints[f.name], full) if dataclasses.is_dataclass(hints[f.name]) else [full]
    return keys


def apply_overrides(values: dict, overrides: list[str], cls) -> dict:
    """`--key value` / `--key=value` pairs applied onto the nested dict `values` (a copy is returned).
    A key is its full dotted name or, when unique, its last part."""
    values = json.loads(json.dumps(values))  # a deep copy
    keys, renamed = all_keys(cls), dict(getattr(cls, "RENAMED", {}))
    i = 0
    while i < len(overrides):
        item = overrides[i]
        if not item.startswith("--"):
            raise ConfigError(f"expected --key value, got {item!r}")
        if "=" in item:
            key, value = item[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(overrides):
                raise ConfigError(f"{item} has no value")
            key, value = item[2:], overrides[i + 1]
            i += 2
        matches = [k for k in keys if k == key] or [k for k in keys if k.rsplit(".", 1)[-1] == key]
        if not matches:
            raise unknown_key(key, keys, renamed)
        if len(matches) > 1:
            raise ConfigError(f"--{key} is ambiguous: say which of {', '.join(matches)}")
        *sections, last = matches[0].split(".")
        node = values
        for section in sections:
            node = node.setdefault(section, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{section} must be a mapping in the config")
        node[last] = value
    return values


def read_yaml(path) -> dict:
    """A YAML file's mapping; ConfigError naming the file if it is missing, not YAML, or not a mapping."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {path} is a folder; give a YAML file (e.g. configs/tiny.yaml)")
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: the config must be a mapping of keys to values")
    return values


def load(cls, path=None, overrides: list[str] = ()):
    """A `cls` from a YAML file (None: the defaults) with command-line overrides applied; errors name the file."""
    values = read_yaml(path) if path is not None else {}
    try:
        return from_dict(cls, apply_overrides(values, list(overrides), cls))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path is not None else str(e)) from None


def flat(values: dict, where: str = "") -> dict:
    """A nested dict as {"a.b": value}."""
    out = {}
    for key, value in values.items():
        full = f"{where}.{key}" if where else key
        out.update(flat(value, full) if isinstance(value, dict) else {full: value})
    return out
