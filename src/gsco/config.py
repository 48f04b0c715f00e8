"""Typed YAML configs with ``key=value`` command-line overrides.

Every recipe describes its settings as a dataclass. A YAML file gives values, ``key=value`` arguments override
them, and everything is validated when loaded: an unknown key, a value of the wrong type or a value outside its
choices is one ``ConfigError`` that names the key, where the value came from, and what would be valid.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from gsco.errors import GscoError

T = TypeVar("T")
logger = logging.getLogger(__name__)


class ConfigError(GscoError, ValueError):
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


def _without_none(tp: Any) -> list[Any]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(tp) if a is not type(None)]
    return [tp]


def _text_only(tp: Any) -> bool:
    """Whether a key only takes text (str, a Literal of strings, or either or null)."""
    return all(a is str or (typing.get_origin(a) is Literal and all(isinstance(c, str) for c in typing.get_args(a)))
               for a in _without_none(tp))


def _text_list(tp: Any) -> bool:
    """Whether a key takes a list of text (``list[str]``, or it or null)."""
    return any(typing.get_origin(a) is list and _text_only(typing.get_args(a)[0]) for a in _without_none(tp))


def scalar_for(tp: Any, raw: str) -> Any:
    """A command-line value for a key of type ``tp``. Text keys take the text as written (``question=no`` stays
    "no", `` | `` keeps its spaces; ``null`` is null where allowed; a quoted value is read as YAML); a list of text
    takes ``[a,b]`` as YAML and anything else as one item (``image=a.png``); other keys read YAML (``rad_k=3``,
    ``mean=null``)."""
    quoted = len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\""
    nullable = tp is not None and type(None) in typing.get_args(tp)
    if nullable and raw.strip() in ("null", "~", ""):
        return None
    if tp is not None and not quoted and _text_only(tp):
        return raw
    if tp is not None and not quoted and _text_list(tp) and not raw.lstrip().startswith("["):
        return [raw]
    return yaml.safe_load(raw) if raw.strip() else None


def parse_overrides(args: list[str], cls: type | None = None) -> dict[str, Any]:
    """Turn ``["epochs=3", "architecture=resnet18"]`` into a dict. Values are read as YAML scalars; with the config
    class ``cls`` each is read for its key's type (:func:`scalar_for`), and a list key given twice collects both
    (``image=a.png image=b.png``)."""
    hints = typing.get_type_hints(cls) if cls is not None else {}
    sections = config_sections(cls) if cls is not None else {}
    out: dict[str, Any] = {}
    for arg in args:
        key, sep, raw = arg.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"command-line override {arg!r}: expected key=value")
        name = key.split(".", 1)[1] if key.split(".", 1)[0] in sections else key  # section.key
        tp = hints.get(name)
        value = scalar_for(tp, raw)
        if key in out and isinstance(out[key], list) and isinstance(value, list) and _text_list(tp):
            out[key] = out[key] + value
        else:
            out[key] = value
    return out


def key_docs(cls: type) -> dict[str, str]:
    """Each key's meaning, written once beside its field in the config dataclass: the field's trailing comment, else
    the comment block right above it (section headers ``# --- ... ---`` excluded; inherited fields included).
    ``--help`` lists them."""
    import inspect
    import re

    docs: dict[str, str] = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):
        try:
            lines = inspect.getsource(klass).splitlines()
        except (OSError, TypeError):
            continue
        block: list[str] = []
        for line in lines:
            comment = re.match(r"^    # (?!---)(.*)$", line)
            field = re.match(r"^    (\w+): ", line)
            if comment:
                block.append(comment.group(1).strip())
            elif field:
                trailing = re.search(r"\s{2}# (.*)$", line)
                doc = trailing.group(1) if trailing else " ".join(block)
                if doc:
                    docs[field.group(1)] = doc.strip()
                block = []
            else:
                block = []
    return docs


def config_sections(cls: type) -> dict[str, tuple[str, ...]]:
    """A config class's sections (its ``SECTIONS``: name -> keys, inherited). In a YAML file a section is a mapping
    of its keys (``generation: {max_new_tokens: 64}``); on the command line ``generation.max_new_tokens=64``. Keys
    are unique across sections, so ``max_new_tokens=64`` works as well; keys outside every section sit at the top."""
    return {name: tuple(keys) for name, keys in getattr(cls, "SECTIONS", {}).items()}


def config_files(path: Path, including: tuple[Path, ...] = ()) -> list[tuple[Path, dict[str, Any]]]:
    """``path``'s mapping after the files it includes, in the order their values apply: a file may start from others
    with ``include: FILE`` (or a list), each relative to the including file; its own keys then override theirs, a
    section key by key. The shared part of several recipes is written once (``configs/gsco/base.yaml``)."""
    if not path.is_file():
        where = f" (included by {including[-1]})" if including else ""
        raise ConfigError(f"config file {path} does not exist{where}")
    if path.resolve() in including:
        raise ConfigError(f"config file {path} includes itself (through {' -> '.join(map(str, including))})")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of key: value, got {type(data).__name__}")
    include = data.pop("include", None)
    names = [include] if isinstance(include, str) else include or []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"config file {path}: key 'include': expected a file name or a list of them, got {include!r}")
    files = []
    for name in names:
        files += config_files(path.parent / name, (*including, path.resolve()))
    return files + [(path, data)]


def load_config(cls: type[T], path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> T:
    """Build dataclass ``cls`` from a YAML file and overrides, validating every key and value."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}

    sections = config_sections(cls)
    section_of = {key: name for name, keys in sections.items() for key in keys}

    def entries(mapping: dict[str, Any], origin: str):
        """(key, value, where, section) of a mapping whose sections hold their keys, flattened."""
        for key, value in mapping.items():
            key = str(key)
            if key in sections:
                if not isinstance(value, dict):
                    raise ConfigError(f"{origin}: section {key!r} must be a mapping of its keys "
                                      f"({', '.join(sections[key])}), got {value!r}")
                for sub, sub_value in value.items():
                    yield str(sub), sub_value, f"{origin}: {key}.{sub}", key
            elif "." in key and key.split(".", 1)[0] in sections:
                section, sub = key.split(".", 1)
                yield sub, value, f"{origin}: {key}", section
            else:
                yield key, value, origin, None

    def take(mapping: dict[str, Any], origin: str) -> None:
        given: dict[str, str] = {}
        for key, value, where, section in entries(mapping, origin):
            if key not in fields:
                close = difflib.get_close_matches(key, fields, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(f"{where}: unknown key {key!r}{hint}; valid keys: {', '.join(sorted(fields))}")
            if section is not None and section_of.get(key) != section:
                home = f"in section {section_of[key]!r}" if key in section_of else "at the top level"
                raise ConfigError(f"{where}: key {key!r} is not in section {section!r}; it goes {home}")
            if key in given:
                raise ConfigError(f"{where}: key {key!r} is given twice (also {given[key]})")
            given[key] = where
            values[key] = value
            sources[key] = where

    if path is not None:
        for file, data in config_files(Path(path)):
            take(data, str(file))
    take(overrides or {}, "command line")

    missing = [name for name, f in fields.items() if name not in values
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{path or 'command line'}: missing key(s) {', '.join(map(repr, missing))}; give "
                          + " ".join(f"{m}=..." for m in missing))
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
