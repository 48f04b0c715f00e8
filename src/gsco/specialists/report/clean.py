"""Report cleaning as R2Gen (and R2GenGPT after it) does it, so scores are comparable with published numbers.

Both recipes lower-case the report, drop list numbering ("1. ", " 2. " ...), collapse repeated dots, split it into
sentences at ". ", strip punctuation from each sentence and join them back as ``sentence . sentence .``.

- ``iu_xray``: the punctuation removed is ``. , ? ; * ! % ^ & _ + ( ) ] { }`` plus every character from ``:`` to
  ``[`` in ASCII order (``: ; < = > ? @``, capitals, ``[``) — R2Gen's character class holds the range ``:-\\[``.
  Hyphens and digits are kept.
- ``mimic_cxr``: newlines become spaces, runs of underscores, spaces and dots are shortened, ``:`` gets a space
  before it and is kept; the punctuation removed is ``. , ? ; * ! % ^ & _ + ( ) [ ] { }``.

Quotes (``" '``), slashes and backslashes are deleted in both. Empty sentences are kept (R2Gen's filter never
drops one), so ``a. . b`` keeps an empty slot.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from gsco.config import ConfigError

_NUMBERING = [("1. ", ""), *((f". {n}. ", ". ") for n in range(2, 6)), *((f" {n}. ", ". ") for n in range(2, 6))]
_DELETED = "\"/\\'"


def _replace_times(text: str, old: str, new: str, times: int) -> str:
    for _ in range(times):
        text = text.replace(old, new)
    return text


@dataclasses.dataclass(frozen=True)
class CleaningRule:
    """One dataset's cleaning: ``prepare`` runs first, list numbering is dropped, then ``after_numbering``; the
    report is split into sentences at ``". "`` and ``removed`` characters are stripped from each sentence."""

    removed: frozenset[str]
    prepare: Callable[[str], str] = lambda text: text
    after_numbering: Callable[[str], str] = lambda text: text


def _mimic_prepare(text: str) -> str:
    text = _replace_times(text.replace("\n", " "), "__", "_", 7)
    return _replace_times(_replace_times(text, "  ", " ", 6), "..", ".", 8)


# dataset -> its rule; the report specialist's ``dataset`` and GSCo's ``report_cleaning`` name an entry
RULES: dict[str, CleaningRule] = {
    "iu_xray": CleaningRule(frozenset(".,?;*!%^&_+()]{}") | {chr(c) for c in range(ord(":"), ord("[") + 1)},
                            prepare=lambda text: _replace_times(text, "..", ".", 3)),
    "mimic_cxr": CleaningRule(frozenset(".,?;*!%^&_+()[]{}"), prepare=_mimic_prepare,
                              after_numbering=lambda text: text.replace(":", " :")),
}


def register_cleaning(name: str, rule: CleaningRule) -> CleaningRule:
    if name in RULES or name == "none":
        raise ValueError(f"report cleaning {name!r} exists already")
    RULES[name] = rule
    return rule


def _sentence(text: str, removed: frozenset[str]) -> str:
    for ch in _DELETED:
        text = text.replace(ch, "")
    return "".join(ch for ch in text.strip().lower() if ch not in removed)


def clean_report(report: str, dataset: str = "iu_xray") -> str:
    """The cleaned report, e.g. ``'The heart is normal. No effusion.'`` -> ``'the heart is normal . no effusion .'``."""
    if dataset not in RULES:
        raise ConfigError(f"report cleaning: dataset {dataset!r} is not one of {', '.join(RULES)}")
    rule = RULES[dataset]
    text = rule.prepare(report)
    for old, new in _NUMBERING:
        text = text.replace(old, new)
    sentences = rule.after_numbering(text).strip().lower().split(". ")
    return " . ".join(_sentence(s, rule.removed) for s in sentences) + " ."
