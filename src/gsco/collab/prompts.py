"""Filling GSCo's diagnosis prompt, as the reference (sunanhe/MedDr ``inference_gsco.py``) does.

The reference writes its prompt as a triple-quoted block, one sentence per line, and turns the block's newlines into
spaces when it defines it — so the prompt starts and ends with a space. Per case it then replaces ``###RAD###`` (the
diagnoses of the most similar training cases) and ``###MOED###`` (the diagnoses of the specialist models) by the
label names joined with commas and no spaces (``tumor,tumor,normal``); the hints themselves are inserted as they
are. A template may use one, both or neither placeholder. Multi-label hints are label sets as words (``effusion and
mass``, ``no finding``), joined the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

from gsco.data.registry import NO_FINDING

RAD, MOED = "###RAD###", "###MOED###"

def fill_gsco_prompt(template: str, rad: Sequence[str] | None = None, moed: Sequence[str] | None = None,
                     sep: str = ",") -> str:
    """``template`` (its newlines made spaces, as the reference's definition does) with ``###RAD###`` and then
    ``###MOED###`` replaced by the hints joined with ``sep``; a placeholder present without hints is an error."""
    text = template.replace("\n", " ")
    for placeholder, hints, name in ((RAD, rad, "rad"), (MOED, moed, "moed")):
        if placeholder in text:
            if not hints:
                raise ValueError(f"the template uses {placeholder} but the case has no {name} hints")
            text = text.replace(placeholder, sep.join(hints))
    return text


def options_text(options: Sequence[str]) -> str:
    """``'normal', 'tumor'`` — how the reference lists the possible diagnoses."""
    return ", ".join(f"'{o}'" for o in options)


def rad_counts(rad: Sequence[str], options: Sequence[str]) -> list[str]:
    """RAD as evidence: ``['tumor: 7 of 10 similar cases', 'normal: 3 of 10 similar cases']``, most frequent
    first (ties in option order)."""
    counts = [(sum(r == o for r in rad), i, o) for i, o in enumerate(options)]
    return [f"{o}: {n} of {len(rad)} similar cases" for n, _, o in sorted(counts, key=lambda c: (-c[0], c[1])) if n]


def moed_with_probabilities(moed: Sequence[str], probabilities: Sequence[float]) -> list[str]:
    """MoED as evidence: ``['tumor (p=0.93)', 'normal (p=0.61)']`` — each specialist's label and its probability."""
    return [f"{label} (p={p:.2f})" for label, p in zip(moed, probabilities)]


def rad_counts_multilabel(neighbours: Sequence[Sequence[str]], options: Sequence[str],
                          none: str = NO_FINDING) -> list[str]:
    """Multi-label RAD as evidence: how many of the similar cases carry each label (``no finding`` for those with
    none), most frequent first: ``['no finding: 6 of 10 similar cases', 'effusion: 3 of 10 similar cases']``."""
    counts = [(sum(o in set(n) for n in neighbours), i, o) for i, o in enumerate(options)]
    counts.append((sum(not n for n in neighbours), len(options), none))
    return [f"{o}: {n} of {len(neighbours)} similar cases" for n, _, o in sorted(counts, key=lambda c: (-c[0], c[1]))
            if n]


def moed_with_probabilities_multilabel(moed_labels: Sequence[Sequence[str]], probabilities: Sequence[Sequence[float]],
                                       options: Sequence[str], none: str = NO_FINDING) -> list[str]:
    """Multi-label MoED as evidence, per specialist: ``effusion (p=0.71) and mass (p=0.55)``, or
    ``no finding (max p=0.31)`` when it predicts no label (``probabilities``: its probability for every option)."""
    hints = []
    for labels, probs in zip(moed_labels, probabilities):
        p = dict(zip(options, probs))
        hints.append(" and ".join(f"{lab} (p={p[lab]:.2f})" for lab in labels) if labels
                     else f"{none} (max p={max(probs):.2f})")
    return hints
