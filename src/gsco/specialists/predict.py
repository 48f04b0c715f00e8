"""Evaluate a trained specialist on the test split and build its retrieval index (the inputs of MoED and RAD).

    python -m gsco.specialists.predict [--config configs/config.yaml] [key=value ...]
    python -m gsco.specialists.predict ... split=train      (the training split: hints to fine-tune on)
    python -m gsco.specialists.predict ... split=[test,train]   (both, the training features extracted once)

Writes ``{output_path}/{run}_results.json`` (``{run}_{split}_results.json`` for ``split`` val/train) with the GSCo
reference's keys — ``ACC``, ``AUC``, ``per_class_AUC``,
``y_true``, ``y_pred``, ``y_logits``, ``checkpoint_file``, ``all_search_sims``, ``all_search_train_ids``,
``all_search_train_labels`` — plus ``y_prob`` and a description of the run; ``{run}_roc.png``,
``{run}_confusion.png`` and the retrieval index ``{run}_index.safetensors``.

``all_search_sims`` holds cosine **distances** (1 - cos, smaller is closer), as the reference's files do, for the
``search_top_n`` nearest training images of each test image, nearest first. With ``split=train`` each
training image's own entry is left out of its neighbours (and of its kNN vote); its predictions are in-sample.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

from gsco.metrics.classification import classification_metrics, predict_labels
from gsco.metrics.plots import plot_confusion, plot_roc
from gsco.runtime import output_folder, write_json
from gsco.specialists.build import SpecialistSetup, probabilities, run_cli, setup_specialist
from gsco.specialists.config import SpecialistConfig
from gsco.specialists.models import features_from, load_specialist_checkpoint
from gsco.specialists.retrieval import RetrievalIndex

logger = logging.getLogger(__name__)


@torch.no_grad()
def extract_features(run: SpecialistSetup, split: str, kinds: tuple[str, ...], with_logits: bool):
    """One pass over a split: labels, logits (optional) and features of each kind in ``kinds``."""
    model, device = run.model, run.device
    loader = run.loader(run.dataset(split), train=False)
    n = len(loader.dataset)
    labels, logits = [], []
    feats: dict[str, torch.Tensor] = {}
    row = 0
    for x, y in tqdm(loader, desc=f"{split} features", leave=False, file=sys.stderr):
        fmap = model.forward_features(x.to(device, non_blocking=True))
        for kind in kinds:
            f = features_from(model, fmap, kind).float().cpu()
            if kind not in feats:  # preallocate once: features of big datasets are large
                feats[kind] = torch.empty((n, f.shape[1]), dtype=torch.float32)
            feats[kind][row:row + len(f)] = f
        if with_logits:
            logits.append(model.forward_head(fmap).float().cpu())
        labels.append(np.asarray(y).reshape(len(x), -1))  # (B, 1) or (B, L), as the readers store them
        row += len(x)
    return np.concatenate(labels), (torch.cat(logits) if with_logits else None), feats


def knn_scores(index: RetrievalIndex, queries: torch.Tensor, k: int, num_classes: int, multi_label: bool,
               leave_one_out: bool = False) -> np.ndarray:
    """kNN class scores: the fraction of the k nearest training images in each class (or with each label);
    ``leave_one_out``: the queries are the training images themselves, each leaves its own entry out."""
    _, idx = index.search_leave_one_out(queries, k) if leave_one_out else index.search(queries, k)
    neigh = index.labels.numpy()[idx]  # (Q, k, 1) or (Q, k, L)
    if multi_label:
        return neigh.mean(axis=1).astype(np.float32)
    votes = np.stack([(neigh[..., 0] == c).mean(axis=1) for c in range(num_classes)], axis=1)
    return votes.astype(np.float32)


def predict_specialist(cfg: SpecialistConfig) -> dict | list[dict]:
    """Evaluate a trained run (or kNN) on ``split``: results, plots and the retrieval index; returns the split's
    ``{"results", "files"}`` (a list of them, in order, when ``split`` is a list). It holds the run's lock, as
    training does: a run still being trained (its ``_best.pth`` still changing) is not evaluated."""
    from gsco.runtime import output_lock

    knn = cfg.training_procedure == "kNN"
    run = setup_specialist(cfg, checkpoint_follows=not knn)
    output_folder(run.files.output_dir, "output_path")
    with output_lock(run.files.output_dir, run=run.files.name, key="output_path"):
        outs = _predict(cfg, run, knn)
    return outs if isinstance(cfg.split, list) else outs[0]


def say_clamped(cfg: SpecialistConfig, offered: int, on_train: bool, knn: bool) -> None:
    """``search_top_n`` (and a kNN ``k``) above the ``offered`` training images: said, not clamped silently."""
    if cfg.search_top_n > offered:
        logger.warning("search_top_n %d: the training split offers %d neighbours per image%s; %d are stored",
                       cfg.search_top_n, offered, " (each image left out of its own)" if on_train else "", offered)
    if knn and cfg.k > offered:
        logger.warning("k %d: the kNN vote takes the %d training images there are", cfg.k, offered)


def _predict(cfg: SpecialistConfig, run, knn: bool) -> list[dict]:
    t0 = time.time()
    model = run.model
    checkpoint = None
    if not knn:
        checkpoint = cfg.checkpoint or str(run.files.best)
        load_specialist_checkpoint(model, checkpoint)
        logger.info("loaded %s", checkpoint)
    model.to(run.device).eval()

    splits = cfg.split if isinstance(cfg.split, list) else [cfg.split]
    kinds = tuple(dict.fromkeys([cfg.retrieval_features] + (["pooled"] if knn else [])))
    train = extract_features(run, "train", kinds, with_logits="train" in splits and not knn)
    index = RetrievalIndex(train[2][cfg.retrieval_features], train[0], backend=cfg.retrieval_backend)
    index = index.to(run.device) if cfg.retrieval_backend == "torch" else index
    if cfg.save_index:
        index.save(run.files.index, metadata={"run": run.files.name, "features": cfg.retrieval_features,
                                              "split": "train"})
    outs = []
    for split in splits:
        evaluated = train if split == "train" else extract_features(run, split, kinds, with_logits=not knn)
        files = dataclasses.replace(run.files, split=split)
        results = _results(cfg, run, knn, split, train, evaluated, index)
        results["checkpoint_file"] = checkpoint
        if cfg.save_index:
            results["index_file"] = str(files.index)
        title = f"{run.info.name} {split} {cfg.architecture} ({cfg.training_procedure}, {cfg.img_size}px)"
        labels, prob, info = evaluated[0], results["y_prob"], run.info
        results["roc_png"] = str(plot_roc(labels, prob, info.task, info.label_names, files.roc, title))
        results["confusion_png"] = str(plot_confusion(labels, prob, info.task, info.label_names, files.confusion,
                                                      title))
        write_json(results, files.results)
        outs.append({"results": results, "files": files})
    logger.info("evaluated in %.1f s", time.time() - t0)
    return outs


def _results(cfg: SpecialistConfig, run, knn: bool, split: str, train: tuple, evaluated: tuple,
             index: RetrievalIndex) -> dict:
    """One split's results: metrics, predictions and each image's nearest training images (on the training split
    each image leaves its own entry out)."""
    info = run.info
    on_train = split == "train"
    train_labels, _, train_feats = train
    test_labels, logits, test_feats = evaluated
    top_n = min(cfg.search_top_n, len(index) - on_train)
    say_clamped(cfg, len(index) - on_train, on_train, knn)
    if on_train:
        dists, ids = index.search_leave_one_out(test_feats[cfg.retrieval_features], top_n)
    else:
        dists, ids = index.search(test_feats[cfg.retrieval_features], top_n)
    if knn:
        knn_index = RetrievalIndex(train_feats["pooled"], train_labels, metric=cfg.knn_metric,
                                   backend=cfg.retrieval_backend)
        knn_index = knn_index.to(run.device) if cfg.retrieval_backend == "torch" else knn_index
        prob = knn_scores(knn_index, test_feats["pooled"], min(cfg.k, len(knn_index) - on_train), info.num_classes,
                          info.multi_label, leave_one_out=on_train)
        y_logits = prob  # kNN has no logits: the vote fractions stand in for them
    else:
        prob = probabilities(logits, info).numpy()
        y_logits = logits.numpy()

    neighbour_labels = train_labels[ids]  # (Q, top_n, 1) or (Q, top_n, L)
    if not info.multi_label:
        neighbour_labels = neighbour_labels[..., 0]
    return {
        **classification_metrics(test_labels, prob, info.task),
        "checkpoint_file": None,
        "y_true": test_labels if info.multi_label else test_labels[:, 0],
        "y_pred": predict_labels(prob, info.task),
        "y_logits": y_logits,
        "y_prob": prob,
        "all_search_sims": dists,
        "all_search_train_ids": ids,
        "all_search_train_labels": neighbour_labels,
        "dataset": info.name,
        "split": split,
        "task": info.task,
        "label_names": list(info.label_names),
        "img_size": cfg.img_size,
        "architecture": cfg.architecture,
        "training_procedure": cfg.training_procedure,
        "seed": cfg.seed,
        "preprocess": cfg.preprocess,
        "search_top_n": top_n,
        "retrieval_features": cfg.retrieval_features,
        "search_distance": "cosine distance (1 - cosine similarity); smaller is more similar",
    }


def _report(cfg: SpecialistConfig, outs: dict | list[dict]) -> None:
    for out in outs if isinstance(outs, list) else [outs]:
        r, files = out["results"], out["files"]
        auc = "n/a" if r["AUC"] is None or np.isnan(r["AUC"]) else f"{r['AUC']:.4f}"
        print(f"{r['dataset']} {r['split']}: ACC {r['ACC']:.4f}  AUC {auc}  ({len(r['y_true'])} images)")
        print(f"results: {files.results}")
        for key in ("roc_png", "confusion_png", "index_file"):
            if key in r:
                print(f"{key.removesuffix('_png').removesuffix('_file')}: {r[key]}")


def main(argv: list[str] | None = None) -> int:
    return run_cli("Evaluate a specialist on the test split and build its retrieval index.", predict_specialist,
                   _report, argv)


if __name__ == "__main__":
    sys.exit(main())
