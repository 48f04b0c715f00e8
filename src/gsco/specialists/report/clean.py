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

from typing import Literal

Dataset = Literal["iu_xray", "mimic_cxr"]

_NUMBERING = [("1. ", ""), *((f". {n}. ", ". ") for n in range(2, 6)), *((f" {n}. ", ". ") for n in range(2, 6))]
_IU_REMOVED = set(".,?;*!%^&_+()]{}") | {chr(c) for c in range(ord(":"), ord("[") + 1)}
_MIMIC_REMOVED = set(".,?;*!%^&_+()[]{}")
_DELETED = "\"/\\'"


def _replace_times(text: str, old: str, new: str, times: int) -> str:
    for _ in range(times):
        text = text.replace(old, new)
    return text


def _sentence(text: str, removed: set[str]) -> str:
    for ch in _DELETED:
        text = text.replace(ch, "")
    return "".join(ch for ch in text.strip().lower() if ch not in removed)


def clean_report(report: str, dataset: Dataset = "iu_xray") -> str:
    """The cleaned report, e.g. ``'The heart is normal. No effusion.'`` -> ``'the heart is normal . no effusion .'``."""
    if dataset == "iu_xray":
        text, removed = _replace_times(report, "..", ".", 3), _IU_REMOVED
    elif dataset == "mimic_cxr":
        text = report.replace("\n", " ")
        text = _replace_times(text, "__", "_", 7)
        text = _replace_times(text, "  ", " ", 6)
        text = _replace_times(text, "..", ".", 8)
        removed = _MIMIC_REMOVED
    else:
        raise ValueError(f"report cleaning: dataset {dataset!r} is not one of iu_xray, mimic_cxr")
    for old, new in _NUMBERING:
        text = text.replace(old, new)
    if dataset == "mimic_cxr":
        text = text.replace(":", " :")
    sentences = text.strip().lower().split(". ")
    return " . ".join(_sentence(s, removed) for s in sentences) + " ."
