"""Run GSCo's ablation arms on a case file and write the table.

    python -m gsco.collab.run --config configs/gsco/breastmnist.yaml cases=... model=... [arms=[moed_rad]]
    bash inference_gsco.sh                 (env MODEL, CASES, IMAGE_ROOT, DATASET, OUT_DIR, BATCH_SIZE, GPUS, ARMS)

Arms: ``specialist_<i>`` (each specialist's own prediction) and ``specialist_vote`` (their majority; ties go to
the first specialist's label) need no generation; ``generalist`` (no hints), ``moed``, ``rad``, ``moed_rad`` (the
reference's prompt) and the evidence variants ``rad_counts`` / ``moed_prob`` ask the generalist. Each generalist
arm appends ``{out_dir}/{arm}_predictions.jsonl`` batch by batch (a re-run resumes); with ``share_prefix`` (the
default) a case's arms are asked in one batch, so the image and the prompt prefix they share are computed once.
Answers are read as sentences (``answer_parsing: natural``: the dataset's answer aliases, negations, alternatives;
:mod:`gsco.metrics.answers`), or by the first option's own words named (``literal``); unparsed answers count as wrong
and are reported. The scores always read the stored answers with the current rule (the ``parsed`` field of a
predictions row is for reading).

Multi-label datasets (the registry's task, or ``multi_label: true``): every option named is the answer, "no
finding" names none (``no_finding``); the vote keeps the labels more than half of the specialists predict (a tie
follows the first); scores are exact-match accuracy, macro/micro-F1 and per-label recall.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Literal

from gsco.cli import command
from gsco.collab.arms import ARMS, generalist_arms, label_sets
from gsco.config import ConfigError, config_to_dict
from gsco.data.diagnosis_questions import INTRO, OUTRO_MULTI, OUTRO_SINGLE, prompt_from_sentences
from gsco.data.registry import NO_FINDING
from gsco.data.render import RENDER_KEYS, RenderSettings
from gsco.evaluation import check_skipped, run_evaluation
from gsco.generalist.backends import GENERALIST_KEYS, GeneralistSettings
from gsco.runtime import output_folder, repo_file, write_json

logger = logging.getLogger(__name__)



@dataclasses.dataclass
class GscoConfig(RenderSettings, GeneralistSettings):
    # sections: in a YAML file a mapping of their keys; on the command line section.key=value or key=value
    SECTIONS = {
        "render": RENDER_KEYS,  # how DICOM / NIfTI inputs become images (gsco.data.render)
        "build": ("specialists", "rad_from", "rad_k", "data_path"),
        "prompt": ("options", "modality", "multi_label", "no_finding", "intro", "rad_sentence", "moed_sentence",
            "outro", "prompt_style", "hint_separator"),
        "generalist": GENERALIST_KEYS,  # gsco.generalist.backends.GeneralistSettings: local or served
        "generation": ("eval_batch_size", "max_new_tokens", "share_prefix"),
        "scoring": ("answer_parsing", "report_cleaning", "report_tokenize", "meteor"),
    }
    # --- what and where ---
    dataset: str = "breastmnist"  # a registered dataset: its options, modality and label kind
    task: Literal["diagnosis", "report"] = "diagnosis"  # diagnosis (single- or multi-label) or report generation
    extra_datasets: str | None = None  # your own dataset registry YAML (DATASET.md)
    cases: str = "outputs/gsco/breastmnist_cases.json"  # the case file (build_cases writes it, the arms read it)
    image_root: str | None = None  # case images are relative to this (default: the case file's folder)
    out_dir: str = "outputs/gsco"  # {arm}_predictions.jsonl, ablation.md / .json, confusion matrices
    overwrite: bool = False  # start every arm over (a re-run with another model or case file is refused otherwise)
    max_skipped_fraction: float = 0.05  # an arm that skipped more cases than this: exit status 2 after the table
    arms: list[str] | None = None  # null: every arm (the specialists', their vote, the generalist's)
    # --- build: the case file (python -m gsco.collab.build_cases) ---
    specialists: list[str] | None = None  # the specialists' {...}_results.json files (MoED, in this order)
    rad_from: int = 0  # which of them retrieves the similar training cases (RAD)
    rad_k: int = 10  # similar cases per test case (RAD hints)
    data_path: str | None = None  # where the dataset's files are (the test images are written beside the cases)
    # --- prompt ---
    options: list[str] | None = None  # null: the dataset's label names from the registry
    modality: str | None = None  # null: the registry's modality
    multi_label: bool | None = None  # null: the registry's task
    no_finding: str = NO_FINDING  # multi-label: the answer (and hint) for a case with none of the labels
    intro: str = INTRO  # the first sentence(s); {modality} and {options} are filled in
    rad_sentence: str = "The diagnoses of the most similar cases are ###RAD###."  # RAD arms: ###RAD### -> hints
    moed_sentence: str = "The diagnoses of the specialist models are ###MOED###."  # MoED arms: ###MOED### -> hints
    outro: str | None = None  # null: "only one option" (single-label) or "every diagnosis that applies" (multi-label)
    # reference: the sentences as the lines of the reference's triple-quoted prompt whose newlines become spaces, so
    # the prompt starts and ends with a space (inference_gsco.py); stripped: no space before or after
    prompt_style: Literal["reference", "stripped"] = "reference"
    hint_separator: str = ","  # between the hints of one placeholder (the reference: a comma)
    # --- generation ---
    eval_batch_size: int = 8  # questions per generate() call (with share_prefix: a case's arms are never split)
    max_new_tokens: int = 512  # the reference: greedy, max_new_tokens 512
    share_prefix: bool = True  # ask a case's arms together: image + shared prompt prefix computed once (same answers)
    # --- scoring ---
    # diagnosis answers: natural (sentences: aliases, negation; gsco.metrics.answers) or literal (first option named)
    answer_parsing: Literal["natural", "literal"] = "natural"
    # report generation: answers cleaned as R2Gen cleans references, then scored as the specialist's
    report_cleaning: str = "iu_xray"  # a rule of report/clean.py RULES (iu_xray, mimic_cxr), or none
    report_tokenize: Literal["none", "ptb"] = "none"  # none: score the cleaned text as it is (R2GenGPT); ptb: PTB
    meteor: bool = True  # METEOR needs Java

    def validate(self) -> None:
        super().validate()  # the render keys
        self.check_generalist()
        if self.eval_batch_size < 1 or self.max_new_tokens < 1:
            raise ConfigError("keys eval_batch_size and max_new_tokens must be at least 1")
        if not 0 <= self.max_skipped_fraction <= 1:
            raise ConfigError(f"key 'max_skipped_fraction': must be between 0 and 1, got {self.max_skipped_fraction}")
        from gsco.specialists.report.clean import RULES

        if self.report_cleaning not in (*RULES, "none"):
            raise ConfigError(f"key 'report_cleaning': {self.report_cleaning!r}; choose from {[*RULES, 'none']}")


@dataclasses.dataclass
class Task:
    """What the arms are asked and how answers are read: the options, modality words and label kind."""

    options: list[str]
    modality: str
    multi_label: bool = False
    none: str = NO_FINDING
    report: bool = False  # report generation: answers are reports, scored with BLEU/ROUGE-L/CIDEr
    cleaning: str = "iu_xray"
    tokenize: str = "none"
    meteor: bool = True
    aliases: dict | None = None  # {option: other words for it} (the registry's answer_aliases)
    parsing: str = "natural"  # natural | literal (gsco.metrics.answers)

    @classmethod
    def of(cls, cfg: GscoConfig) -> "Task":
        from gsco.data.registry import get_dataset_info

        if cfg.task == "report":
            return cls([], cfg.modality or "chest X-ray", report=True, cleaning=cfg.report_cleaning,
                       tokenize=cfg.report_tokenize, meteor=cfg.meteor)
        from gsco.data.registry import answer_aliases

        info = get_dataset_info(cfg.dataset, cfg.extra_datasets)
        multi = info.multi_label if cfg.multi_label is None else cfg.multi_label
        options = list(cfg.options or info.label_names)
        return cls(options, cfg.modality or info.modality, multi, cfg.no_finding,
                   aliases=answer_aliases(options, cfg.dataset, cfg.extra_datasets), parsing=cfg.answer_parsing)

    def parse(self, answer: str):
        from gsco.metrics.answers import parse_option, parse_options

        if self.multi_label:
            return parse_options(answer, self.options, self.none, self.aliases, self.parsing)
        return parse_option(answer, self.options, self.aliases, self.parsing)

    def answer_of(self, row: dict):
        """What a predictions row contributes to the score: the report, or its answer read as this run reads
        answers (never a stored reading: the rule may have changed since)."""
        return row["answer"] if self.report else self.parse(row["answer"])

    def score(self, truth: list, predicted: list) -> dict:
        from gsco.metrics.answers import diagnosis_metrics, multilabel_metrics

        if self.report:
            from gsco.metrics.report import report_metrics
            from gsco.specialists.report.clean import clean_report

            clean = (lambda t: t) if self.cleaning == "none" else (lambda t: clean_report(t, self.cleaning))  # noqa: E731
            scores = report_metrics({str(i): t for i, t in enumerate(truth)},
                                    {str(i): clean(p) for i, p in enumerate(predicted)}, self.tokenize, self.meteor)
            return {"n": len(truth), **scores}
        if self.multi_label:
            return multilabel_metrics(truth, predicted, self.options, self.none)
        return diagnosis_metrics(truth, predicted, self.options)


def template_for(cfg: GscoConfig, arm: str, options: list[str], modality: str, multi_label: bool = False) -> str:
    """The arm's prompt template: intro, the hint sentences the arm uses, outro (put together as ``prompt_style``
    says)."""
    from gsco.collab.prompts import options_text

    parts = [cfg.intro.format(modality=modality, options=options_text(options))]
    if ARMS[arm].rad:
        parts.append(cfg.rad_sentence)
    if ARMS[arm].moed:
        parts.append(cfg.moed_sentence)
    if cfg.outro is not None:
        parts.append(cfg.outro)
    else:
        parts.append(OUTRO_MULTI.replace(NO_FINDING, cfg.no_finding) if multi_label else OUTRO_SINGLE)
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
    try:
        cases = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(cases, list):
        raise ConfigError(f"{path}: expected a JSON list of cases")
    for i, case in enumerate(cases):
        missing = [k for k in ("image", "label") if k not in case]
        if missing:
            raise ConfigError(f"{path} case {i}: lacks {missing}")
        case.setdefault("id", str(i))
        if task is not None and not task.report:
            case["label"] = _checked_label(case["label"], task, f"{path} case {i} ({case['id']})")
        elif task is not None and not isinstance(case["label"], str):
            raise ConfigError(f"{path} case {i} ({case['id']}): a report case's label is the reference report text")
    return cases


def _checked_label(label, task: Task, where: str):
    if task.multi_label:
        labels = task.parse(label) if isinstance(label, str) else label
        if not isinstance(labels, list) or any(x not in task.options for x in labels):
            raise ConfigError(f"{where}: label {label!r} is not a list of the options {task.options} "
                              f"(or {task.none!r})")
        return labels
    if label not in task.options:
        raise ConfigError(f"{where}: label {label!r} is not one of the options {task.options}")
    return label


def fill_case(cfg: GscoConfig, arm: str, case: dict, task: Task) -> str:
    from gsco.collab import prompts

    spec = ARMS[arm]
    rad = spec.rad(case, task) if spec.rad else case.get("rad")
    moed = spec.moed(case, task) if spec.moed else case.get("moed")
    template = template_for(cfg, arm, task.options, task.modality, task.multi_label)
    return prompts.fill_gsco_prompt(template, rad=rad, moed=moed, sep=cfg.hint_separator)


def check_hints(cfg: GscoConfig, cases: list[dict], task: Task) -> None:
    """Single-label diagnosis: every RAD and MoED hint must name one of the options (the specialists' arms are
    scored on them and the evidence arms count them), checked before anything runs."""
    if task.report or task.multi_label:
        return  # reports are free text; multi-label hints are read (and checked) as label sets
    for case in cases:
        for key in ("rad", "moed"):
            for hint in case.get(key) or []:
                if task.parse(str(hint)) is None:
                    raise ConfigError(f"{cfg.cases}: case {case.get('id')}: {key} hint {hint!r} names none of the "
                                      f"options {task.options}")


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


def specialist_arms(cases: list[dict], task: Task) -> dict[str, list]:
    """Each specialist's prediction and (two or more specialists) their majority vote, per case."""
    n = min(len(c.get("moed") or []) for c in cases)
    if task.report:  # each specialist's report; no vote between reports
        return {f"specialist_{j}": [c["moed"][j] for c in cases] for j in range(n)}
    if task.multi_label:
        sets = [label_sets(c, "moed", task) for c in cases]
        arms = {f"specialist_{j}": [s[j] for s in sets] for j in range(n)}
        if n > 1:
            def vote(s: list[list[str]]) -> list[str]:
                counts = Counter(x for labels in s[:n] for x in labels)
                return [o for o in task.options if 2 * counts[o] > n or (2 * counts[o] == n and o in s[0])]

            arms["specialist_vote"] = [vote(s) for s in sets]
        return arms
    arms = {f"specialist_{j}": [c["moed"][j] for c in cases] for j in range(n)}
    if n > 1:
        arms["specialist_vote"] = [max(Counter(c["moed"][:n]).items(),
                                       key=lambda kv: (kv[1], -c["moed"].index(kv[0])))[0] for c in cases]
    return arms


def choose_arms(cfg: GscoConfig, cases: list[dict], task: Task, specialists: dict) -> tuple[list[str], dict[str, str]]:
    """The arms to run (``arms``, default all) and those skipped, each with why: an arm whose evidence the cases
    lack is skipped with one line, so a reference case file runs every arm it can."""
    asked = generalist_arms(task.report)
    unknown = [a for a in cfg.arms or [] if a not in asked and not re.fullmatch(r"specialist_(\d+|vote)", a)]
    if unknown:
        raise ConfigError(f"key 'arms': {unknown} are not arms; choose from specialist_<i>, "
                          f"{'' if task.report else 'specialist_vote, '}{', '.join(asked)}")
    n_predictions = min((len(c.get("moed") or []) for c in cases), default=0)
    most = max((len(c.get("moed") or []) for c in cases), default=0)
    # every specialist some case has a prediction of: an arm that cannot run is listed with why, never dropped
    possible = [f"specialist_{j}" for j in range(most)] + (["specialist_vote"] if most > 1 and not task.report else [])
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


def run_generalist_arms(cfg: GscoConfig, arms: list[str], cases: list[dict], generalist, task: Task,
                        root: Path) -> dict[str, Path]:
    """The generalist's answers for ``arms``, each appended to its own ``{out_dir}/{arm}_predictions.jsonl`` with
    its own manifest and resume. ``share_prefix``: the work goes case by case, every arm a case still lacks in one
    batch about one opened image (the generalist computes the image and the prompt prefix the arms share once; a
    serving engine with prefix caching would reuse it likewise), ``eval_batch_size`` // arms cases per batch;
    otherwise arm after arm, ``eval_batch_size`` cases per batch."""
    paths: dict[str, Path] = {}
    for group in [arms] if cfg.share_prefix else [[arm] for arm in arms]:
        paths.update(_ask_arms(cfg, group, cases, generalist, task, root))
    return paths


def _ask_arms(cfg: GscoConfig, arms: list[str], cases: list[dict], generalist, task: Task,
              root: Path) -> dict[str, Path]:
    from functools import partial

    from gsco.data.readers import DatasetError, open_image
    from gsco.data.render import render_identity
    from gsco.evaluation import Output, answer_resumably_many, chunks
    from gsco.generalist.backends import model_or_served
    from gsco.generalist.model import quantization_identity
    from gsco.runtime import file_fingerprint

    def ask(todo: list[tuple[dict, list[str]]]):
        per_batch = max(1, cfg.eval_batch_size // len(arms))
        for chunk in chunks(todo, per_batch, f"arm {arms[0]}" if len(arms) == 1 else f"{len(arms)} arms, cases"):
            images, asked = [], []
            for case, lacking in chunk:
                path = Path(case["image"]) if Path(case["image"]).is_absolute() else root / case["image"]
                try:
                    image = open_image(path, cfg)  # one object for the case's arms: the generalist sees one image
                except DatasetError as exc:
                    logger.warning("arm %s: skipping case %s: %s", ", ".join(lacking), case["id"], exc)
                    continue
                images += [image] * len(lacking)
                asked += [(case, arm) for arm in lacking]
            if not asked:
                continue
            prompts = [fill_case(cfg, arm, c, task) for c, arm in asked]
            answers = generalist.answer(images, prompts, cfg.max_new_tokens, batch_size=len(asked),
                                        share_prefix=cfg.share_prefix)
            rows: dict[str, list[dict]] = {}
            for (c, arm), q, a in zip(asked, prompts, answers):
                if a is None:  # the served backend logged why; a re-run asks it again
                    continue
                rows.setdefault(arm, []).append({"question_id": str(c["id"]), "question": q, "answer": a,
                                                 "annotation": c["label"],
                                                 **({} if task.report else {"parsed": task.parse(a)}),
                                                 "image": c["image"]})
            yield rows

    common = {**model_or_served(cfg), **quantization_identity(cfg), **render_identity(cfg),
              "cases": file_fingerprint(repo_file(cfg.cases))}
    outputs = {arm: Output(Path(cfg.out_dir) / f"{arm}_predictions.jsonl",
                           {**common, "arm": arm, "image_root": str(root.resolve()),
                            "max_new_tokens": cfg.max_new_tokens},
                           partial(_arm_question, cfg, arm, task),
                           f"arm {arm}: {{done}} of {{total}} cases answered, {{todo}} to go")
               for arm in arms}
    answer_resumably_many(cases, outputs, ask, id_of=lambda c: str(c["id"]), overwrite=cfg.overwrite)
    return {arm: o.path for arm, o in outputs.items()}


def _arm_question(cfg: GscoConfig, arm: str, task: Task, case: dict) -> str:
    return fill_case(cfg, arm, case, task)


def run(cfg: GscoConfig) -> dict:
    """Every arm on the case file, scored, in one table (``ablation.md`` / ``.json``): every process answers its
    share of the cases, the first one scores and writes the table; one run per out_dir at a time."""
    task = Task.of(cfg)
    cases_path = repo_file(cfg.cases)
    cases = read_cases(cases_path, task)
    check_hints(cfg, cases, task)
    specialists = specialist_arms(cases, task)
    arms, skipped = choose_arms(cfg, cases, task, specialists)
    if not arms:
        raise ConfigError(f"{cases_path}: none of the arms can run on these cases ({'; '.join(skipped.values())})")
    check_prompts(cfg, [a for a in arms if a not in specialists], cases, task)
    output_folder(cfg.out_dir)

    def answer() -> dict[str, Path]:
        asked = [arm for arm in arms if arm not in specialists]
        if not asked:
            return {}
        from gsco.evaluation import process_device
        from gsco.generalist.backends import load_generalist

        generalist = load_generalist(cfg, process_device(cfg.device))
        root = Path(cfg.image_root) if cfg.image_root else cases_path.parent
        return run_generalist_arms(cfg, asked, cases, generalist, task, root)

    def score(paths: dict[str, Path]) -> dict:
        return score_arms(cfg, task, cases, cases_path, arms, specialists, paths, skipped)

    return run_evaluation(cfg.out_dir, answer, score)


def score_arms(cfg: GscoConfig, task: Task, cases: list[dict], cases_path: Path, arms: list[str],
               specialists: dict, paths: dict[str, Path], skipped: dict[str, str]) -> dict:
    """The ablation table: each arm scored (a specialist from the case file, the generalist's from its
    predictions file), written as ablation.json / .md with the charts; then the skip check."""
    from gsco.metrics.plots import plot_answer_confusion, plot_metric_bars
    from gsco.runtime import read_predictions

    truth = [c["label"] for c in cases]
    table: dict[str, dict] = {}
    for arm in arms:
        if arm in specialists:
            table[arm] = task.score(truth, specialists[arm])
            continue
        rows = {r["question_id"]: r for r in read_predictions(paths[arm])}
        answered = [c for c in cases if str(c["id"]) in rows]
        table[arm] = task.score([c["label"] for c in answered], [task.answer_of(rows[str(c["id"])]) for c in answered])
        table[arm]["predictions"] = str(paths[arm])
    result = {"dataset": cfg.dataset, "task": cfg.task, "cases": str(cases_path), "n_cases": len(cases),
              "model": cfg.model, "options": task.options, "multi_label": task.multi_label, "arms": table,
              "skipped": skipped, "config": config_to_dict(cfg)}
    out = Path(cfg.out_dir)
    if task.report:
        metrics = [k for k in ("BLEU_1", "BLEU_4", "METEOR", "ROUGE_L", "CIDEr") if all(k in m for m in table.values())]
        result["ablation_png"] = str(plot_metric_bars({a: {k: m[k] for k in metrics} for a, m in table.items()},
                                                      out / "ablation.png", f"{cfg.dataset}: reports"))
    for arm, m in (() if task.report else table.items()):
        m["confusion_png"] = str(plot_answer_confusion(m["confusion"], m.get("truth_labels", task.options),
                                                       m["labels"], out / f"{arm}_confusion.png",
                                                       f"{cfg.dataset}: {arm}"))
    write_json(result, out / "ablation.json")
    (out / "ablation.md").write_text(ablation_markdown(result))
    check_skipped({arm: len(cases) - m["n"] for arm, m in table.items() if "predictions" in m}, len(cases),
                  cfg.max_skipped_fraction, "cases", out / "ablation.md")
    return result


MAX_RECALL_COLUMNS = 8  # more options than this: per-class recall stays in ablation.json


def default_gsco_config(values: dict) -> Path:
    """The config a GSCo command reads without ``--config``: ``configs/gsco/<dataset>.yaml``, the dataset from the
    command line (default: breastmnist; iu_xray for ``task=report``)."""
    dataset = values.get("dataset") or ("iu_xray" if values.get("task") == "report" else "breastmnist")
    return repo_file(f"configs/gsco/{dataset}.yaml")


def ablation_markdown(result: dict) -> str:
    if result.get("task") == "report":
        from gsco.metrics.report import REPORT_METRICS

        keys = [k for k in REPORT_METRICS if all(k in m for m in result["arms"].values())]
        lines = [f"# GSCo ablation — {result['dataset']} reports, {result['n_cases']} cases, generalist "
                 f"{result['model']}", "", "| arm | n | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 2)]
        lines += ["| " + " | ".join([arm, str(m["n"]), *(f"{m[k]:.4f}" for k in keys)]) + " |"
                  for arm, m in result["arms"].items()]
        return "\n".join(lines + _skipped_lines(result)) + "\n"
    options, multi = result["options"], result.get("multi_label", False)
    shown = options if len(options) <= MAX_RECALL_COLUMNS else []
    head = (["arm", "n", "exact match" if multi else "accuracy", "macro-F1"] + (["micro-F1"] if multi else [])
            + [f"recall {o}" for o in shown] + ["unparsed"])
    lines = [f"# GSCo ablation — {result['dataset']}, {result['n_cases']} cases, generalist {result['model']}", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm, m in result["arms"].items():
        recalls = [("–" if m["per_class_recall"][o] is None else f"{m['per_class_recall'][o]:.3f}") for o in shown]
        scores = [f"{m['accuracy']:.3f}", f"{m['macro_f1']:.3f}"] + ([f"{m['micro_f1']:.3f}"] if multi else [])
        lines.append("| " + " | ".join([arm, str(m["n"]), *scores, *recalls, str(m["unparsed"])]) + " |")
    return "\n".join(lines + _skipped_lines(result)) + "\n"


def _skipped_lines(result: dict) -> list[str]:
    skipped = result.get("skipped") or {}
    return ["", "Skipped arms:"] + [f"- {arm}: {why}" for arm, why in skipped.items()] if skipped else []


def _run_and_print(cfg: GscoConfig) -> None:
    result = run(cfg)
    if not result:  # not the first data-parallel process
        return
    print(ablation_markdown(result))
    print(f"cases: {result['cases']}")
    for arm, m in result["arms"].items():
        paths = [m[k] for k in ("predictions", "confusion_png") if k in m]
        if paths:
            print(f"{arm}: " + "  ".join(paths))
    if "ablation_png" in result:
        print(f"chart: {result['ablation_png']}")
    print(f"table: {Path(cfg.out_dir) / 'ablation.md'}")
    print(f"json: {Path(cfg.out_dir) / 'ablation.json'}")


main = command(GscoConfig, _run_and_print, description="GSCo ablation arms on a case file.",
               config=default_gsco_config, resolve=repo_file)


if __name__ == "__main__":
    sys.exit(main())
