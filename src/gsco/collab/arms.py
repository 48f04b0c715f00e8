"""GSCo's generalist arms, one table: what evidence each reads from a case and how it writes its hints.

An arm's prompt is the config's intro, then ``rad_sentence`` (with ``###RAD###``) when the arm writes RAD hints,
then ``moed_sentence`` (with ``###MOED###``) when it writes MoED hints, then the outro. Prompt building, case
filling, hint samples (whose --help lists each arm's ``about``) and config validation all read
:data:`ARMS`; adding an arm is one :func:`register_arm` call (tests run over every entry).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from gsco.config import ConfigError

Hints = Callable[[dict, "object"], list[str]]  # (case, Task) -> the hints for one placeholder


@dataclasses.dataclass(frozen=True)
class Arm:
    name: str
    evidence: tuple[str, ...] = ()  # case keys it needs, complete (no null inside); absent: the arm is skipped
    rad: Hints | None = None  # writes the ###RAD### hints; None: the prompt has no RAD sentence
    moed: Hints | None = None  # writes the ###MOED### hints; None: no MoED sentence
    report: bool = True  # also asked on report-generation tasks
    about: str = ""  # one line for the docs


ARMS: dict[str, Arm] = {}


def register_arm(arm: Arm) -> Arm:
    if arm.name in ARMS or arm.name.startswith("specialist_"):
        raise ValueError(f"arm {arm.name!r} exists already (or names a specialist arm)")
    ARMS[arm.name] = arm
    return arm


def generalist_arms(report: bool) -> tuple[str, ...]:
    return tuple(name for name, arm in ARMS.items() if arm.report or not report)


def label_sets(case: dict, key: str, task) -> list[list[str]]:
    """A multi-label case's ``rad`` or ``moed`` hints as label sets (``rad_labels`` / ``moed_labels`` when the
    case file has them, else the words parsed)."""
    if f"{key}_labels" in case:
        return case[f"{key}_labels"]
    sets = [task.parse(h) for h in case.get(key) or []]
    if any(s is None for s in sets):
        raise ConfigError(f"case {case['id']}: a {key} hint names none of the options {task.options} (nor "
                          f"{task.none!r}): {case.get(key)}")
    return sets


def _rad(case: dict, task) -> list[str]:
    return case.get("rad") or []


def _moed(case: dict, task) -> list[str]:
    return case.get("moed") or []


def _rad_counts(case: dict, task) -> list[str]:
    from gsco.collab import prompts

    if task.multi_label:
        return prompts.rad_counts_multilabel(label_sets(case, "rad", task), task.options, task.none)
    return prompts.rad_counts(_rad(case, task), task.options)


def _moed_prob(case: dict, task) -> list[str]:
    from gsco.collab import prompts

    if task.multi_label:
        return prompts.moed_with_probabilities_multilabel(label_sets(case, "moed", task), case.get("moed_prob") or [],
                                                          task.options, task.none)
    return prompts.moed_with_probabilities(_moed(case, task), case.get("moed_prob") or [])


register_arm(Arm("generalist", about="the generalist alone, no hints"))
register_arm(Arm("moed", ("moed",), moed=_moed, about="the specialists' predictions (MoED)"))
register_arm(Arm("rad", ("rad",), rad=_rad, about="the labels of the most similar training cases (RAD)"))
register_arm(Arm("moed_rad", ("rad", "moed"), rad=_rad, moed=_moed, about="both: the reference's GSCo prompt"))
register_arm(Arm("rad_counts", ("rad",), rad=_rad_counts, report=False,
                 about="RAD as counts per label ('tumor: 7 of 10 similar cases')"))
register_arm(Arm("moed_prob", ("moed", "moed_prob"), moed=_moed_prob, report=False,
                 about="MoED with each specialist's probability ('tumor (p=0.93)')"))
