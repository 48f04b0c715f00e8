"""Train one classification specialist (MedMNIST+ recipe by default).

    python -m gsco.specialists.train [--config configs/config.yaml] [key=value ...]

Writes ``{output_path}/{dataset}_{img_size}_{procedure}_{arch}_s{seed}_best.pth`` (and ``_final.pth``) as plain
state_dicts without prefix — the format of the published GSCo specialist checkpoints — plus ``_history.jsonl``
(one row per epoch) and ``_last.pth``, the state an interrupted run resumes from.

Every epoch reseeds the shuffling and torch's generator from ``seed + epoch``, so a resumed run repeats exactly
what the uninterrupted run would have done.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Callable

import torch
from tqdm import tqdm

from gsco.config import config_to_dict
from gsco.data.render import RENDER_KEYS
from gsco.evaluation.resumable import ResumeMismatchError
from gsco.metrics.classification import accuracy, auc
from gsco.runtime import atomic_torch_save, output_folder, output_lock, read_json, reading, write_json
from gsco.specialists.build import (
    collect_logits,
    loss_function,
    probabilities,
    run_cli,
    setup_specialist,
)
from gsco.specialists.config import SpecialistConfig
from gsco.specialists.models import freeze_backbone
from gsco.training import BestScore, History

logger = logging.getLogger(__name__)

EpochCallback = Callable[[int, dict], None]


def _optimizer(cfg: SpecialistConfig, params) -> torch.optim.Optimizer:
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)


def _scheduler(cfg: SpecialistConfig, opt: torch.optim.Optimizer):
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    if cfg.scheduler == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=cfg.milestones, gamma=cfg.gamma)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


# the keys that shape a trained specialist (the run's file name holds dataset, img_size, procedure, architecture, seed)
TRAINING_KEYS = ("epochs", "learning_rate", "batch_size", "preprocess", "as_rgb", "stem", "mean", "std", "pretrained",
                 "pretrained_path", "optimizer", "weight_decay", "scheduler", "milestones", "gamma",
                 "selection_metric", "early_stopping_patience", "deterministic")


def training_data(run) -> dict:
    """The files the run trains and selects on ({split: path, size, mtime, sha256}), recorded in ``_config.json``
    under ``training_data``; an unchanged file (size and time) is not hashed again."""
    from gsco.data.datasets import split_file
    from gsco.runtime import file_record

    cfg, files = run.cfg, run.files
    stored = read_json(files.config, "record of a run's settings") if files.config.is_file() else {}
    known = stored.get("training_data") or {}
    return {split: file_record(split_file(run.info, split, cfg.data_path, cfg.img_size), known.get(split))
            for split in ("train", "val")}


def check_same_run(cfg: SpecialistConfig, files, keys: tuple = TRAINING_KEYS, data: dict | None = None) -> None:
    """A run found in output_path is resumed (or reported as finished) only if it was trained with these settings
    (``keys``: TRAINING_KEYS, and the render keys where the dataset's images are files) on the same data
    (``data``: :func:`training_data`, compared by sha256)."""
    if not files.config.is_file():
        logger.warning("%s: no %s to check the earlier run's settings against; resuming it", files.last, files.config)
        return
    stored, current = read_json(files.config, "record of a run's settings"), config_to_dict(cfg)
    differ = [k for k in keys if k in stored and stored[k] != current[k]]
    if differ:
        shown = "; ".join(f"{k}: {stored[k]} -> {current[k]}" for k in differ[:4])
        raise ResumeMismatchError(f"{files.last} is a run trained with other settings ({shown}): use another "
                                  "output_path, or give overwrite=true to train it again")
    before = stored.get("training_data") or {}
    other = [s for s in (data or {}) if s in before and before[s].get("sha256") != data[s]["sha256"]]
    if other:
        s = other[0]
        raise ResumeMismatchError(f"{files.last} was trained on other data ({s} split: {before[s]['path']} sha256 "
                                  f"{before[s]['sha256'][:12]}… -> {data[s]['path']} sha256 "
                                  f"{data[s]['sha256'][:12]}…): use another output_path, or give overwrite=true to "
                                  "train it again")


def _resume(cfg: SpecialistConfig, files, parts: tuple, history: History, best: BestScore, keys: tuple, data: dict):
    """(first epoch, best score, finished?) of the run in output_path: a fresh start (no run, ``resume: false`` or
    ``overwrite: true``), or the interrupted / finished run, checked to be this one and loaded into ``parts``
    (model, optimizer, scheduler)."""
    if files.last.exists() and cfg.overwrite:
        for old in (files.last, files.best, files.final, files.history):
            old.unlink(missing_ok=True)
    if not (cfg.resume and files.last.exists()):
        history.clear()
        return 0, best, False
    check_same_run(cfg, files, keys, data)
    with reading(files.last, "training checkpoint", "delete it to train from the start, or give overwrite=true"):
        state = torch.load(files.last, map_location="cpu", weights_only=True)
    best = BestScore(best.maximize, state["best"], state["best_epoch"], state.get("bad_epochs", 0))
    if state.get("finished"):
        logger.info("%s already finished (%s); overwrite=true trains it again", files.name, files.last)
        return 0, best, True
    for part, obj in zip(("model", "optimizer", "scheduler"), parts):
        obj.load_state_dict(state[part])
    logger.info("resuming %s from epoch %d (best %s=%.4f at epoch %d)", files.name, state["epoch"] + 1,
                cfg.selection_metric, best.score, best.epoch)
    return state["epoch"] + 1, best, False


def train_specialist(cfg: SpecialistConfig, on_epoch_end: EpochCallback | None = None) -> dict:
    """Train per ``cfg``; returns the paths written and the best validation score.

    ``on_epoch_end(epoch, row)`` is called after each epoch's checkpoint is safely on disk (for logging hooks).
    """
    run = setup_specialist(cfg)
    files = run.files
    if cfg.training_procedure == "kNN":
        logger.info("kNN has no training step: the support set is built from the training split by predict")
        return {}
    output_folder(files.output_dir, "output_path")
    # one writer per run (other runs may train into the same output_path beside it)
    with output_lock(files.output_dir, run=files.name, key="output_path"):
        return _train(cfg, run, on_epoch_end)


def _train(cfg: SpecialistConfig, run, on_epoch_end: EpochCallback | None) -> dict:
    files, model, device, info = run.files, run.model, run.device, run.info
    train_ds, val_ds = run.dataset("train"), run.dataset("val")

    if cfg.training_procedure == "linearProbing":
        trainable = freeze_backbone(model)
    else:
        trainable = sum(p.numel() for p in model.parameters())
    model.to(device)
    opt = _optimizer(cfg, [p for p in model.parameters() if p.requires_grad])
    sched = _scheduler(cfg, opt)
    criterion = loss_function(info)
    history, best = History(files.history), BestScore(maximize=cfg.selection_metric != "val_loss")

    keys = TRAINING_KEYS + (RENDER_KEYS if info.format == "metafile" else ())  # npz images are not rendered
    data = training_data(run)
    start_epoch, best, finished = _resume(cfg, files, (model, opt, sched), history, best, keys, data)
    if finished:
        return _summary(files, best.score, best.epoch)
    write_json({**config_to_dict(cfg), "training_data": data}, files.config)

    logger.info(
        "training %s on %s (%d train / %d val images, %s, %s preprocessing) on %s: %d trainable parameters",
        cfg.architecture, info.name, len(train_ds), len(val_ds), info.task, cfg.preprocess, device, trainable,
    )
    generator = torch.Generator()
    train_loader = run.loader(train_ds, train=True, generator=generator)
    val_loader = run.loader(val_ds, train=False)
    t0 = time.time()
    epoch = start_epoch - 1
    for epoch in range(start_epoch, cfg.epochs):
        generator.manual_seed(cfg.seed + epoch)
        torch.manual_seed(cfg.seed + epoch)
        train_loss = _train_epoch(cfg, model, train_loader, opt, criterion, device, epoch)
        lr = opt.param_groups[0]["lr"]
        sched.step()
        row = {"epoch": epoch + 1, "lr": lr, "train_loss": train_loss,
               **_validation(model, val_loader, criterion, info, device), "seconds": round(time.time() - t0, 2)}
        row["best"] = best.update(row[cfg.selection_metric], epoch + 1)
        if row["best"]:
            atomic_torch_save(model.state_dict(), files.best)
        stop = cfg.early_stopping_patience > 0 and best.bad_epochs >= cfg.early_stopping_patience
        # History first, then the resume state: a crash between the two re-runs this epoch, which rewrites the row.
        history.append(row)
        _save_state(files.last, model, epoch, best, finished=False, optimizer=opt, scheduler=sched)
        logger.info(
            "epoch %d/%d train_loss %.4f val_loss %.4f val_acc %.4f val_auc %.4f%s", epoch + 1, cfg.epochs,
            row["train_loss"], row["val_loss"], row["val_acc"], row["val_auc"], " *" if row["best"] else "",
        )
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)
        if stop:
            logger.info("early stop: %s did not improve for %d epochs", cfg.selection_metric, best.bad_epochs)
            break

    atomic_torch_save(model.state_dict(), files.final)
    _save_state(files.last, model, epoch, best, finished=True)
    logger.info("trained in %.1f s", time.time() - t0)
    return _summary(files, best.score, best.epoch)


def _save_state(path, model, epoch: int, best: BestScore, finished: bool, optimizer=None, scheduler=None) -> None:
    """The resume state (``_last.pth``); a finished run keeps only the model and the best score."""
    state = {"model": model.state_dict()}
    if not finished:
        state.update(optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict())
    state.update(epoch=epoch, best=best.score, best_epoch=best.epoch)
    if not finished:
        state["bad_epochs"] = best.bad_epochs
    atomic_torch_save({**state, "finished": finished}, path)


def _train_epoch(cfg: SpecialistConfig, model, loader, opt, criterion, device, epoch: int) -> float:
    """One pass over the training loader; the mean training loss."""
    model.train()
    if cfg.training_procedure == "linearProbing":
        model.eval()  # frozen backbone: keep its BatchNorm statistics as they are
        model.get_classifier().train()
    total, seen = 0.0, 0
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, file=sys.stderr)
    for x, y in bar:
        x = x.to(device, non_blocking=True)
        y = y.to(device)
        loss = criterion(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.item() * len(x)
        seen += len(x)
        bar.set_postfix(loss=f"{total / seen:.4f}")
    return total / max(seen, 1)


def _validation(model, loader, criterion, info, device) -> dict:
    y_val, logits = collect_logits(model, loader, device, "validation")
    target = torch.as_tensor(y_val, dtype=torch.float32) if info.multi_label else torch.as_tensor(y_val).long()
    prob = probabilities(logits, info).numpy()
    return {"val_loss": float(criterion(logits, target)), "val_acc": accuracy(y_val, prob, info.task),
            "val_auc": auc(y_val, prob, info.task)}


def _summary(files, best: float | None, best_epoch: int) -> dict:
    return {"best_checkpoint": files.best, "final_checkpoint": files.final, "history": files.history,
            "config": files.config, "best_score": best, "best_epoch": best_epoch}


def _report(cfg: SpecialistConfig, summary: dict) -> None:
    if not summary:
        print("kNN: nothing to train; run `bash inference_specialist.sh` (gsco.specialists.predict) to evaluate.")
        return
    print(f"best {cfg.selection_metric} {summary['best_score']:.4f} at epoch {summary['best_epoch']}")
    for key in ("best_checkpoint", "final_checkpoint", "history", "config"):
        print(f"{key}: {summary[key]}")


def main(argv: list[str] | None = None) -> int:
    return run_cli("Train one classification specialist.", train_specialist, _report, argv)


if __name__ == "__main__":
    sys.exit(main())
