"""Run GSCo's ablation arms on a case file and write the table.

    python -m gsco.collab.run --config configs/gsco/breastmnist.yaml cases=... model=... [arms=[moed_rad]]
    bash inference_gsco.sh                 (env MODEL, CASES, IMAGE_ROOT, DATASET, OUT_DIR, BATCH_SIZE, GPUS, ARMS)

Arms: ``specialist_<i>`` (each specialist's own prediction) and ``specialist_vote`` (their majority; ties go to
the first specialist's label) need no generation; ``generalist`` (no hints), ``moed``, ``rad``, ``moed_rad`` (the
reference's prompt) and the evidence variants ``rad_counts`` / ``moed_prob`` ask the generalist. Each generalist
arm appends ``{out_dir}/{arm}_predictions.jsonl`` batch by batch (a re-run resumes); answers are parsed to the
options (case-insensitive whole words, first option named); unparsed answers count as wrong and are reported.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from collections import Counter
from pathlib import Path

from gsco.config import ConfigError, config_to_dict, load_config, parse_overrides
from gsco.runtime import repo_file, setup_logging, write_json

logger = logging.getLogger(__name__)

GENERALIST_ARMS = ("generalist", "moed", "rad", "moed_rad", "rad_counts", "moed_prob")


@dataclasses.dataclass
class GscoConfig:
    dataset: str = "breastmnist"
    extra_datasets: str | None = None
    # building the case file (python -m gsco.collab.build_cases --config ...)
    specialists: list[str] | None = None  # the specialists' {...}_results.json files (MoED, in this order)
    rad_from: int = 0  # which of them retrieves the similar training cases (RAD)
    k: int = 10  # similar cases per test case
    data_path: str | None = None  # where the dataset's files are (the test images are written beside the cases)
    # running the arms
    cases: str = "outputs/gsco/breastmnist_cases.json"
    image_root: str | None = None  # case images are relative to this (default: the case file's folder)
    out_dir: str = "outputs/gsco"
    model: str | None = "tiny"
    options: list[str] | None = None  # null: the dataset's label names from the registry
    modality: str | None = None  # null: the registry's modality
    intro: str = ("You are a helpful medical assistant. Your task is disease diagnosis. You are given a {modality} "
                  "image. The possible diagnoses are: {options}.")
    rad_sentence: str = "The diagnoses of the most similar cases are ###RAD###."
    moed_sentence: str = "The diagnoses of the specialist models are ###MOED###."
    outro: str = "The response should only contain one option."
    arms: list[str] | None = None  # null: every arm
    batch_size: int = 8
    max_new_tokens: int = 32
    device: str = "auto"
    dtype: str = "auto"
    device_map: str | None = None

    def validate(self) -> None:
        if self.batch_size < 1 or self.max_new_tokens < 1:
            raise ConfigError("keys batch_size and max_new_tokens must be at least 1")


def template_for(cfg: GscoConfig, arm: str, options: list[str], modality: str) -> str:
    """The arm's prompt template: intro, the hint sentences the arm uses, outro (joined by spaces)."""
    from gsco.collab.prompts import options_text

    parts = [cfg.intro.format(modality=modality, options=options_text(options))]
    if arm in ("rad", "moed_rad", "rad_counts"):
        parts.append(cfg.rad_sentence)
    if arm in ("moed", "moed_rad", "moed_prob"):
        parts.append(cfg.moed_sentence)
    parts.append(cfg.outro)
    return " ".join(p for p in parts if p)


def read_cases(path: Path) -> list[dict]:
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
    return cases


def fill_case(cfg: GscoConfig, arm: str, case: dict, options: list[str], modality: str) -> str:
    from gsco.collab.prompts import fill_gsco_prompt, moed_with_probabilities, rad_counts

    rad, moed = case.get("rad"), case.get("moed")
    if arm == "rad_counts":
        rad = rad_counts(rad or [], options)
    if arm == "moed_prob":
        moed = moed_with_probabilities(moed or [], case.get("moed_prob") or [])
    return fill_gsco_prompt(template_for(cfg, arm, options, modality), rad=rad, moed=moed)


def specialist_arms(cases: list[dict]) -> dict[str, list[str]]:
    n = min(len(c.get("moed") or []) for c in cases)
    arms = {f"specialist_{j}": [c["moed"][j] for c in cases] for j in range(n)}
    if n > 1:
        arms["specialist_vote"] = [max(Counter(c["moed"]).items(), key=lambda kv: (kv[1], -c["moed"].index(kv[0])))[0]
                                   for c in cases]
    return arms


def run_generalist_arm(cfg: GscoConfig, arm: str, cases: list[dict], generalist, options, modality, root) -> Path:
    from gsco.data.readers import DatasetError, open_image
    from gsco.meddr.evaluate import answered_ids, append_rows, distributed_context, merge_parts
    from gsco.metrics.answers import parse_option

    rank, world = distributed_context()
    out = Path(cfg.out_dir) / f"{arm}_predictions.jsonl"
    part = out if world == 1 else out.with_name(f"{out.stem}.rank{rank}.jsonl")
    done = answered_ids(out, rank, world)
    todo = [c for c in cases if str(c["id"]) not in done]
    logger.info("arm %s: %d of %d cases answered, %d to go%s", arm, len(cases) - len(todo), len(cases), len(todo),
                f" (rank {rank} of {world} takes every {world}th)" if world > 1 else "")
    todo = todo[rank::world]
    for start in range(0, len(todo), cfg.batch_size):
        batch, images = [], []
        for case in todo[start:start + cfg.batch_size]:
            path = Path(case["image"]) if Path(case["image"]).is_absolute() else root / case["image"]
            try:
                images.append(open_image(path))
                batch.append(case)
            except DatasetError as exc:
                logger.warning("arm %s: skipping case %s: %s", arm, case["id"], exc)
        if not batch:
            continue
        prompts = [fill_case(cfg, arm, c, options, modality) for c in batch]
        answers = generalist.answer(images, prompts, cfg.max_new_tokens, batch_size=len(batch))
        append_rows(part, [{"question_id": str(c["id"]), "question": q, "answer": a, "annotation": c["label"],
                           "parsed": parse_option(a, options), "image": c["image"]}
                          for c, q, a in zip(batch, prompts, answers)])
    if world > 1:
        merge_parts(out, [str(c["id"]) for c in cases], rank, world)
    return out


def run(cfg: GscoConfig) -> dict:
    from gsco.data.registry import get_dataset_info
    from gsco.metrics.answers import diagnosis_metrics

    info = get_dataset_info(cfg.dataset, cfg.extra_datasets)
    options = list(cfg.options or info.label_names)
    modality = cfg.modality or info.modality
    cases_path = repo_file(cfg.cases)
    cases = read_cases(cases_path)
    root = Path(cfg.image_root) if cfg.image_root else cases_path.parent
    truth = [c["label"] for c in cases]
    available = list(specialist_arms(cases)) + list(GENERALIST_ARMS)
    arms = cfg.arms or available
    unknown = [a for a in arms if a not in available]
    if unknown:
        raise ConfigError(f"key 'arms': {unknown} are not arms of this case file; available: {available}")
    Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    table: dict[str, dict] = {}
    specialists = specialist_arms(cases)
    generalist = None
    for arm in arms:
        if arm in specialists:
            table[arm] = diagnosis_metrics(truth, specialists[arm], options)
            continue
        if generalist is None:
            from gsco.meddr.evaluate import distributed_context, process_device
            from gsco.meddr.generation import Generalist

            rank, world = distributed_context()
            generalist = Generalist.load(cfg.model, process_device(cfg.device, rank, world), cfg.dtype,
                                         cfg.device_map)
        path = run_generalist_arm(cfg, arm, cases, generalist, options, modality, root)
        from gsco.meddr.evaluate import read_predictions

        rows = {r["question_id"]: r for r in read_predictions(path)}
        answered = [c for c in cases if str(c["id"]) in rows]
        table[arm] = diagnosis_metrics([c["label"] for c in answered],
                                       [rows[str(c["id"])]["parsed"] for c in answered], options)
        table[arm]["predictions"] = str(path)
    import os

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    if int(os.environ.get("RANK", "0")) != 0:  # data parallel: the first process writes the table
        return {}
    result = {"dataset": cfg.dataset, "cases": str(cases_path), "n_cases": len(cases), "model": cfg.model,
              "options": options, "arms": table, "config": config_to_dict(cfg)}
    from gsco.metrics.plots import plot_answer_confusion

    for arm, m in table.items():
        m["confusion_png"] = str(plot_answer_confusion(m["confusion"], options, m["labels"],
                                                       Path(cfg.out_dir) / f"{arm}_confusion.png",
                                                       f"{cfg.dataset}: {arm}"))
    write_json(result, Path(cfg.out_dir) / "ablation.json")
    (Path(cfg.out_dir) / "ablation.md").write_text(ablation_markdown(result))
    return result


def ablation_markdown(result: dict) -> str:
    options = result["options"]
    head = ["arm", "n", "accuracy", "macro-F1"] + [f"recall {o}" for o in options] + ["unparsed"]
    lines = [f"# GSCo ablation — {result['dataset']}, {result['n_cases']} cases, generalist {result['model']}", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm, m in result["arms"].items():
        recalls = [("–" if m["per_class_recall"][o] is None else f"{m['per_class_recall'][o]:.3f}") for o in options]
        lines.append("| " + " | ".join([arm, str(m["n"]), f"{m['accuracy']:.3f}", f"{m['macro_f1']:.3f}", *recalls,
                                        str(m["unparsed"])]) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="GSCo ablation arms on a case file.")
    parser.add_argument("--config", default=None, help="configs/gsco/<dataset>.yaml")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        overrides = parse_overrides(args.overrides)
        config = args.config or str(repo_file(f"configs/gsco/{overrides.get('dataset', 'breastmnist')}.yaml"))
        cfg = load_config(GscoConfig, config, overrides)
        result = run(cfg)
    except (ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not result:  # not the first data-parallel process
        return 0
    print(ablation_markdown(result))
    print(f"table: {Path(cfg.out_dir) / 'ablation.md'}")
    print(f"json: {Path(cfg.out_dir) / 'ablation.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
