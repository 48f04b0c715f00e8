"""Specialists' results -> a GSCo case file (the reference's format).

    python -m gsco.collab.build_cases --results A_results.json B_results.json [--rad-from 0] [--k 10] \
        --data-path ../shared/data/medmnist --out outputs/gsco/breastmnist_cases.json
    python -m gsco.collab.build_cases --config configs/gsco/breastmnist.yaml     (specialists, rad_from, k,
        data_path and cases from the dataset's GSCo config; any flag given overrides it)
    python -m gsco.collab.build_cases --reports OUT/test_reports.jsonl --retrieval OUT/test_retrieval.json \
        --annotation data/iu_xray/annotation.json --k 3 --out outputs/gsco/iu_xray_cases.json   (report generation)

Each ``--results`` file is a specialist's ``{…}_results.json`` (``bash inference_specialist.sh``) on the same
split — usually test; ``{…}_train_results.json`` (``eval_split=train``) gives training-split cases, the input of
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

import argparse
import json
import logging
import sys
from pathlib import Path

from gsco.data.registry import DatasetError, get_dataset_info
from gsco.data.registry import labels_phrase
from gsco.specialists.report.clean import RULES as CLEANING_RULES

logger = logging.getLogger(__name__)


def load_results(paths: list[Path]) -> list[dict]:
    results = []
    for path in paths:
        if not path.is_file():
            raise DatasetError(f"specialist results {path} do not exist (run bash inference_specialist.sh first)")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise DatasetError(f"specialist results {path}: not valid JSON ({exc.msg})") from None
        missing = [k for k in ("y_true", "y_pred", "dataset", "label_names", "all_search_train_labels") if k not in data]
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


def build_cases(results_paths: list[str | Path], out: str | Path, data_path: str | Path | None = None,
                rad_from: int = 0, k: int = 10, extra_datasets: str | None = None) -> Path:
    """Write the case file (for the split the results files are on); returns its path."""
    from gsco.data.diagnosis_questions import write_split_images

    results = load_results([Path(p) for p in results_paths])
    if not 0 <= rad_from < len(results):
        raise DatasetError(f"--rad-from {rad_from}: there are {len(results)} specialists (0-{len(results) - 1})")
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
        raise DatasetError(f"--data-path is needed to write the {split} images next to the case file")
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
        neighbours = rad_source["all_search_train_labels"][i][:k]
        case = {"id": images[i]["id"], "image": images[i]["image"], "label": label, "split": split}
        if info.multi_label:
            moed_labels = [_names(r["y_pred"][i], names) for r in results]
            rad_labels = [_names(t, names) for t in neighbours]
            case.update(rad=[labels_phrase(t) for t in rad_labels], moed=[labels_phrase(m) for m in moed_labels],
                        rad_labels=rad_labels, moed_labels=moed_labels,
                        moed_prob=[[float(p) for p in r["y_prob"][i]] if "y_prob" in r else None for r in results])
        else:
            preds = [int(r["y_pred"][i]) for r in results]
            case.update(rad=[names[int(t)] for t in neighbours], moed=[names[p] for p in preds],
                        moed_prob=[float(r["y_prob"][i][p]) if "y_prob" in r else None
                                   for r, p in zip(results, preds)])
        case["rad_distance"] = [float(d) for d in rad_source["all_search_sims"][i][:k]]
        cases.append(case)
    out.write_text(json.dumps(cases, indent=1) + "\n")
    logger.info("%d %s cases from %d specialists (RAD: %s, k=%d)", len(cases), split, len(results),
                rad_source["_path"], k)
    return out


def main(argv: list[str] | None = None) -> int:
    from gsco.runtime import setup_logging

    parser = argparse.ArgumentParser(description="Specialists' results -> a GSCo case file.")
    parser.add_argument("--config", default=None, help="configs/gsco/<dataset>.yaml (specialists, rad_from, k, ...)")
    parser.add_argument("--results", nargs="+", default=None, help="{...}_results.json of each specialist")
    parser.add_argument("--out", default=None, help="case file to write (JSON)")
    parser.add_argument("--data-path", default=None, help="where the dataset's files are (as data_path)")
    parser.add_argument("--rad-from", type=int, default=None, help="which --results file's retrieval feeds RAD")
    parser.add_argument("--k", type=int, default=None, help="similar training cases per test case (RAD)")
    parser.add_argument("--extra-datasets", default=None, help="your registry YAML (as the config key)")
    report = parser.add_argument_group("report generation (instead of --results)")
    report.add_argument("--reports", default=None, help="the report specialist's {split}_reports.jsonl")
    report.add_argument("--retrieval", default=None, help="its {split}_retrieval.json")
    report.add_argument("--annotation", default=None, help="the R2Gen annotation.json")
    report.add_argument("--cleaning", default="iu_xray", choices=list(CLEANING_RULES), help="report cleaning rule")
    args = parser.parse_args(argv)
    setup_logging()
    if args.reports or args.retrieval:
        try:
            if not (args.reports and args.retrieval and args.annotation and args.out):
                raise DatasetError("report cases need --reports, --retrieval, --annotation and --out")
            out = build_report_cases(args.reports, args.retrieval, args.annotation, args.out, args.k or 3,
                                     args.cleaning)
        except (DatasetError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"cases: {out}")
        return 0
    try:
        settings = {"results": None, "out": None, "data_path": None, "rad_from": 0, "k": 10, "extra_datasets": None}
        if args.config:
            from gsco.collab.run import GscoConfig
            from gsco.config import load_config
            from gsco.runtime import repo_file

            cfg = load_config(GscoConfig, repo_file(args.config))
            settings.update(results=cfg.specialists, out=cfg.cases, data_path=cfg.data_path, rad_from=cfg.rad_from,
                            k=cfg.k, extra_datasets=cfg.extra_datasets)
        settings.update({k: v for k, v in vars(args).items() if k in settings and v is not None})
        if not settings["results"] or not settings["out"]:
            raise DatasetError("give --results and --out (or a --config whose specialists and cases name them)")
        out = build_cases(settings["results"], settings["out"], settings["data_path"], settings["rad_from"],
                          settings["k"], settings["extra_datasets"])
    except (DatasetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"cases: {out}")
    return 0


# ------------------------------------------------------------------------------------------- report generation
def build_report_cases(reports: str | Path, retrieval: str | Path, annotation: str | Path, out: str | Path,
                       k: int = 3, cleaning: str = "iu_xray") -> Path:
    """Report-generation cases from the report specialist's evaluation (``{split}_reports.jsonl`` and
    ``{split}_retrieval.json``): ``{id, image (first view), images, label: cleaned reference, split, moed: [the
    specialist's report], rad: [cleaned reports of the k most similar training studies, nearest first], rad_ids,
    rad_distance}``. On the training split (evaluation with ``split=train``) they feed ``hint_samples``. Images stay relative to the annotation's image root (give it as the GSCo ``image_root``)."""
    from gsco.runtime import read_predictions
    from gsco.data.r2gen import read_r2gen_annotation
    from gsco.specialists.report.clean import clean_report

    reports, retrieval, out = Path(reports), Path(retrieval), Path(out)
    for path in (reports, retrieval):
        if not path.is_file():
            raise DatasetError(f"{path} does not exist (TASK=report bash inference_specialist.sh writes it)")
    rows = read_predictions(reports)
    found = json.loads(retrieval.read_text())
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
