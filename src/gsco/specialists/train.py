"""Train one classification specialist (MedMNIST+ recipe by default).

    python -m gsco.specialists.train [--config configs/config.yaml] [key=value ...]

Writes ``{output_path}/{dataset}_{img_size}_{procedure}_{arch}_s{seed}_best.pth`` (and ``_final.pth``) as plain
state_dicts without prefix — the format of the published GSCo specialist checkpoints — plus ``_history.jsonl``
(one row per epoch) and ``_last.pth``, the state an interrupted run resumes from.

Every epoch reseeds the shuffling and torch's generator from ``seed + epoch``, so a resumed run repeats exactly
what the uninterrupted run would have done.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from typing import Callable

import torch
from tqdm import tqdm

from gsco.config import config_to_dict
from gsco.metrics.classification import accuracy, auc
from gsco.runtime import atomic_torch_save, write_json
from gsco.specialists.build import (
    collect_logits, loss_function, probabilities, run_cli, setup_specialist,
)
from gsco.specialists.config import SpecialistConfig
from gsco.specialists.models import freeze_backbone

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


def _is_better(metric: str, value: float, best: float | None) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value < best if metric == "val_loss" else value > best


def train_specialist(cfg: SpecialistConfig, on_epoch_end: EpochCallback | None = None) -> dict:
    """Train per ``cfg``; returns the paths written and the best validation score.

    ``on_epoch_end(epoch, row)`` is called after each epoch's checkpoint is safely on disk (for logging hooks).
    """
    run = setup_specialist(cfg)
    files = run.files
    if cfg.training_procedure == "kNN":
        logger.info("kNN has no training step: the support set is built from the training split by predict")
        return {}
    files.output_dir.mkdir(parents=True, exist_ok=True)
    model, device, info = run.model, run.device, run.info
    train_ds, val_ds = run.dataset("train"), run.dataset("val")

    if cfg.training_procedure == "linearProbing":
        trainable = freeze_backbone(model)
    else:
        trainable = sum(p.numel() for p in model.parameters())
    model.to(device)
    opt = _optimizer(cfg, [p for p in model.parameters() if p.requires_grad])
    sched = _scheduler(cfg, opt)
    criterion = loss_function(info)

    start_epoch, best, best_epoch, bad_epochs = 0, None, -1, 0
    if cfg.resume and files.last.exists():
        state = torch.load(files.last, map_location="cpu", weights_only=True)
        if state.get("finished"):
            logger.info("%s already finished (%s); delete it to train again", files.name, files.last)
            return _summary(files, state["best"], state["best_epoch"])
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start_epoch, best, best_epoch, bad_epochs = state["epoch"] + 1, state["best"], state["best_epoch"], state["bad_epochs"]
        logger.info("resuming %s from epoch %d (best %s=%.4f at epoch %d)", files.name, start_epoch, cfg.selection_metric, best, best_epoch)
    elif files.history.exists():
        files.history.unlink()  # a fresh run: the old history belongs to another run
    write_json(config_to_dict(cfg), files.config)

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
        model.train()
        if cfg.training_procedure == "linearProbing":
            model.eval()  # frozen backbone: keep its BatchNorm statistics as they are
            model.get_classifier().train()
        total, seen = 0.0, 0
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, file=sys.stderr)
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
        lr = opt.param_groups[0]["lr"]
        sched.step()

        y_val, logits = collect_logits(model, val_loader, device, "validation")
        target = torch.as_tensor(y_val, dtype=torch.float32) if info.multi_label else torch.as_tensor(y_val).long()
        val_loss = float(criterion(logits, target))
        prob = probabilities(logits, info).numpy()
        row = {
            "epoch": epoch + 1, "lr": lr, "train_loss": total / max(seen, 1), "val_loss": val_loss,
            "val_acc": accuracy(y_val, prob, info.task), "val_auc": auc(y_val, prob, info.task),
            "seconds": round(time.time() - t0, 2),
        }
        score = row[cfg.selection_metric]
        if _is_better(cfg.selection_metric, score, best):
            best, best_epoch, bad_epochs = score, epoch + 1, 0
            atomic_torch_save(model.state_dict(), files.best)
        else:
            bad_epochs += 1
        row["best"] = epoch + 1 == best_epoch
        stop = cfg.early_stopping_patience > 0 and bad_epochs >= cfg.early_stopping_patience
        # History first, then the resume state: a crash between the two re-runs this epoch, which rewrites the row.
        _append_history(files.history, row)
        atomic_torch_save(
            {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             "epoch": epoch, "best": best, "best_epoch": best_epoch, "bad_epochs": bad_epochs, "finished": False},
            files.last,
        )
        logger.info(
            "epoch %d/%d train_loss %.4f val_loss %.4f val_acc %.4f val_auc %.4f%s", epoch + 1, cfg.epochs,
            row["train_loss"], val_loss, row["val_acc"], row["val_auc"], " *" if row["best"] else "",
        )
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)
        if stop:
            logger.info("early stop: %s did not improve for %d epochs", cfg.selection_metric, bad_epochs)
            break

    atomic_torch_save(model.state_dict(), files.final)
    atomic_torch_save(
        {"model": model.state_dict(), "epoch": epoch, "best": best, "best_epoch": best_epoch, "finished": True},
        files.last,
    )
    logger.info("trained in %.1f s", time.time() - t0)
    return _summary(files, best, best_epoch)


def _append_history(path, row: dict) -> None:
    """One JSON row per epoch; rows of epochs at or after this one (from an interrupted run) are dropped."""
    rows = []
    if path.exists():
        rows = [r for r in map(json.loads, path.read_text().splitlines()) if r["epoch"] < row["epoch"]]
    rows.append({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)


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
