"""Specialists' results -> a GSCo case file (the reference's format).

    python -m gsco.collab.build_cases --config configs/gsco/breastmnist.yaml \
        [specialists=[A_results.json,B_results.json]] [rad_from=0] [rad_k=10] [data_path=../shared/data/medmnist] \
        [cases=outputs/gsco/breastmnist_cases.json]
    python -m gsco.collab.build_cases --config configs/gsco/iu_xray.yaml specialists=[OUT/test_reports.jsonl] \
        annotation=data/iu_xray/annotation.json [rad_k=3]                         (report generation)

The keys are the GSCo config's (``specialists``, ``rad_from``, ``rad_k``, ``data_path``, ``cases``: the file written;
for report generation ``report_cleaning``) plus ``annotation`` and ``retrieval`` for report cases. Without
``--config`` the dataset's ``configs/gsco/<dataset>.yaml`` is read.

Each ``specialists`` file is a specialist's ``{…}_results.json`` (``bash inference_specialist.sh``) on the same
split — usually test; ``{…}_train_results.json`` (``split=train``) gives training-split cases, the input of
``python -m gsco.collab.hint_samples``. The case file is a JSON list, one case per image, in split order:

    {"id", "image", "label", "split", "rad": [label names of the k most similar training cases, nearest first],
     "moed": [each specialist's predicted label name], "moed_prob": [its probability for that label],
     "rad_distance": [their cosine distances]}

Multi-label datasets: ``label`` is the list of the case's label names; each ``rad`` / ``moed`` entry is a set of
labels as words (``effusion and mass``, ``no finding``), with the sets themselves in ``rad_labels`` /
``moed_labels`` and each specialist's probabilities for every label in ``moed_prob``.

``image`` is relative to the case file's folder: for npz datasets the images are written once to ``images/``
beside it as PNG; for metafile datasets the original paths are kept.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from pathlib import Path

from gsco.cli import command
from gsco.collab.config import GscoConfig, default_gsco_config
from gsco.data.registry import DatasetError, get_dataset_info, labels_phrase
from gsco.runtime import read_json, repo_file

logger = logging.getLogger(__name__)


def load_results(paths: list[Path]) -> list[dict]:
    results = []
    for path in paths:
        if not path.is_file():
            raise DatasetError(f"specialist results {path} do not exist (run bash inference_specialist.sh first)")
        data = read_json(path, "specialist results file (JSON)", "run bash inference_specialist.sh again",
                         error=DatasetError)
        if not isinstance(data, dict):
            raise DatasetError(f"specialist results {path}: expected a JSON object, got {type(data).__name__}")
        needed = ("y_true", "y_pred", "dataset", "label_names", "all_search_train_labels")
        missing = [k for k in needed if k not in data]
        if missing:
            raise DatasetError(f"specialist results {path} lack the keys {missing}")
        data["_path"] = str(path)
        results.append(data)
    first = results[0]
    for other in results[1:]:
        if (other["dataset"], other.get("split", "test")) != (first["dataset"], first.get("split", "test")) \
                or other["y_true"] != first["y_true"]:
            raise DatasetError(f"{other['_path']} and {first['_path']} are not on the same cases "
                               f"({other['dataset']} {other.get('split', 'test')} vs {first['dataset']} "
                               f"{first.get('split', 'test')})")
    return results


def _names(row: list[int], names: list[str]) -> list[str]:
    return [n for n, on in zip(names, row) if int(on)]


def case_hints(names: list[str], multi_label: bool, predictions: list, probabilities: list, neighbours,
               distances) -> dict:
    """A case's evidence as the arms read it: each specialist's prediction (``moed``; a class index, or a 0/1 row for
    multi-label) with its probability (``moed_prob``: of the predicted class, or every label's; None when a
    specialist has none), and the labels of the nearest training cases (``rad``, nearest first) with their
    distances."""
    hints = {}
    if multi_label:
        moed_labels = [_names(p, names) for p in predictions]
        rad_labels = [_names(t, names) for t in neighbours]
        hints.update(rad=[labels_phrase(t) for t in rad_labels], moed=[labels_phrase(m) for m in moed_labels],
                     rad_labels=rad_labels, moed_labels=moed_labels,
                     moed_prob=[None if p is None else [float(v) for v in p] for p in probabilities])
    else:
        preds = [int(p) for p in predictions]
        hints.update(rad=[names[int(t)] for t in neighbours], moed=[names[p] for p in preds],
                     moed_prob=[None if prob is None else float(prob[p]) for prob, p in zip(probabilities, preds)])
    hints["rad_distance"] = [float(d) for d in distances]
    return hints


def build_cases(results_paths: list[str | Path], out: str | Path, data_path: str | Path | None = None,
                rad_from: int = 0, k: int = 10, extra_datasets: str | None = None) -> Path:
    """Write the case file (for the split the results files are on); returns its path."""
    from gsco.data.diagnosis_questions import write_split_images

    results = load_results([Path(p) for p in results_paths])
    if not 0 <= rad_from < len(results):
        raise DatasetError(f"key 'rad_from': {rad_from}, but there are {len(results)} specialists "
                           f"(0-{len(results) - 1})")
    rad_source = results[rad_from]
    top_n = len(rad_source["all_search_train_labels"][0]) if rad_source["all_search_train_labels"] else 0
    if not 1 <= k <= top_n:
        raise DatasetError(f"k {k}: {rad_source['_path']} holds {top_n} neighbours per case (search_top_n)")
    names = rad_source["label_names"]
    info = get_dataset_info(rad_source["dataset"], extra_datasets)
    split = rad_source.get("split", "test")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if data_path is None:
        raise DatasetError(f"key 'data_path' is needed to write the {split} images next to the case file")
    images = write_split_images(info, split, data_path, int(rad_source.get("img_size", 28)), out.parent)
    y_true = rad_source["y_true"]
    if len(images) != len(y_true):
        raise DatasetError(f"{rad_source['_path']} has {len(y_true)} {split} cases, the dataset's {split} split "
                           f"{len(images)}")
    cases = []
    for i, truth in enumerate(y_true):
        if info.multi_label:
            label = _names(truth, names)
        else:
            label = names[int(truth[0] if isinstance(truth, list) else truth)]
        if images[i]["label"] != label:
            raise DatasetError(f"{split} case {i}: the results say {label!r}, the dataset {images[i]['label']!r} "
                               "(results from another version of the data?)")
        case = {"id": images[i]["id"], "image": images[i]["image"], "label": label, "split": split}
        case.update(case_hints(names, info.multi_label, [r["y_pred"][i] for r in results],
                               [r["y_prob"][i] if "y_prob" in r else None for r in results],
                               rad_source["all_search_train_labels"][i][:k], rad_source["all_search_sims"][i][:k]))
        cases.append(case)
    out.write_text(json.dumps(cases, indent=1) + "\n")
    logger.info("%d %s cases from %d specialists (RAD: %s, k=%d)", len(cases), split, len(results),
                rad_source["_path"], k)
    return out


def _build_and_print(cfg: BuildCasesConfig) -> None:
    if cfg.task == "report":
        if not cfg.specialists or len(cfg.specialists) != 1 or not cfg.annotation:
            raise DatasetError("report cases need specialists=[the report specialist's {split}_reports.jsonl] and "
                               "annotation=the R2Gen annotation.json")
        reports = Path(cfg.specialists[0])
        retrieval = cfg.retrieval or reports.with_name(reports.name.replace("_reports.jsonl", "_retrieval.json"))
        out = build_report_cases(reports, retrieval, cfg.annotation, cfg.cases, cfg.rad_k, cfg.report_cleaning)
    else:
        if not cfg.specialists:
            raise DatasetError("key 'specialists': give the specialists' {...}_results.json files "
                               "(specialists=[A_results.json,B_results.json])")
        out = build_cases(cfg.specialists, cfg.cases, cfg.data_path, cfg.rad_from, cfg.rad_k, cfg.extra_datasets)
    print(f"cases: {out}")


@dataclasses.dataclass
class BuildCasesConfig(GscoConfig):
    """A GSCo config (``specialists``, ``rad_from``, ``rad_k``, ``data_path``, ``cases``) plus report cases' inputs."""

    annotation: str | None = None  # report cases: the R2Gen annotation.json (the studies and training reports)
    retrieval: str | None = None  # report cases: {split}_retrieval.json (null: next to the reports file)


def main(argv: list[str] | None = None) -> int:
    return command(BuildCasesConfig, _build_and_print, description="Specialists' results -> a GSCo case file.",
                   config=default_gsco_config, resolve=repo_file)(argv)


# ------------------------------------------------------------------------------------------- report generation
def build_report_cases(reports: str | Path, retrieval: str | Path, annotation: str | Path, out: str | Path,
                       k: int = 3, cleaning: str = "iu_xray") -> Path:
    """Report-generation cases from the report specialist's evaluation (``{split}_reports.jsonl`` and
    ``{split}_retrieval.json``): ``{id, image (first view), images, label: cleaned reference, split, moed: [the
    specialist's report], rad: [cleaned reports of the k most similar training studies, nearest first], rad_ids,
    rad_distance}``. On the training split (evaluation with ``split=train``) they feed ``hint_samples``. Images stay
    relative to the annotation's image root (give it as the GSCo ``image_root``)."""
    from gsco.data.r2gen import read_r2gen_annotation
    from gsco.runtime import read_predictions
    from gsco.specialists.report.clean import clean_report

    reports, retrieval, out = Path(reports), Path(retrieval), Path(out)
    for path in (reports, retrieval):
        if not path.is_file():
            raise DatasetError(f"{path} does not exist (TASK=report bash inference_specialist.sh writes it)")
    rows = read_predictions(reports)
    found = read_json(retrieval, "retrieval result")
    neighbours = dict(zip(found["ids"], zip(found["train_ids"], found["distances"])))
    top_n = min((len(n[0]) for n in neighbours.values()), default=0)
    if not 1 <= k <= top_n:
        raise DatasetError(f"k {k}: {retrieval} holds {top_n} similar training studies per study (search_top_n)")
    splits = read_r2gen_annotation(annotation)  # read once: MIMIC-CXR's annotation is large
    if "train" not in splits:
        raise DatasetError(f"annotation {annotation} has no train split (RAD's reports come from it)")
    train = {str(r["id"]): clean_report(r["report"], cleaning) for r in splits["train"]}
    studies = {str(r["id"]): r for rows_ in splits.values() for r in rows_}
    split_of = {str(r["id"]): split for split, rows_ in splits.items() for r in rows_}
    cases = []
    for row in rows:
        sid = str(row["id"])
        if sid not in neighbours or sid not in studies:
            raise DatasetError(f"{reports}: study {sid} is not in {retrieval} / {annotation}")
        ids, dists = neighbours[sid]
        missing = [i for i in ids[:k] if i not in train]
        if missing:
            raise DatasetError(f"{retrieval}: neighbours {missing} of {sid} are not training studies of {annotation}")
        cases.append({"id": sid, "image": studies[sid]["image_path"][0], "images": studies[sid]["image_path"],
                      "label": row["annotation"], "split": split_of[sid], "moed": [row["answer"]],
                      "rad": [train[i] for i in ids[:k]],
                      "rad_ids": list(ids[:k]), "rad_distance": [float(d) for d in dists[:k]]})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(cases, indent=1) + "\n")
    logger.info("%d report cases (k=%d) from %s", len(cases), k, reports)
    return out


if __name__ == "__main__":
    sys.exit(main())
