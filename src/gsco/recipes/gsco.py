"""Run GSCo's ablation arms on a case file and write the table.

    python -m gsco.recipes.gsco --config configs/gsco/breastmnist.yaml cases=... model=... [arms=[moed_rad]]
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

import logging
import sys
from pathlib import Path

from gsco.cli import command
from gsco.collab.cases import check_prompts, choose_arms, fill_case, read_cases
from gsco.collab.config import GscoConfig, default_gsco_config
from gsco.collab.tasks import Task
from gsco.config import ConfigError, config_to_dict
from gsco.evaluation import check_skipped, run_evaluation
from gsco.runtime import output_folder, repo_file, write_json

logger = logging.getLogger(__name__)


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
    from gsco.generalist.backends import backend_identity
    from gsco.generalist.inputs import show_prompt
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
            show_prompt(generalist, cfg, images[0], prompts[0], cfg.system)
            answers = generalist.answer(images, prompts, cfg.max_new_tokens, batch_size=len(asked),
                                        system=cfg.system, share_prefix=cfg.share_prefix)
            rows: dict[str, list[dict]] = {}
            for (c, arm), q, a in zip(asked, prompts, answers):
                if a is None:  # the served backend logged why; a re-run asks it again
                    continue
                rows.setdefault(arm, []).append({"question_id": str(c["id"]), "question": q, "answer": a,
                                                 "annotation": c["label"],
                                                 **task.row_fields(a),
                                                 "image": c["image"]})
            yield rows

    common = {**backend_identity(cfg), **render_identity(cfg),
              "cases": file_fingerprint(repo_file(cfg.cases)), **({"system": cfg.system} if cfg.system else {})}
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
    task.check_hints(cases, cfg.cases)
    specialists = task.specialist_arms(cases)
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
    result.update(task.charts(table, out, cfg.dataset))
    write_json(result, out / "ablation.json")
    (out / "ablation.md").write_text(ablation_markdown(result, task))
    check_skipped({arm: len(cases) - m["n"] for arm, m in table.items() if "predictions" in m}, len(cases),
                  cfg.max_skipped_fraction, "cases", out / "ablation.md")
    return result


def ablation_markdown(result: dict, task: Task) -> str:
    """ablation.md: the task's table of the arms' scores, then the arms skipped and why."""
    skipped = result.get("skipped") or {}
    lines = task.table_lines(result)
    if skipped:
        lines += ["", "Skipped arms:"] + [f"- {arm}: {why}" for arm, why in skipped.items()]
    return "\n".join(lines) + "\n"


def _run_and_print(cfg: GscoConfig) -> None:
    result = run(cfg)
    if not result:  # not the first data-parallel process
        return
    print((Path(cfg.out_dir) / "ablation.md").read_text())
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
