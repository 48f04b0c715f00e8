"""One command line for every entry point.

    python -m gsco.<tool> [--config FILE] [key=value ...]

A tool's settings are one config dataclass (:mod:`gsco.config`): ``FILE`` gives values and ``key=value`` overrides
them, with keys named exactly as in the YAML. Exit status everywhere: 0 done, 2 bad input (one
line on stderr naming the key or file and what was expected; ``GSCO_TRACEBACK=1`` shows the traceback); anything
else is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable, TypeVar

import yaml

from gsco.config import config_sections, key_docs, load_config, parse_overrides
from gsco.errors import GscoError

T = TypeVar("T")
BAD_INPUT = 2


ConfigPath = str | Path | Callable[[dict], "str | Path | None"] | None


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


def _parser(cls: type, description: str, config: ConfigPath) -> argparse.ArgumentParser:
    epilog = "keys (default; meaning):\n" + "\n".join(_key_lines(cls))
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=epilog + "\nexit status: 0 done, 2 bad input (one line naming the key or file)")
    shown = config if isinstance(config, (str, Path)) else ("chosen from the keys" if config else "none")
    parser.add_argument("--config", default=None, metavar="FILE", help=f"YAML config (default: {shown})")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="set any key (see 'keys' below)")
    return parser


def parse(cls: type[T], argv: list[str] | None = None, *, description: str, config: ConfigPath = None,
          resolve: Callable[[str], Any] | None = None) -> T:
    """``[--config FILE] [key=value ...]`` -> a validated ``cls``; bad input exits with
    status 2 and one line. ``config`` is the default FILE, or a function of the overrides choosing it (or None: the
    dataclass's defaults); ``resolve`` maps a FILE before it is read (e.g. to the repository's copy). The config's
    own validation may raise any :class:`~gsco.errors.GscoError` (e.g. an unknown dataset)."""
    parser = _parser(cls, description, config)
    args = parser.parse_intermixed_args(argv)
    try:
        values = parse_overrides(args.overrides, cls)
        path = args.config or (config(values) if callable(config) else config)
        if path is not None and resolve is not None:
            path = resolve(str(path))
        return load_config(cls, path, values)
    except (GscoError, ValueError) as exc:
        parser.exit(BAD_INPUT, f"error: {exc}\n")


def command(cls: type[T], run: Callable[[T], int | None], *, description: str, config: ConfigPath = None,
            resolve: Callable[[str], Any] | None = None) -> Callable[[list[str] | None], int]:
    """An entry point's ``main(argv) -> exit status``: parse as :func:`parse`, then ``run(cfg)`` (which prints what
    it made); a :class:`~gsco.errors.GscoError` (a bad key, file, dataset or model folder, a held output folder), a
    ValueError / RuntimeError of a library reading bad input, or an operating-system error is one ``error: ...``
    line and status 2
    (``GSCO_TRACEBACK=1`` shows its traceback instead). Under torchrun the process stops with its launcher."""

    def main(argv: list[str] | None = None) -> int:
        from gsco.runtime import follow_launcher, setup_logging

        cfg = parse(cls, argv, description=description, config=config, resolve=resolve)
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
