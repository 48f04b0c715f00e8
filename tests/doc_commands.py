"""The commands README.md, INSTALLATION.md and DATASET.md show, and a runner that runs one as a user would.

A documented command is a line of a fenced code block, or an inline code span, that runs ``bash <script>.sh``,
``python -m gsco....``, ``torchrun ... -m gsco....`` or ``python demo.py``. Tests run them with
:func:`run_documented`, passing the command exactly as the docs write it; the runner refuses any text the docs do not
show (so docs and tests cannot drift apart), and ``tests/e2e/test_documented_commands.py`` fails when a documented
command is run by no test. A test shortens a command only by replacing placeholder values (``/path/to/meddr-hf``,
``GPUS=8``) and appending ``key=value`` overrides; it never swaps the command for a function call.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "INSTALLATION.md", "DATASET.md")
RUNS = re.compile(r"(^|[\s;(])(bash\s+\S+\.sh\b|python\s+-m\s+gsco\.|python\s+demo\.py\b|torchrun\s.*-m\s+gsco\.)")
ENTRY = re.compile(r"bash\s+(\S+\.sh)\b|-m\s+(gsco\.[\w.]+)|python\s+(demo\.py)\b")


def normalize(command: str) -> str:
    return " ".join(command.split())


def entry_point(command: str) -> str:
    """``inference_gsco.sh``, ``gsco.collab.build_cases`` or ``demo.py``."""
    match = ENTRY.search(command)
    if match is None:
        raise ValueError(f"no entry point in {command!r}")
    return next(g for g in match.groups() if g)


def is_bare(command: str) -> bool:
    """A mention of an entry point with nothing else (``python -m gsco.collab.hint_samples``)."""
    return normalize(command) in ("python -m " + entry_point(command), "bash " + entry_point(command),
                                  "python " + entry_point(command))


def _fenced_commands(text: str) -> list[tuple[str, int]]:
    commands, block = [], None
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip().startswith("```"):
            block = None if block is not None else line.strip()[3:]
            i += 1
            continue
        if block is not None and block in ("", "bash", "sh"):
            start = i
            logical = line
            while logical.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                logical = logical.rstrip()[:-1] + " " + lines[i]
            code = _strip_comment(logical).strip()
            if code and RUNS.search(code):
                commands.append((code, start + 1))
        i += 1
    return commands


def _strip_comment(line: str) -> str:
    """The line without a trailing ``# comment`` (a ``#`` inside quotes stays)."""
    quote = None
    for k, ch in enumerate(line):
        if ch in "'\"" and quote in (None, ch):
            quote = None if quote else ch
        elif ch == "#" and quote is None and (k == 0 or line[k - 1].isspace()):
            return line[:k]
    return line


def _inline_commands(text: str) -> list[tuple[str, int]]:
    prose = re.sub(r"```.*?```", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
    out = []
    for match in re.finditer(r"`([^`]+)`", prose):
        code = match.group(1)
        if RUNS.search(code):
            out.append((code, prose.count("\n", 0, match.start()) + 1))
    return out


@lru_cache(maxsize=1)
def documented_commands() -> dict[str, str]:
    """Each documented command (whitespace normalised) -> where it first appears (``FILE:line``)."""
    found: dict[str, str] = {}
    for name in DOCS:
        text = (REPO / name).read_text()
        for command, line in _fenced_commands(text) + _inline_commands(text):
            found.setdefault(normalize(command), f"{name}:{line}")
    return found


def documented_argv(command: str, replace: dict[str, str] | None = None, append: list[str] | tuple = ()) -> list[str]:
    """``["bash", "-c", text]`` for a documented command: ``replace`` swaps placeholder values (each must occur),
    ``append`` adds ``key=value`` overrides. Text the docs do not show is refused."""
    if normalize(command) not in documented_commands():
        raise AssertionError(f"not a command the docs show (docs changed?): {command!r}")
    text = normalize(command)
    for old, new in (replace or {}).items():
        if old not in text:
            raise AssertionError(f"{old!r} is not in the documented command {text!r}")
        text = text.replace(old, new)
    return ["bash", "-c", text + "".join(" " + shlex.quote(str(a)) for a in append)]


def documented_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a user's shell would have: ``python``/``torchrun`` are this interpreter's."""
    return {**os.environ, "PYTHON": sys.executable,
            "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""), **(env or {})}


def run_documented(command: str, replace: dict[str, str] | None = None, append: list[str] | tuple = (),
                   env: dict[str, str] | None = None, timeout: float = 600, check: bool = True,
                   cwd: Path = REPO) -> subprocess.CompletedProcess:
    """Run a documented command in bash (from the repository root unless ``cwd``); with ``check`` a non-zero exit
    fails with the command's stderr."""
    argv = documented_argv(command, replace, append)
    proc = subprocess.run(argv, cwd=cwd, env=documented_env(env), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"`{argv[-1]}` exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    return proc
