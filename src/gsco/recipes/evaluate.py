"""Batch evaluation of a generalist (MedDr, or any image-text-to-text model) on a metafile: predictions, then metrics.

    python -m gsco.recipes.evaluate [--config configs/meddr/eval.yaml] [key=value ...]
    bash inference_meddr.sh                      (env MODEL, METAFILE, IMAGE_ROOT, TASK, OUT_DIR, BATCH_SIZE, GPUS)

Metafile: JSONL rows ``{id, split, image, text, question_id, answer}`` (the reference's layout). The ground truth
is ``answer`` (else ``text``); the question is the task's prompt from ``prompts`` (``prompt_set``) with the row's
``question`` filled in for ``{question}``; a row's own question stands alone when the prompt does not wrap it, unless
``row_question: false`` (then the prompt always applies, as the reference's ``inference_meddr.py``). ``image`` is
relative to ``image_root`` (default: the metafile's folder); a list takes its first view.

Predictions are appended to ``{out_dir}/{metafile stem}_predictions.jsonl`` batch by batch; a re-run skips the
``question_id``s already there and so ends with the same file as an uninterrupted run. An unreadable image is
logged and skipped. Under ``torchrun``/``accelerate launch`` each process answers its share of the rows into a part
file that the first process merges, in metafile order. Metrics go to ``{stem}_metrics.json``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Literal

import yaml

from gsco.cli import command
from gsco.config import ConfigError, config_to_dict
from gsco.data.registry import DatasetError
from gsco.data.render import RENDER_KEYS, RenderSettings
from gsco.evaluation import answer_resumably, check_skipped, chunks, distributed_context, process_device, run_evaluation
from gsco.generalist.backends import GENERALIST_KEYS, GeneralistSettings
from gsco.runtime import read_predictions, repo_file, write_json

logger = logging.getLogger(__name__)

TASKS = ("report", "vqa", "diagnosis")


@dataclasses.dataclass
class EvalConfig(RenderSettings, GeneralistSettings):
    # sections: in a YAML file a mapping of their keys; on the command line section.key=value or key=value
    SECTIONS = {
        "render": RENDER_KEYS,  # how DICOM / NIfTI inputs become images (gsco.data.render)
        "generalist": GENERALIST_KEYS,  # gsco.generalist.backends.GeneralistSettings: local or served
        "data": ("metafile", "image_root", "split", "limit", "allow_text_only"),
        "prompt": ("prompts", "prompt_set", "options", "system", "row_question"),
        "generation": ("eval_batch_size", "max_new_tokens", "min_new_tokens", "num_beams", "length_penalty",
                       "share_prefix"),
        "scoring": ("answer_parsing", "report_tokenize", "meteor"),
    }
    # --- what and where ---
    task: Literal["report", "vqa", "diagnosis"] = "report"  # how answers are scored
    out_dir: str = "outputs/meddr"  # {metafile stem}_predictions.jsonl (appended; a re-run resumes) and _metrics.json
    overwrite: bool = False  # start the predictions over (a re-run of another model or input is refused otherwise)
    max_skipped_fraction: float = 0.05  # more rows skipped than this (unreadable images...): exit status 2 at the end
    score_only: bool = False  # only (re)compute metrics from an existing predictions file
    # --- data ---
    metafile: str = "data/examples/meddr/iu_xray_sample.jsonl"  # JSONL rows {id, image, question_id, answer, ...}
    image_root: str | None = None  # default: the metafile's folder
    split: str | None = None  # keep rows of this split only (null: all rows)
    limit: int | None = None  # first N rows (after the split filter)
    allow_text_only: bool = False  # rows without an image are questions without one (false: such a row is an error)
    # --- prompt ---
    prompts: str = "configs/meddr/prompts.yaml"  # the prompts file (per task, named sets)
    prompt_set: str = "default"  # a key under the task in the prompts file
    options: list[str] | None = None  # diagnosis options when rows do not list them
    system: str | None = None  # system message; null: the chat template's own ("Answer the questions.")
    # a row's question stands alone when the prompt has no {question}; false: the prompt always (inference_meddr.py)
    row_question: bool = True
    # --- generation ---
    eval_batch_size: int = 8  # questions per generate() call
    max_new_tokens: int = 256  # answer length limit
    min_new_tokens: int | None = None  # null: no minimum (the reference: 1)
    num_beams: int = 1  # 1: greedy
    length_penalty: float = 1.0  # beam search only
    share_prefix: bool = True  # questions about one image in a batch: image + shared prompt prefix computed once
    # --- scoring ---
    # diagnosis answers: natural (sentences: aliases, negation; gsco.metrics.answers) or literal (first option named)
    answer_parsing: Literal["natural", "literal"] = "natural"
    report_tokenize: Literal["ptb", "none"] = "ptb"  # report metrics: PTB tokenization (pycocoevalcap) or as is
    meteor: bool = True  # METEOR needs Java

    def validate(self) -> None:
        super().validate()  # the render keys
        self.check_generalist()
        for key in ("eval_batch_size", "max_new_tokens", "num_beams"):
            if getattr(self, key) < 1:
                raise ConfigError(f"key {key!r}: must be at least 1, got {getattr(self, key)}")
        if self.min_new_tokens is not None and not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ConfigError(f"key 'min_new_tokens': must be between 0 and max_new_tokens, got {self.min_new_tokens}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"key 'limit': must be at least 1 or null, got {self.limit}")
        if not 0 <= self.max_skipped_fraction <= 1:
            raise ConfigError(f"key 'max_skipped_fraction': must be between 0 and 1, got {self.max_skipped_fraction}")

    @property
    def stem(self) -> str:
        return Path(self.metafile).stem

    @property
    def predictions_file(self) -> Path:
        return Path(self.out_dir) / f"{self.stem}_predictions.jsonl"

    @property
    def metrics_file(self) -> Path:
        return Path(self.out_dir) / f"{self.stem}_metrics.json"


@dataclasses.dataclass
class Item:
    question_id: str
    image: Path | None
    question: str
    annotation: str
    options: list[str] | None
    line: int
    answer_type: str | None = None


# ------------------------------------------------------------------------------------------------------ reading
def load_prompt(cfg: EvalConfig) -> str:
    path = repo_file(cfg.prompts)
    if not path.is_file():
        raise ConfigError(f"key 'prompts': {path} does not exist")
    prompts = yaml.safe_load(path.read_text()) or {}
    per_task = prompts.get(cfg.task)
    if not isinstance(per_task, dict) or cfg.prompt_set not in per_task:
        have = sorted(per_task) if isinstance(per_task, dict) else []
        raise ConfigError(f"{path}: no prompt {cfg.prompt_set!r} for task {cfg.task!r}; available: {have}")
    return str(per_task[cfg.prompt_set])


def read_metafile(cfg: EvalConfig) -> list[Item]:
    """Rows of the metafile as evaluation items; a malformed row stops with its file and line."""
    path = repo_file(cfg.metafile)
    if not path.is_file():
        raise ConfigError(f"key 'metafile': {path} does not exist")
    root = Path(cfg.image_root) if cfg.image_root else path.parent
    template = load_prompt(cfg)
    items, seen = [], {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path} line {lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise ConfigError(f"{where}: expected a JSON object")
        if cfg.split is not None and row.get("split") != cfg.split:
            continue
        qid = str(row.get("question_id", row.get("id", lineno)))
        if qid in seen:
            raise ConfigError(f"{where}: question_id {qid!r} repeats line {seen[qid]}")
        seen[qid] = lineno
        truth = row.get("answer", row.get("text"))
        if truth is None:
            raise ConfigError(f"{where}: no ground truth (expected 'answer' or 'text')")
        image = row.get("image")
        if isinstance(image, list):
            image = image[0] if image else None
        image_path = None if image in (None, "") else (Path(image) if Path(image).is_absolute() else root / image)
        if image_path is None and not cfg.allow_text_only:
            raise ConfigError(f"{where}: no image (key 'image'); a text-only question needs allow_text_only=true")
        options = row.get("options", cfg.options)
        if cfg.task == "diagnosis" and not options:
            raise ConfigError(f"{where}: a diagnosis row needs options (the row's 'options' or the config's)")
        question = row.get("question")
        if question is None or "{question}" in template or not cfg.row_question:
            question = template.format(options=", ".join(f"'{o}'" for o in (options or [])),
                                       question="" if question is None else question)
        items.append(Item(qid, image_path, str(question), str(truth), list(options) if options else None, lineno,
                          row.get("answer_type")))
        if cfg.limit is not None and len(items) >= cfg.limit:
            break
    if not items:
        raise ConfigError(f"{path}: no rows to evaluate" + (f" in split {cfg.split!r}" if cfg.split else ""))
    return items


# -------------------------------------------------------------------------------------------------- generating
def predict(cfg: EvalConfig, items: list[Item]) -> dict:
    """Answer every item not yet in the predictions file; returns counts."""
    from gsco.data.readers import DatasetError, open_image
    from gsco.generalist.backends import load_generalist

    skipped: list[dict] = []

    def ask(todo: list[Item]):
        from gsco.generalist.inputs import show_prompt

        rank, world = distributed_context()
        generalist = load_generalist(cfg, process_device(cfg.device, rank, world))
        for chunk in chunks(todo, cfg.eval_batch_size, "answering"):
            batch, images, opened = [], [], {}
            for it in chunk:
                try:  # one object per image file: questions about one image share its prefix (share_prefix)
                    if it.image is not None and it.image not in opened:
                        opened[it.image] = open_image(it.image, cfg)
                    images.append(None if it.image is None else opened[it.image])
                    batch.append(it)
                except DatasetError as exc:
                    logger.warning("skipping question %s (line %d): %s", it.question_id, it.line, exc)
                    skipped.append({"question_id": it.question_id, "line": it.line, "error": str(exc)})
            if batch:
                show_prompt(generalist, cfg, images[0], batch[0].question, cfg.system)
                answers = generalist.answer(images, [it.question for it in batch], cfg.max_new_tokens,
                                            cfg.num_beams, batch_size=len(batch), system=cfg.system,
                                            share_prefix=cfg.share_prefix, **generation_kwargs(cfg))
                for it in (it for it, a in zip(batch, answers) if a is None):  # logged by the served backend
                    skipped.append({"question_id": it.question_id, "line": it.line,
                                    "error": "no answer from the server"})
                yield [prediction_row(it, a) for it, a in zip(batch, answers) if a is not None]

    done = answer_resumably(items, cfg.predictions_file, ask, id_of=lambda it: it.question_id,
                            message="{done} of {total} questions already answered; {mine} to go",
                            rank_note=" on rank {rank}/{world}", manifest=run_manifest(cfg, items),
                            question_of=lambda it: it.question, overwrite=cfg.overwrite)
    return {"answered": done["written"], "skipped": skipped}


def run_manifest(cfg: EvalConfig, items: list[Item]) -> dict:
    """What shapes the answers in the predictions file: a re-run with anything else here is refused."""
    from gsco.data.render import render_identity
    from gsco.generalist.backends import backend_identity
    from gsco.runtime import file_fingerprint

    images = sorted({str(it.image.parent.resolve()) for it in items if it.image is not None})
    return {**backend_identity(cfg), **render_identity(cfg),
            "metafile": file_fingerprint(repo_file(cfg.metafile)),
            "task": cfg.task, "image_folders": images[:3] + ([f"... {len(images)} in all"] if len(images) > 3 else []),
            "system": cfg.system, "max_new_tokens": cfg.max_new_tokens, "min_new_tokens": cfg.min_new_tokens,
            "num_beams": cfg.num_beams, "length_penalty": cfg.length_penalty}


def generation_kwargs(cfg: EvalConfig) -> dict:
    """Decoding settings beyond beams and length, passed only when they are not transformers' defaults."""
    return {**({"min_new_tokens": cfg.min_new_tokens} if cfg.min_new_tokens else {}),
            **({"length_penalty": cfg.length_penalty} if cfg.length_penalty != 1.0 else {})}


def prediction_row(item: Item, answer: str) -> dict:
    return {"question_id": item.question_id, "question": item.question, "answer": answer,
            "annotation": item.annotation, "image": None if item.image is None else str(item.image),
            **({"options": item.options} if item.options else {}),
            **({"answer_type": item.answer_type} if item.answer_type else {})}


# ----------------------------------------------------------------------------------------------------- scoring
def check_scored_run(cfg: EvalConfig, items: list[Item]) -> None:
    """``score_only``: the predictions file must be this configuration's (model, metafile, settings), as a resumed
    run's must, so its metrics never name a model or metafile that did not write the answers."""
    from gsco.evaluation.resumable import check_manifest, manifest_path

    if not cfg.predictions_file.is_file():
        raise ConfigError(f"score_only: {cfg.predictions_file} does not exist (run without score_only first)")
    if manifest_path(cfg.predictions_file).is_file():
        check_manifest(cfg.predictions_file, run_manifest(cfg, items), len(read_predictions(cfg.predictions_file)),
                       "score it with the settings that wrote it (MODEL, METAFILE, ...), or answer again")
    else:
        logger.warning("%s has no manifest (written before runs recorded one): scored as this run's",
                       cfg.predictions_file)


def score(cfg: EvalConfig, items: list[Item]) -> dict:
    """Metrics of the predictions file over the metafile's items (those answered)."""
    rows = {r["question_id"]: r for r in read_predictions(cfg.predictions_file)}
    answered = [it for it in items if it.question_id in rows]
    result: dict = {"task": cfg.task, "model": cfg.model, "metafile": cfg.metafile, "n_items": len(items),
                    "n_answered": len(answered)}
    if not answered:
        return {**result, "metrics": {}}
    preds = [rows[it.question_id]["answer"] for it in answered]
    truth = [it.annotation for it in answered]
    if cfg.task == "report":
        from gsco.metrics.report import report_metrics

        ids = [it.question_id for it in answered]
        metrics = report_metrics(dict(zip(ids, truth)), dict(zip(ids, preds)), cfg.report_tokenize, cfg.meteor)
    elif cfg.task == "vqa":
        from gsco.metrics.answers import vqa_metrics

        metrics = vqa_metrics(preds, truth, [it.answer_type for it in answered])
    else:
        metrics = score_diagnosis(answered, preds, cfg.answer_parsing)
    return {**result, "metrics": metrics}


def score_diagnosis(items: list[Item], preds: list[str], mode: str = "natural") -> dict:
    """Single-label rows: the option the answer gives; rows with ``answer_type: multi-label``: every option it
    names (the ground truth is a labels phrase such as ``effusion and mass`` or ``no finding``). ``mode``: how
    answers are read (gsco.metrics.answers; the aliases are those of the registered dataset whose label names the
    options are)."""
    from gsco.data.registry import answer_aliases
    from gsco.metrics.answers import diagnosis_metrics, multilabel_metrics, parse_option, parse_options

    options = items[0].options
    aliases = answer_aliases(options)
    if any(it.answer_type == "multi-label" for it in items):
        if any(it.options != options or it.answer_type != "multi-label" for it in items):
            raise DatasetError("multi-label diagnosis rows must all be multi-label and share one options list")
        truth = []
        for it in items:
            labels = parse_options(it.annotation, options, mode="literal")  # the ground truth names its labels
            if labels is None:
                raise DatasetError(f"metafile line {it.line}: ground truth {it.annotation!r} names none of the "
                                   f"options {options} (nor 'no finding')")
            truth.append(labels)
        return multilabel_metrics(truth, [parse_options(p, options, aliases=aliases, mode=mode) for p in preds],
                                  options)
    if any(it.options != options for it in items):
        parsed = [parse_option(p, it.options, answer_aliases(it.options), mode) for it, p in zip(items, preds)]
        correct = [q == canonical(it.annotation, it.options) for it, q in zip(items, parsed)]
        return {"n": len(items), "accuracy": sum(correct) / len(items), "unparsed": sum(q is None for q in parsed)}
    truth = [canonical(it.annotation, options) for it in items]
    return diagnosis_metrics(truth, [parse_option(p, options, aliases, mode) for p in preds], options)


def canonical(label: str, options: list[str]) -> str:
    """The option a ground-truth label names (case-insensitive)."""
    for o in options:
        if o.strip().lower() == label.strip().lower():
            return o
    raise DatasetError(f"ground truth {label!r} is not one of the options {options}")


def format_table(result: dict) -> str:
    metrics = {k: v for k, v in result["metrics"].items() if isinstance(v, (int, float)) or v is None}
    width = max((len(k) for k in metrics), default=0)
    lines = [f"{result['task']} on {result['metafile']}: {result['n_answered']}/{result['n_items']} answered"]
    lines += [f"  {k:<{width}}  {v:.4f}" if isinstance(v, float) else f"  {k:<{width}}  {v}"
              for k, v in metrics.items()]
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------------------- main
def evaluate(cfg: EvalConfig) -> dict:
    """Answer (resumably, every process its share) and score (the first process); one run per out_dir at a time."""
    items = read_metafile(cfg)

    def answer() -> list[dict]:
        if cfg.score_only:
            check_scored_run(cfg, items)
            return []
        return predict(cfg, items)["skipped"]

    def score_and_check(skipped: list[dict]) -> dict:
        result = {**score(cfg, items), "skipped": skipped, "config": config_to_dict(cfg)}
        write_json(result, cfg.metrics_file)
        if not cfg.score_only:  # every process's skips: the rows the merged file lacks
            example = f"line {skipped[0]['line']}: {skipped[0]['error']}" if skipped else ""
            check_skipped({"": len(items) - result["n_answered"]}, len(items), cfg.max_skipped_fraction, "questions",
                          cfg.metrics_file, example)
        return result

    return run_evaluation(cfg.out_dir, answer, score_and_check)


def _evaluate_and_print(cfg: EvalConfig) -> None:
    result = evaluate(cfg)  # ValueError / RuntimeError: an unreadable model directory, Java missing, ...
    if result:
        print(format_table(result))
        print(f"predictions: {cfg.predictions_file}")
        print(f"metrics: {cfg.metrics_file}")


main = command(EvalConfig, _evaluate_and_print,
               description="Evaluate a generalist (MedDr or another image-text-to-text model) on a metafile.",
               config="configs/meddr/eval.yaml", resolve=repo_file)


if __name__ == "__main__":
    sys.exit(main())
