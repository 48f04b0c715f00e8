"""One command line for every entry point.

    python -m gsco.<tool> [--config FILE] [key=value ...]

A tool's settings are one config dataclass (:mod:`gsco.config`): ``FILE`` gives values and ``key=value`` overrides
them, with keys named exactly as in the YAML. Former flags (``--data-path X``) are still read for one release as
aliases of their key and listed under "former flags" in ``--help``. Exit status everywhere: 0 done, 2 bad input (one
line on stderr naming the key or file and what was expected; ``GSCO_TRACEBACK=1`` shows the traceback); anything
else is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import textwrap
import typing
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

import yaml

from gsco.config import config_sections, key_docs, load_config, parse_overrides, renamed_keys, scalar_for
from gsco.errors import GscoError

T = TypeVar("T")
BAD_INPUT = 2


@dataclasses.dataclass(frozen=True)
class Alias:
    """A former flag, read for one release: ``--flag VALUE`` is ``key=VALUE``, and ``implies`` sets further keys."""

    key: str
    implies: Mapping[str, Any] = dataclasses.field(default_factory=dict)


ConfigPath = str | Path | Callable[[dict], "str | Path | None"] | None


def _kind(tp: Any) -> str:
    """How a former flag of this type reads its value(s): 'switch' (no value), 'list' or 'one'."""
    args = [a for a in typing.get_args(tp) if a is not type(None)] if typing.get_args(tp) else [tp]
    if tp is bool or args == [bool]:
        return "switch"
    if typing.get_origin(tp) is list or any(typing.get_origin(a) is list for a in args):
        return "list"
    return "one"


def _default(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return "required"
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()


def _key_lines(cls: type) -> list[str]:
    """``  key = default`` and its meaning (from the dataclass, :func:`gsco.config.key_docs`), wrapped."""
    docs = key_docs(cls)
    section_of = {key: name for name, keys in config_sections(cls).items() for key in keys}
    lines, section = [], None
    for field in dataclasses.fields(cls):
        if section_of.get(field.name) != section:
            section = section_of.get(field.name)
            lines.append(f" {section}: (section)" if section else " (top level)")
        lines.append(f"  {field.name} = {_default(field)}")
        lines += textwrap.wrap(docs.get(field.name, ""), 100, initial_indent=" " * 6, subsequent_indent=" " * 6)
    return lines


def _parser(cls: type, description: str, config: ConfigPath, aliases: Mapping[str, Alias]) -> argparse.ArgumentParser:
    renamed = renamed_keys(cls)
    epilog = "keys (default; meaning):\n" + "\n".join(_key_lines(cls))
    if renamed:
        epilog += "\nearlier key names, still read: " + ", ".join(f"{old} -> {new}" for old, new in renamed.items())
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=epilog + "\nexit status: 0 done, 2 bad input (one line naming the key or file)")
    shown = config if isinstance(config, (str, Path)) else ("chosen from the keys" if config else "none")
    parser.add_argument("--config", default=None, metavar="FILE", help=f"YAML config (default: {shown})")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="set any key (see 'keys' below)")
    hints = typing.get_type_hints(cls)
    if aliases:
        group = parser.add_argument_group("former flags (read for one release; write key=value instead)")
        for flag, alias in aliases.items():
            kind = _kind(hints[alias.key])
            extra = "".join(f" {k}={v}" for k, v in alias.implies.items())
            kwargs: dict[str, Any] = {"dest": "alias" + flag, "default": None,
                                      "help": f"the same as {alias.key}=...{extra}"}
            if kind == "switch":
                kwargs.update(action="store_const", const="true", help=f"the same as {alias.key}=true{extra}")
            elif kind == "list":
                kwargs.update(action="extend", nargs="+", metavar="VALUE")
            else:
                kwargs.update(metavar="VALUE")
            group.add_argument(flag, **kwargs)
    return parser


def _is_override(word: str, cls: type) -> bool:
    """``word`` is ``key=value`` (or ``section.key=value``) for one of ``cls``'s keys."""
    key = word.partition("=")[0].rpartition(".")[2]
    return "=" in word and key in {f.name for f in dataclasses.fields(cls)}


def _alias_values(cls: type, args: argparse.Namespace, aliases: Mapping[str, Alias]) -> dict[str, Any]:
    """The former flags' values by key. A list flag takes the words after it up to the next flag, so a ``key=value``
    among them (``--question "What?" window=lung``) is handed back to the overrides, not read as a value."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for flag, alias in aliases.items():
        given = getattr(args, "alias" + flag)
        if given is None:
            continue
        tp = hints[alias.key]
        if isinstance(given, list):
            args.overrides += [w for w in given if _is_override(w, cls)]
            values[alias.key] = [w for w in given if not _is_override(w, cls)]
        else:
            values[alias.key] = scalar_for(tp, given)
        for key, value in alias.implies.items():
            values.setdefault(key, value)
    return values


def parse(cls: type[T], argv: list[str] | None = None, *, description: str, config: ConfigPath = None,
          aliases: Mapping[str, Alias] | None = None, resolve: Callable[[str], Any] | None = None) -> T:
    """``[--config FILE] [key=value ...]`` (and the former flags) -> a validated ``cls``; bad input exits with
    status 2 and one line. ``config`` is the default FILE, or a function of the overrides choosing it (or None: the
    dataclass's defaults); ``resolve`` maps a FILE before it is read (e.g. to the repository's copy). The config's
    own validation may raise any :class:`~gsco.errors.GscoError` (e.g. an unknown dataset)."""
    aliases = aliases or {}
    parser = _parser(cls, description, config, aliases)
    args = parser.parse_intermixed_args(argv)
    try:
        values = _alias_values(cls, args, aliases)
        values.update(parse_overrides(args.overrides, cls))
        path = args.config or (config(values) if callable(config) else config)
        if path is not None and resolve is not None:
            path = resolve(str(path))
        return load_config(cls, path, values)
    except (GscoError, ValueError) as exc:
        parser.exit(BAD_INPUT, f"error: {exc}\n")


def command(cls: type[T], run: Callable[[T], int | None], *, description: str, config: ConfigPath = None,
            aliases: Mapping[str, Alias] | None = None,
            resolve: Callable[[str], Any] | None = None) -> Callable[[list[str] | None], int]:
    """An entry point's ``main(argv) -> exit status``: parse as :func:`parse`, then ``run(cfg)`` (which prints what
    it made); a :class:`~gsco.errors.GscoError` (a bad key, file, dataset or model folder, a held output folder), a
    ValueError / RuntimeError of a library reading bad input, or an operating-system error is one ``error: ...``
    line and status 2
    (``GSCO_TRACEBACK=1`` shows its traceback instead). Under torchrun the process stops with its launcher."""

    def main(argv: list[str] | None = None) -> int:
        from gsco.runtime import follow_launcher, setup_logging

        cfg = parse(cls, argv, description=description, config=config, aliases=aliases, resolve=resolve)
        setup_logging()
        follow_launcher()
        try:
            status = run(cfg)
        except (GscoError, ValueError, RuntimeError, OSError) as exc:
            if os.environ.get("GSCO_TRACEBACK", "") not in ("", "0"):
                raise
            print(f"error: {exc}", file=sys.stderr)
            return BAD_INPUT
        return int(status or 0)

    main.__doc__ = description
    return main
