"""Typed YAML configs with ``key=value`` command-line overrides.

Every recipe describes its settings as a dataclass. A YAML file gives values, ``key=value`` arguments override
them, and everything is validated when loaded: an unknown key, a value of the wrong type or a value outside its
choices is one ``ConfigError`` that names the key, where the value came from, and what would be valid.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that cannot be used as written."""


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(c) for c in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (inner,) = typing.get_args(tp)
        return f"a list of {_type_name(inner)}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Return ``value`` as type ``tp`` or raise a ConfigError naming ``where``."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value in choices:
            return value
        raise ConfigError(f"{where}: {value!r} is not a valid choice; expected one of {', '.join(map(repr, choices))}")
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} is not {_type_name(tp)}")
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
        return [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected null, got {value!r}")
    if tp is dict or origin is dict:
        if isinstance(value, dict):
            return dict(value)
        raise ConfigError(f"{where}: expected a mapping of key: value, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    raise TypeError(f"unsupported config field type {tp!r}")


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """Turn ``["epochs=3", "architecture=resnet18"]`` into a dict; values are parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for arg in args:
        key, sep, raw = arg.partition("=")
        if not sep or not key:
            raise ConfigError(f"command-line override {arg!r}: expected key=value")
        out[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
    return out


def load_config(cls: type[T], path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> T:
    """Build dataclass ``cls`` from a YAML file and overrides, validating every key and value."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}

    def take(mapping: dict[str, Any], origin: str) -> None:
        for key, value in mapping.items():
            if key not in fields:
                close = difflib.get_close_matches(str(key), fields, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(
                    f"{origin}: unknown key {key!r}{hint}; valid keys: {', '.join(sorted(fields))}"
                )
            values[key] = value
            sources[key] = origin

    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path}: expected a mapping of key: value, got {type(data).__name__}")
        take(data, str(path))
    take(overrides or {}, "command line")

    kwargs = {}
    for key, value in values.items():
        kwargs[key] = _coerce(value, hints[key], f"{sources[key]}: key {key!r}")
    cfg = cls(**kwargs)
    validate = getattr(cfg, "validate", None)
    if validate is not None:
        validate()
    return cfg


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def config_from_cli(cls: type[T], description: str, default_config: str, argv: list[str] | None = None,
                    errors: tuple[type[Exception], ...] = (ConfigError,), resolve=None) -> T:
    """``[--config FILE] [key=value ...]`` -> a validated ``cls``; an error of ``errors`` exits with status 2 and one
    line. ``resolve`` maps the config path before loading (e.g. to the repository's copy)."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default=default_config, help=f"YAML config (default: {default_config})")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="override any config key")
    args = parser.parse_args(argv)
    try:
        return load_config(cls, resolve(args.config) if resolve else args.config, parse_overrides(args.overrides))
    except errors as exc:
        parser.exit(2, f"error: {exc}\n")

