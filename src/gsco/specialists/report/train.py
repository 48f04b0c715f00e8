"""Train the report specialist (R2GenGPT's recipe): AdamW, cosine schedule per epoch, validation reports scored after
every epoch, the best checkpoint kept by ``scorer_weights`` (BLEU-4 + CIDEr, half each).

    python -m gsco.specialists.report.train --config configs/report/tiny.yaml [key=value ...]
    torchrun --nproc_per_node 2 -m gsco.specialists.report.train --config configs/report/iu_xray_shallow.yaml

Data parallelism, mixed precision and device placement come from accelerate. Writes to ``run_dir``:
``checkpoints/checkpoint_epoch{E}_step{S}_bleu{B}_cider{C}.pth`` (R2GenGPT's name and layout: trainable parameters
only), ``best_checkpoint.json``, ``history.jsonl`` (one line per epoch), ``val/epoch{E}_reports.jsonl`` and
``last_state.pt`` — the resume state (trainable weights, optimizer, schedule, position in the epoch, RNG), written
every ``save_every_steps`` steps and at each epoch's end; a re-run continues from it.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from gsco.config import ConfigError, config_to_dict
from gsco.evaluation.process import is_main_process, main_process_lock
from gsco.runtime import output_folder, reading
from gsco.specialists.report.config import ReportConfig, report_command
from gsco.training import History

logger = logging.getLogger(__name__)


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The epoch's shuffled study order, a function of (seed, epoch) only: a resumed run skips exactly what was done."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000 + epoch)).tolist()


def cosine_lr(cfg: ReportConfig, epoch: int) -> float:
    """R2GenGPT's CosineAnnealingLR(T_max=epochs, eta_min=min_learning_rate), stepped per epoch."""
    cosine = (1 + math.cos(math.pi * epoch / cfg.epochs)) / 2
    return cfg.min_learning_rate + (cfg.learning_rate - cfg.min_learning_rate) * cosine


def autocast_precision(setting: str, cuda: bool) -> str:
    """accelerate's mixed_precision for the config's ``precision``: ``auto`` is bf16 on CUDA (R2GenGPT trains with
    Lightning's ``bf16-mixed``) and none on a CPU."""
    return setting if setting != "auto" else ("bf16" if cuda else "no")


def validation_score(metrics: dict, weights: dict[str, float]) -> float:
    return float(sum(metrics[k] * w for k, w in weights.items()))


def train_report_specialist(cfg: ReportConfig, stop_after_steps: int | None = None) -> dict:
    """Train; returns ``{history, best}``. ``stop_after_steps`` ends the run early (tests of resuming). One run per
    ``run_dir`` at a time: the first process holds the folder's lock."""

    output_folder(cfg.run_dir, "run_dir")
    with main_process_lock(cfg.run_dir, key="run_dir"):
        return _train(cfg, stop_after_steps)


def _train(cfg: ReportConfig, stop_after_steps: int | None) -> dict:
    from accelerate import Accelerator

    from gsco.runtime import seed_everything
    from gsco.specialists.report.data import ReportDataset, read_annotation
    from gsco.specialists.report.model import build_report_model

    seed_everything(cfg.seed)
    cpu = cfg.device == "cpu" or not torch.cuda.is_available()
    accelerator = Accelerator(cpu=cpu, mixed_precision=autocast_precision(cfg.precision, cuda=not cpu))
    out = output_folder(cfg.run_dir, "run_dir")
    (out / "checkpoints").mkdir(exist_ok=True)
    model, processor = build_report_model(cfg.model_settings(), accelerator.device)
    train_rows = read_annotation(cfg.annotation, "train")[: cfg.limit]
    val_rows = read_annotation(cfg.annotation, "val")[: cfg.limit]
    train_set = ReportDataset(train_rows, cfg.image_root, processor, cfg.dataset, cfg)
    val_set = ReportDataset(val_rows, cfg.image_root, processor, cfg.dataset, cfg)
    if cfg.drop_last and len(train_set) < cfg.batch_size:
        raise ConfigError(f"the training split has {len(train_set)} studies, fewer than batch_size {cfg.batch_size}: "
                          "with drop_last: true no step would run (lower batch_size or set drop_last=false)")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    state_file, history_file = out / "last_state.pt", History(out / "history.jsonl")
    start_epoch, skip, step, best = _resume(cfg, model, optimizer, state_file, history_file)
    model, optimizer = accelerator.prepare(model, optimizer)
    core = accelerator.unwrap_model(model)

    def save_state(epoch: int, batches_done: int) -> None:
        if accelerator.is_main_process:
            from gsco.runtime import atomic_torch_save
            from gsco.specialists.report.model import to_r2gengpt_key

            atomic_torch_save({"model": {to_r2gengpt_key(k): v.cpu() for k, v in core.trainable_state_dict().items()},
                               "optimizer": optimizer.state_dict(), "epoch": epoch, "batches_done": batches_done,
                               "step": step, "best": json.dumps(best), "rng": torch.get_rng_state()}, state_file)

    history = []
    for epoch in range(start_epoch, cfg.epochs):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(cfg, epoch)
        loader, n_batches = _epoch_loader(cfg, train_set, accelerator, epoch, skip)
        model.train()
        losses = []
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", initial=skip, total=n_batches, leave=False,
                   file=sys.stderr)
        for j, batch in enumerate(bar):
            done = skip + (j + 1) * accelerator.num_processes  # batches of this epoch done, all processes together
            if batch is None:
                continue
            tokens = core.tokenize_reports(batch["reports"]).to(accelerator.device)
            with accelerator.autocast():
                loss = model(batch["pixel_values"], batch["view_mask"], tokens["input_ids"], tokens["attention_mask"])
            accelerator.backward(loss)
            if cfg.max_grad_norm:
                accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad()
            step += 1
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
            if step % cfg.save_every_steps == 0:
                save_state(epoch, done)
            if stop_after_steps is not None and step >= stop_after_steps:
                save_state(epoch, done)
                return {"history": history, "best": best, "stopped_at_step": step}
        skip = 0
        record = {"epoch": epoch + 1, "step": step, "lr": cosine_lr(cfg, epoch),
                  "train_loss": float(sum(losses) / len(losses)) if losses else None}
        if accelerator.is_main_process and len(val_set):
            best = _validate(cfg, core, val_set, out, epoch, step, best, record, accelerator.device)
        if accelerator.is_main_process:
            history_file.append(record)
        history.append(record)
        save_state(epoch + 1, 0)
        accelerator.wait_for_everyone()
    return {"history": history, "best": best}


def _resume(cfg: ReportConfig, model, optimizer, state_file: Path, history: History) -> tuple[int, int, int, dict]:
    """(epoch, batches of it done, step, best) from ``last_state.pt``, or a fresh start."""
    from gsco.specialists.report.model import from_r2gengpt_key, load_trainable

    if not (cfg.resume and state_file.is_file()):
        if is_main_process():
            history.clear()  # a fresh run: rows already there belong to another run
        return 0, 0, 0, {"score": -math.inf, "checkpoint": None}
    with reading(state_file, "training state", "delete it to train from the start, or give resume=false"):
        state = torch.load(state_file, map_location="cpu", weights_only=True)
    load_trainable(model, {from_r2gengpt_key(k): v for k, v in state["model"].items()}, str(state_file))
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"])
    logger.info("resuming from %s: epoch %d, %d batches done, step %d", state_file, state["epoch"] + 1,
                state["batches_done"], state["step"])
    history.keep_until(state["epoch"])  # epochs after the saved state are done again
    return state["epoch"], state["batches_done"], state["step"], json.loads(state["best"])


def _epoch_loader(cfg: ReportConfig, train_set, accelerator, epoch: int, skip: int):
    """The epoch's training batches (its fixed shuffled order, the first ``skip`` batches left out), and how many
    batches the whole epoch has."""
    from gsco.specialists.report.data import collate_studies

    order = epoch_order(len(train_set), cfg.seed, epoch)
    n_batches = len(order) // cfg.batch_size if cfg.drop_last else math.ceil(len(order) / cfg.batch_size)
    sampler = torch.utils.data.BatchSampler(order[skip * cfg.batch_size:], cfg.batch_size, drop_last=cfg.drop_last)
    # its own generator: starting an epoch must not draw from the global RNG (dropout, drop-path), or a resumed
    # run would continue with other random numbers than the uninterrupted one
    loader = torch.utils.data.DataLoader(train_set, batch_sampler=sampler, num_workers=cfg.num_workers,
                                         collate_fn=collate_studies,
                                         generator=torch.Generator().manual_seed(cfg.seed + epoch))
    return accelerator.prepare_data_loader(loader), n_batches  # each process takes every world-th batch


def _validate(cfg: ReportConfig, core, val_set, out: Path, epoch: int, step: int, best: dict, record: dict,
              device) -> dict:
    """Validation reports (``val/epoch{E}_reports.jsonl``) scored into ``record``; a better score saves an
    R2GenGPT-named checkpoint and ``best_checkpoint.json``. Returns the best so far."""
    from gsco.metrics.report import report_metrics
    from gsco.runtime import append_rows
    from gsco.specialists.report.evaluate import generate_reports, study_loader
    from gsco.specialists.report.model import save_report_checkpoint

    val_file = out / "val" / f"epoch{epoch + 1}_reports.jsonl"
    val_file.parent.mkdir(exist_ok=True)
    val_file.unlink(missing_ok=True)
    for rows in generate_reports(core, study_loader(val_set, cfg.eval_batch_size, cfg.num_workers), device,
                                 cfg.generation_kwargs(), "validation reports", cfg.truncate_references):
        append_rows(val_file, rows)
    written = [json.loads(line) for line in val_file.read_text().splitlines()]
    metrics = report_metrics({r["id"]: r["annotation"] for r in written}, {r["id"]: r["answer"] for r in written},
                             cfg.report_tokenize, meteor=False)
    score = validation_score(metrics, cfg.scorer_weights)
    record.update(val=metrics, val_score=score)
    if score > best["score"]:
        name = f"checkpoint_epoch{epoch}_step{step}_bleu{metrics['BLEU_4']:3f}_cider{metrics['CIDEr']:3f}.pth"
        path = save_report_checkpoint(core, out / "checkpoints" / name, config_to_dict(cfg), epoch, step)
        best = {"score": score, "checkpoint": str(path), "epoch": epoch + 1, "step": step, "val": metrics}
        (out / "best_checkpoint.json").write_text(json.dumps(best, indent=2) + "\n")
        record["best"] = True
    logger.info("epoch %d: train loss %s, val BLEU-4 %.4f CIDEr %.4f (score %.4f%s)", epoch + 1,
                f"{record['train_loss']:.4f}" if record["train_loss"] is not None else "n/a",
                metrics["BLEU_4"], metrics["CIDEr"], score, ", best" if record.get("best") else "")
    return best


def _train_and_print(cfg: ReportConfig) -> None:
    result = train_report_specialist(cfg)
    best = result["best"]
    if best.get("checkpoint"):
        print(f"best checkpoint: {best['checkpoint']} (epoch {best['epoch']}, val score {best['score']:.4f})")
    print(f"history: {Path(cfg.run_dir) / 'history.jsonl'}")


main = report_command(_train_and_print, "Train the R2GenGPT-style report specialist.")


if __name__ == "__main__":
    sys.exit(main())
