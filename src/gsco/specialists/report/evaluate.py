"""Evaluate the report specialist: generated reports (resumable JSONL) and BLEU-1..4, METEOR, ROUGE-L, CIDEr.

    python -m gsco.specialists.report.evaluate --config configs/report/tiny.yaml [checkpoint=...] [key=value ...]
    TASK=report CONFIG=... CHECKPOINT=... ANNOTATION=... IMAGE_ROOT=... OUT_DIR=... bash inference_specialist.sh
    TASK=report GPUS=4 ... bash inference_specialist.sh          (torchrun: 4 processes share the studies)

Writes ``{out_dir}/{split}_reports.jsonl`` — rows ``{id, answer: generated report, annotation: cleaned reference}``,
appended batch by batch (a re-run answers only what is missing) — and ``{out_dir}/{split}_metrics.json``, scored by
the same module as MedDr's evaluation (:mod:`gsco.metrics.report`). With ``search_top_n`` > 0 it also writes
``{out_dir}/{split}_retrieval.json``: for each study, the ``search_top_n`` most similar *training* studies by the
specialist's visual features (Swin's pooled output, views averaged; cosine distance, nearest first) — RAD's input.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from gsco.config import ConfigError
from gsco.data.render import render_identity
from gsco.specialists.report.config import ReportConfig, report_command

logger = logging.getLogger(__name__)


def study_loader(dataset, batch_size: int, num_workers: int = 0, indices: list[int] | None = None) -> DataLoader:
    from torch.utils.data import Subset

    from gsco.specialists.report.data import collate_studies

    data = dataset if indices is None else Subset(dataset, indices)
    return DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      collate_fn=collate_studies)


@torch.no_grad()
def generate_reports(model, loader: DataLoader, device: torch.device, generation: dict,
                     desc: str = "reports", truncate_references: bool = False) -> Iterator[list[dict]]:
    """Batches of ``{id, answer, annotation}`` rows; ``truncate_references``: annotations cut as R2GenGPT cuts them
    (:meth:`ReportGenerator.truncated_reference`)."""
    model.eval()
    for batch in tqdm(loader, desc=desc, leave=False, file=sys.stderr):
        if batch is None:
            continue
        answers = model.generate(batch["pixel_values"].to(device), batch["view_mask"].to(device), **generation)
        refs = [model.truncated_reference(r) for r in batch["reports"]] if truncate_references else batch["reports"]
        yield [{"id": i, "answer": a, "annotation": r} for i, a, r in zip(batch["ids"], answers, refs)]


@torch.no_grad()
def study_features(model, loader: DataLoader, device: torch.device, desc: str) -> tuple[list[str], torch.Tensor]:
    ids, feats = [], []
    model.eval()
    for batch in tqdm(loader, desc=desc, leave=False, file=sys.stderr):
        if batch is None:
            continue
        ids += batch["ids"]
        views, mask = batch["pixel_values"].to(device), batch["view_mask"].to(device)
        feats.append(model.study_features(views, mask).float().cpu())
    return ids, torch.cat(feats)


def retrieve_training_studies(cfg: ReportConfig, model, processor, queries, device: torch.device,
                              path: Path) -> Path:
    """The ``search_top_n`` nearest training studies of each study in ``queries`` (the evaluated ReportDataset; the
    training split searches itself leaving each study out). Kept when already written for the same studies."""
    from gsco.runtime import UnreadableFileError, read_json, write_json
    from gsco.specialists.report.data import ReportDataset, read_annotation
    from gsco.specialists.retrieval import RetrievalIndex

    wanted = [str(r["id"]) for r in queries.rows]
    if path.is_file():
        try:
            if read_json(path, "retrieval result").get("ids") == wanted:
                return path
        except UnreadableFileError as exc:
            logger.warning("%s; searching again", exc)
    if cfg.split == "train":  # the studies asked about are the training split itself
        train = queries
    else:
        train = ReportDataset(read_annotation(cfg.annotation, "train")[: cfg.limit], cfg.image_root, processor,
                              cfg.dataset, cfg)
    train_ids, train_feats = study_features(model, study_loader(train, cfg.eval_batch_size, cfg.num_workers), device,
                                            "training features")
    index = RetrievalIndex(train_feats, torch.arange(len(train_ids)), backend=cfg.retrieval_backend)
    index = index.to(device) if cfg.retrieval_backend == "torch" else index
    on_train = cfg.split == "train"
    top_n = min(cfg.search_top_n, len(index) - on_train)
    if top_n < cfg.search_top_n:
        logger.warning("search_top_n %d: the training split offers %d studies per study%s; %d are stored",
                       cfg.search_top_n, len(index) - on_train, " (each left out of its own)" if on_train else "",
                       top_n)
    if on_train:
        ids, feats = train_ids, train_feats
        dist, idx = index.search_leave_one_out(feats, top_n)
    else:
        ids, feats = study_features(model, study_loader(queries, cfg.eval_batch_size, cfg.num_workers), device,
                                    f"{cfg.split} features")
        dist, idx = index.search(feats, top_n)
    return write_json({"ids": ids, "train_ids": [[train_ids[j] for j in row] for row in idx.tolist()],
                       "distances": dist.tolist(), "features": "Swin pooled output, views averaged",
                       "distance": "cosine distance (1 - cosine similarity); smaller is more similar"}, path)


def best_checkpoint(run_dir: str | Path) -> Path:
    record = Path(run_dir) / "best_checkpoint.json"
    if not record.is_file():
        raise ConfigError(f"key 'checkpoint' is null and {record} does not exist: train first, or name a checkpoint "
                          "(an R2GenGPT .pth loads too)")
    from gsco.runtime import read_json

    stored = read_json(record, "record of the best checkpoint")
    if not isinstance(stored, dict) or not isinstance(stored.get("checkpoint"), str):
        raise ConfigError(f"{record}: expected {{\"checkpoint\": path}}; train again, or name a checkpoint")
    return Path(stored["checkpoint"])


def evaluate_reports(cfg: ReportConfig) -> dict:
    """Reports for every study of the split (resumably; under torchrun each process writes every world-th study to
    its part file), scored, and the retrieval of similar training studies (the first process); one run per output
    folder at a time."""
    from gsco.evaluation import answer_resumably, process_device, run_evaluation
    from gsco.metrics.report import report_metrics
    from gsco.runtime import (
        file_fingerprint,
        output_folder,
        read_predictions,
        resolve_device,
        seed_everything,
        write_json,
    )
    from gsco.specialists.report.data import ReportDataset, read_annotation
    from gsco.specialists.report.model import build_report_model, load_report_checkpoint

    seed_everything(cfg.seed)
    out_dir = output_folder(cfg.out_dir or cfg.run_dir, "out_dir" if cfg.out_dir else "run_dir")
    device = resolve_device(process_device(cfg.device))
    checkpoint = Path(cfg.checkpoint) if cfg.checkpoint else best_checkpoint(cfg.run_dir)
    model, processor = build_report_model(cfg.model_settings(), device)
    load_report_checkpoint(model, checkpoint)
    model.to(device)
    rows = read_annotation(cfg.annotation, cfg.split)[: cfg.limit]
    dataset = ReportDataset(rows, cfg.image_root, processor, cfg.dataset, cfg)
    out = out_dir / f"{cfg.split}_reports.jsonl"

    def ask(todo: list[int]):  # indices into rows (and the dataset)
        loader = study_loader(dataset, cfg.eval_batch_size, cfg.num_workers, todo)
        yield from generate_reports(model, loader, device, cfg.generation_kwargs(), f"{cfg.split} reports",
                                    cfg.truncate_references)

    stat = checkpoint.stat()
    manifest = {"checkpoint": [str(checkpoint.resolve()), stat.st_size, stat.st_mtime_ns],
                "annotation": file_fingerprint(cfg.annotation), "split": cfg.split,
                "image_root": str(Path(cfg.image_root).resolve()), "model": dataclasses.asdict(cfg.model_settings()),
                "generation": cfg.generation_kwargs(), "truncate_references": cfg.truncate_references,
                **render_identity(cfg)}

    def answer() -> None:
        answer_resumably(list(range(len(rows))), out, ask, id_of=lambda i: str(rows[i]["id"]), key="id",
                         message="{out}: {done} of {total} studies already written, {todo} to go",
                         manifest=manifest, overwrite=cfg.overwrite)

    def score(_) -> dict:
        written = {r["id"]: r for r in read_predictions(out)}
        answered = [str(r["id"]) for r in rows if str(r["id"]) in written]
        metrics = report_metrics({i: written[i]["annotation"] for i in answered},
                                 {i: written[i]["answer"] for i in answered}, cfg.report_tokenize, cfg.meteor)
        result = {"split": cfg.split, "checkpoint": str(checkpoint), "n_studies": len(rows),
                  "n_answered": len(answered), "reports": str(out), "metrics": metrics}
        if cfg.search_top_n > 0:
            result["retrieval"] = str(retrieve_training_studies(cfg, model, processor, dataset, device,
                                                                out_dir / f"{cfg.split}_retrieval.json"))
        write_json(result, out_dir / f"{cfg.split}_metrics.json")
        return result

    return run_evaluation(out_dir, answer, score)


def _evaluate_and_print(cfg: ReportConfig) -> None:
    result = evaluate_reports(cfg)
    if not result:  # not the first data-parallel process
        return
    for key, value in result["metrics"].items():
        print(f"{key:8s} {value:.4f}")
    print(f"reports: {result['reports']}")
    print(f"metrics: {Path(cfg.out_dir or cfg.run_dir) / f'{cfg.split}_metrics.json'}")


main = report_command(_evaluate_and_print,
                      "Evaluate the report specialist: generated reports + BLEU/METEOR/ROUGE-L/CIDEr.")


if __name__ == "__main__":
    sys.exit(main())
