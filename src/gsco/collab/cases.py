"""GSCo's cases and the prompts their arms ask: reading a case file (labels checked against the task's options),
each arm's template and filled prompt, and which arms can run on the cases (an arm whose evidence the cases lack is
skipped with a line saying why)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from gsco.collab.arms import ARMS, generalist_arms
from gsco.collab.config import GscoConfig
from gsco.collab.tasks import Task
from gsco.config import ConfigError
from gsco.data.diagnosis_questions import prompt_from_sentences
from gsco.runtime import read_json

logger = logging.getLogger(__name__)


def template_for(cfg: GscoConfig, arm: str, task: Task) -> str:
    """The arm's prompt template: intro (``{modality}`` and ``{options}`` filled in), the hint sentences the arm
    uses, outro (the task's own when the config gives none), put together as ``prompt_style`` says."""
    from gsco.collab.prompts import options_text

    parts = [cfg.intro.format(modality=task.modality, options=options_text(task.options))]
    if ARMS[arm].rad:
        parts.append(cfg.rad_sentence)
    if ARMS[arm].moed:
        parts.append(cfg.moed_sentence)
    parts.append(cfg.outro if cfg.outro is not None else task.default_outro())
    return prompt_from_sentences([p for p in parts if p], cfg.prompt_style)


def missing_evidence(arm: str, cases: list[dict]) -> str | None:
    """Why ``arm`` cannot run on these cases (None: it can): the cases that lack what its prompt needs."""
    for key in ARMS[arm].evidence if arm in ARMS else ():
        lacking = [c for c in cases if not c.get(key) or _incomplete(c[key])]
        if lacking:
            return (f"{len(lacking)} of {len(cases)} cases have no complete {key!r} (e.g. case "
                    f"{lacking[0].get('id')}); python -m gsco.collab.build_cases writes it")
    return None


def _incomplete(values) -> bool:
    return isinstance(values, list) and any(v is None or _incomplete(v) for v in values)


def read_cases(path: Path, task: Task | None = None) -> list[dict]:
    """The case file's cases; with ``task``, each label is checked against its options (a multi-label case's
    ``label`` may be a list of options or the words ``x and y`` / ``no finding``)."""
    if not path.is_file():
        raise ConfigError(f"key 'cases': {path} does not exist (build it with python -m gsco.collab.build_cases)")
    cases = read_json(path, "case file (JSON)", error=ConfigError)
    if not isinstance(cases, list):
        raise ConfigError(f"{path}: expected a JSON list of cases")
    for i, case in enumerate(cases):
        missing = [k for k in ("image", "label") if k not in case]
        if missing:
            raise ConfigError(f"{path} case {i}: lacks {missing}")
        case.setdefault("id", str(i))
        if task is not None:
            case["label"] = task.checked_label(case["label"], f"{path} case {i} ({case['id']})")
    return cases


def fill_case(cfg: GscoConfig, arm: str, case: dict, task: Task) -> str:
    from gsco.collab import prompts

    spec = ARMS[arm]
    rad = spec.rad(case, task) if spec.rad else case.get("rad")
    moed = spec.moed(case, task) if spec.moed else case.get("moed")
    template = template_for(cfg, arm, task)
    return prompts.fill_gsco_prompt(template, rad=rad, moed=moed, sep=cfg.hint_separator)


def check_prompts(cfg: GscoConfig, arms: list[str], cases: list[dict], task: Task) -> None:
    """Every prompt of every arm is built before anything is generated: a hint that names no option, or evidence an
    arm cannot read, stops the run at once naming the arm and the case (not after the other arms have run)."""
    for arm in arms:
        for case in cases:
            try:
                fill_case(cfg, arm, case, task)
            except (ConfigError, KeyError, TypeError, ValueError, IndexError) as exc:
                detail = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
                raise ConfigError(f"{cfg.cases}: arm {arm}, case {case.get('id')}: its prompt cannot be built "
                                  f"({detail})") from None


def choose_arms(cfg: GscoConfig, cases: list[dict], task: Task, specialists: dict) -> tuple[list[str], dict[str, str]]:
    """The arms to run (``arms``, default all) and those skipped, each with why: an arm whose evidence the cases
    lack is skipped with one line, so a reference case file runs every arm it can."""
    asked = generalist_arms(task.report)
    unknown = [a for a in cfg.arms or [] if a not in asked and not re.fullmatch(r"specialist_(\d+|vote)", a)]
    if unknown:
        raise ConfigError(f"key 'arms': {unknown} are not arms; choose from specialist_<i>, "
                          f"{'specialist_vote, ' if task.votes else ''}{', '.join(asked)}")
    n_predictions = min((len(c.get("moed") or []) for c in cases), default=0)
    most = max((len(c.get("moed") or []) for c in cases), default=0)
    # every specialist some case has a prediction of: an arm that cannot run is listed with why, never dropped
    possible = [f"specialist_{j}" for j in range(most)] + (["specialist_vote"] if most > 1 and task.votes else [])
    wanted = cfg.arms or list(dict.fromkeys([*specialists, *possible])) + list(asked)
    skipped = {}
    for arm in wanted:
        if arm.startswith("specialist_") and arm not in specialists:
            short = [c for c in cases if len(c.get("moed") or []) < most]
            skipped[arm] = (f"{len(short)} of {len(cases)} cases carry fewer than {most} specialist predictions "
                            f"('moed', e.g. case {short[0].get('id')}); python -m gsco.collab.build_cases writes them"
                            if short and most > n_predictions else
                            f"the cases carry {n_predictions} specialist prediction(s) ('moed')"
                            + ("; a vote needs two" if arm == "specialist_vote" else ""))
        elif arm in asked and (reason := missing_evidence(arm, cases)):
            skipped[arm] = reason
    for arm, reason in skipped.items():
        logger.warning("arm %s skipped: %s", arm, reason)
    return [a for a in wanted if a not in skipped], skipped
