"""Fine-tune a generalist (MedDr, or an image-text-to-text model with its layout: ``model.vision_tower``,
``model.multi_modal_projector``, ``model.language_model``) with transformers' Trainer — LoRA, QLoRA or full — on one
CPU or under DeepSpeed on many GPUs.

    python -m gsco.recipes.finetune --config configs/meddr/finetune_tiny.yaml [key=value ...]
    bash train.sh                        (env MODEL, DATA, IMAGE_ROOT, OUT_DIR, MODE, DEEPSPEED, GPUS, NNODES, ...)

Writes ``{out_dir}/checkpoint-*`` (Trainer state; an interrupted run resumes from the last one),
``{out_dir}/final/`` (a standalone model directory: with LoRA, the adapter merged in) and, in LoRA mode,
``{out_dir}/adapter/`` (the unmerged adapter in peft format; ``python -m gsco.recipes.merge_lora`` merges it).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch

from gsco.cli import command
from gsco.config import ConfigError, config_to_dict
from gsco.data.render import RENDER_KEYS, RenderSettings
from gsco.evaluation.process import is_main_process, local_rank, main_process_lock, world_size
from gsco.evaluation.resumable import ResumeMismatchError
from gsco.runtime import output_folder, repo_file, write_json

logger = logging.getLogger(__name__)

LLM_LORA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclasses.dataclass
class FinetuneConfig(RenderSettings):
    # sections: in a YAML file a mapping of their keys; on the command line section.key=value or key=value
    SECTIONS = {
        "render": RENDER_KEYS,  # how DICOM / NIfTI inputs become images (gsco.data.render)
        "samples": ("max_seq_length", "overlong", "system"),
        "tuning": ("freeze_vision", "freeze_projector", "freeze_llm", "lora_r", "lora_alpha", "lora_dropout",
            "lora_modules"),
        "training": ("learning_rate", "epochs", "max_steps", "per_device_train_batch_size",
            "gradient_accumulation_steps", "warmup_ratio", "weight_decay", "adam_beta2", "lr_scheduler_type",
            "max_grad_norm", "bf16", "gradient_checkpointing", "group_by_length"),
        "bookkeeping": ("logging_steps", "save_steps", "save_total_limit", "seed", "resume", "num_workers"),
    }
    # --- what and where ---
    model: str | None = "tiny"  # model directory (a converted MedDr, ...) or a preset (random init)
    data: str | None = "data/examples/meddr/train_sample.json"  # sample file (JSON list / JSONL) or InternVL meta file
    image_root: str | None = None  # sample files: images relative to this (default: the file's folder)
    out_dir: str = "outputs/meddr-train"  # checkpoint-*/, final/ (standalone model), adapter/ (LoRA)
    mode: Literal["lora", "full", "qlora"] = "lora"  # lora: LLM adapters (into final/); qlora: on a 4-bit LLM; full
    deepspeed: str | None = None  # a DeepSpeed JSON config (configs/deepspeed/zero2.json, ...); null: none
    # --- samples: how each sample is read ---
    max_seq_length: int = 2048  # tokens per sample, the image's included
    overlong: Literal["truncate", "skip"] = "truncate"  # what happens to a sample longer than max_seq_length
    system: str | None = None  # system message of the chat template (null: its own)
    # --- tuning: what trains ---
    freeze_vision: bool = True  # keep the vision tower's weights
    freeze_projector: bool = False  # keep the MLP projector's weights
    freeze_llm: bool = False  # full mode only (in LoRA mode the LLM's own weights are always frozen)
    lora_r: int = 16  # LoRA rank
    lora_alpha: int = 32  # LoRA scale alpha (alpha / r multiplies the update; InternVL: 2r)
    lora_dropout: float = 0.05  # dropout on the LoRA input
    lora_modules: list[str] = dataclasses.field(default_factory=lambda: list(LLM_LORA_MODULES))  # LLM linear layers
    # --- training (the MedDr recipe: lr 1e-5, 2 epochs, warmup 3 %, weight decay 0.05) ---
    learning_rate: float = 1e-5  # peak learning rate (AdamW)
    epochs: float = 2.0  # passes over the data (fractions allowed)
    max_steps: int = -1  # > 0 overrides epochs
    per_device_train_batch_size: int = 4  # samples per GPU (or CPU process) per step
    gradient_accumulation_steps: int = 1  # steps accumulated per update (train.sh computes it from BATCH_SIZE)
    warmup_ratio: float = 0.03  # fraction of the updates spent warming up
    weight_decay: float = 0.05  # AdamW weight decay
    adam_beta2: float = 0.999  # AdamW's second-moment decay (transformers' default, and MedDr's recipe's)
    lr_scheduler_type: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"  # after warmup
    max_grad_norm: float = 1.0  # gradient clipping
    bf16: Literal["auto", "true", "false"] = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    gradient_checkpointing: bool = True  # recompute activations in the backward pass (less memory, slower)
    group_by_length: bool = True  # batches of similar-length samples (less padding; see finetune_tiny.yaml)
    # --- bookkeeping ---
    logging_steps: int = 10  # log the loss every N updates
    save_steps: int = 500  # checkpoint every N updates
    save_total_limit: int = 2  # checkpoints kept
    seed: int = 42  # data order and initialisation
    resume: bool = True  # continue from the last checkpoint in out_dir
    num_workers: int = 0  # DataLoader workers

    def validate(self) -> None:
        super().validate()  # the render keys
        for key in ("model", "data"):
            if getattr(self, key) is None:
                raise ConfigError(f"key {key!r} is required (this recipe leaves it to you: {key}=... or "
                                  f"{key.upper()}=... for train.sh)")
        for key in ("per_device_train_batch_size", "gradient_accumulation_steps", "max_seq_length", "lora_r",
                    "logging_steps", "save_steps"):
            if getattr(self, key) < 1:
                raise ConfigError(f"key {key!r}: must be at least 1, got {getattr(self, key)}")
        if not self.learning_rate > 0:
            raise ConfigError(f"key 'learning_rate': must be positive, got {self.learning_rate}")
        if not 0 < self.adam_beta2 < 1:
            raise ConfigError(f"key 'adam_beta2': must be in (0, 1), got {self.adam_beta2}")
        unknown = sorted(set(self.lora_modules) - set(LLM_LORA_MODULES))
        if unknown:
            raise ConfigError(f"key 'lora_modules': {unknown} are not LLM projections; choose from {LLM_LORA_MODULES}")
        if self.deepspeed and not repo_file(self.deepspeed).is_file():
            raise ConfigError(f"key 'deepspeed': {self.deepspeed} does not exist")
        if self.mode == "full" and self.freeze_vision and self.freeze_projector and self.freeze_llm:
            raise ConfigError("mode full with freeze_vision, freeze_projector and freeze_llm all true trains nothing")


def lora_target_pattern(modules: list[str]) -> str:
    """A regex matching the named projections of the *language model* only — a bare ``q_proj`` would also match
    the vision tower's attention."""
    attn = [m for m in modules if m in ("q_proj", "k_proj", "v_proj", "o_proj")]
    mlp = [m for m in modules if m in ("gate_proj", "up_proj", "down_proj")]
    parts = ([rf"self_attn\.({'|'.join(attn)})"] if attn else []) + ([rf"mlp\.({'|'.join(mlp)})"] if mlp else [])
    return rf"^model\.language_model\.layers\.\d+\.({'|'.join(parts)})$"


def check_fine_tunable(path: Path) -> None:
    """Refuse, before loading, a model of a family this recipe does not train (its samples expand the image as
    InternVL-Chat does, its freezing names InternVL's parts): one line naming the folder and what it is."""
    from gsco.generalist.families import FAMILIES, family_of
    from gsco.runtime import read_json

    model_type = read_json(path / "config.json", "model config").get("model_type")
    tunable = {family.model_type: name for name, family in FAMILIES.items() if family.finetune}
    if model_type not in tunable:
        known = family_of(model_type)
        what = f"family {known[0]}" if known else "no family in gsco.generalist.families"
        raise ConfigError(f"key 'model': {path} is a {model_type!r} model ({what}); train.sh fine-tunes the "
                          f"{', '.join(tunable.values())} family (model_type {', '.join(tunable)}: MedDr and its "
                          "presets) — other families answer with every command but are not fine-tuned here")


def base_model_dir(cfg: FinetuneConfig) -> Path:
    """The directory training starts from: ``model`` as given, or a preset built once and saved to
    ``{out_dir}/base`` so the adapter and a resumed run refer to the same starting weights. Call it before
    the TrainingArguments exist: under ZeRO-3 a model built afterwards would be partitioned into empty tensors."""
    from gsco.generalist import check_model_argument
    from gsco.generalist.model import check_weight_files

    path = check_model_argument(cfg.model)
    if path is not None:
        check_fine_tunable(path)
        check_weight_files(path)  # a truncated or pickled weight file: one error naming it, before loading
        return path
    base = Path(cfg.out_dir) / "base"
    if not (base / "config.json").is_file() and is_main_process():
        from gsco.generalist.registry import save_preset

        logger.warning("training from the %r preset's RANDOM initialisation (seed %d)", cfg.model, cfg.seed)
        save_preset(cfg.model, base, seed=cfg.seed, overwrite=True)  # a base without config.json is incomplete
    return base


# the settings a checkpoint in out_dir was trained with that a resumed run must share (others, such as max_steps or
# save_steps, may change between runs)
RESUME_KEYS = ("mode", "freeze_vision", "freeze_projector", "freeze_llm", "lora_r", "lora_alpha", "lora_modules",
               "max_seq_length", "overlong", "system")


def training_record(cfg: FinetuneConfig, base: Path) -> dict:
    """What the checkpoints in out_dir are of: the base model (path and fingerprint) and the data file's sha256."""
    from gsco.generalist.model import model_identity
    from gsco.runtime import file_fingerprint

    data = repo_file(cfg.data)
    return {"model": model_identity(base), "data": {"path": str(data.resolve()), "sha256": file_fingerprint(data)}
            if data.is_file() else str(data), **{k: getattr(cfg, k) for k in RESUME_KEYS}}


def check_same_training(cfg: FinetuneConfig, record: dict, checkpoint: str) -> None:
    """A checkpoint is resumed only by the run that wrote it: the same base model, data and tuning settings (the
    record in ``train_config.json``); anything else is one error saying what differs."""
    from gsco.runtime import read_json

    stored_file = Path(cfg.out_dir) / "train_config.json"
    stored = (read_json(stored_file, "record of a training run") if stored_file.is_file() else {}).get("training_run")
    if stored is None:
        logger.warning("%s: no record of the run that wrote %s; resuming it as this run's", stored_file, checkpoint)
        return
    differ = [k for k in record if stored.get(k) != record[k]]
    if differ:
        shown = "; ".join(f"{k}: {str(stored.get(k))[:70]} -> {str(record[k])[:70]}" for k in differ[:3])
        raise ResumeMismatchError(f"{cfg.out_dir} holds {Path(checkpoint).name} of another training run ({shown}): use "
                                  "another OUT_DIR, or resume=false to train from the start")


def check_qlora() -> None:
    """QLoRA needs bitsandbytes' 4-bit layers, which need CUDA: refuse in one line before anything is loaded."""
    import importlib.util

    if not torch.cuda.is_available():
        raise ConfigError("mode qlora trains LoRA on a 4-bit NF4 base (bitsandbytes), which needs a CUDA GPU, and "
                          "none is visible here: use mode=lora")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("mode qlora needs bitsandbytes: pip install -e '.[quant]'")


def load_base(path: Path, cfg: FinetuneConfig | None = None):
    """(model, processor) from a model directory (under ZeRO-3, partitioned as it loads). QLoRA: the LLM's linear
    layers in 4-bit NF4 (bitsandbytes), the vision tower, projector and LM head in bf16, prepared for k-bit training
    (peft)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from gsco.generalist.registry import import_family_of

    import_family_of(path)
    if cfg is not None and cfg.mode == "qlora":
        from peft import prepare_model_for_kbit_training

        from gsco.generalist.quantization import KEEP_UNQUANTIZED, bitsandbytes_config

        model = AutoModelForImageTextToText.from_pretrained(
            str(path), dtype=torch.bfloat16, device_map={"": local_rank()},
            quantization_config=bitsandbytes_config("nf4", KEEP_UNQUANTIZED, torch.bfloat16))
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    else:
        model = AutoModelForImageTextToText.from_pretrained(str(path), dtype=torch.float32)
    return model, AutoProcessor.from_pretrained(str(path))


def prepare_trainable(model, cfg: FinetuneConfig):
    """Freeze / wrap the model as the config says; returns the model to train."""
    inner = model.model
    if cfg.mode in ("lora", "qlora"):
        from peft import LoraConfig, get_peft_model

        model.requires_grad_(False)
        modules_to_save = [] if cfg.freeze_projector else ["multi_modal_projector"]
        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=lora_target_pattern(cfg.lora_modules), modules_to_save=modules_to_save,
                          task_type="CAUSAL_LM")
        model = get_peft_model(model, lora)
        if not cfg.freeze_vision:
            for p in model.base_model.model.model.vision_tower.parameters():
                p.requires_grad_(True)
    else:
        inner.vision_tower.requires_grad_(not cfg.freeze_vision)
        inner.multi_modal_projector.requires_grad_(not cfg.freeze_projector)
        inner.language_model.requires_grad_(not cfg.freeze_llm)
        model.lm_head.requires_grad_(not cfg.freeze_llm)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    logger.info("trainable parameters: %d of %d (%.3f %%), mode %s", trainable, total, 100 * trainable / total,
                cfg.mode)
    return model


def skip_shared_memory_op_in_one_cpu_process(cfg: FinetuneConfig) -> None:
    """DeepSpeed's CPU accelerator compiles a shared-memory all-reduce op (~50 s of C++ the first time in each
    environment) when its process group starts. The op speeds reductions between CPU processes on one machine;
    one process (``train.sh`` with GPUS=0) reduces nothing, so it is marked unavailable there and DeepSpeed
    starts at once. GPU runs and several CPU processes are untouched."""
    import os

    if not cfg.deepspeed or os.environ.get("DS_ACCELERATOR") != "cpu" or world_size() > 1:
        return
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False  # the probe's cached table, read at start-up


def training_arguments(cfg: FinetuneConfig):
    from transformers import TrainingArguments

    bf16 = torch.cuda.is_available() if cfg.bf16 == "auto" else cfg.bf16 == "true"
    return TrainingArguments(
        output_dir=cfg.out_dir, learning_rate=cfg.learning_rate, num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps, per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, warmup_steps=cfg.warmup_ratio,  # < 1: a ratio
        weight_decay=cfg.weight_decay, adam_beta2=cfg.adam_beta2, lr_scheduler_type=cfg.lr_scheduler_type,
        max_grad_norm=cfg.max_grad_norm,
        bf16=bf16, gradient_checkpointing=cfg.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        logging_steps=cfg.logging_steps, save_strategy="steps",
        save_steps=cfg.save_steps, save_total_limit=cfg.save_total_limit, seed=cfg.seed, data_seed=cfg.seed,
        dataloader_num_workers=cfg.num_workers, remove_unused_columns=False, report_to="none",
        deepspeed=str(repo_file(cfg.deepspeed)) if cfg.deepspeed else None, disable_tqdm=False,
    )


def last_checkpoint(output_dir: str) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(output_dir) if Path(output_dir).is_dir() else None


def _trainer_class():
    from transformers import Trainer
    from transformers.trainer_pt_utils import LengthGroupedSampler

    class GeneralistTrainer(Trainer):
        """Trainer whose length-grouped sampler takes the token counts the dataset computed when it tokenised,
        instead of loading every item (and its image) to measure it."""

        def _get_train_sampler(self, train_dataset=None):
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            if self.args.train_sampling_strategy == "group_by_length" and hasattr(dataset, "lengths"):
                return LengthGroupedSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                            lengths=dataset.lengths)
            return super()._get_train_sampler(train_dataset)

    return GeneralistTrainer


def train(cfg: FinetuneConfig, callbacks: list | None = None) -> dict:
    """Train per ``cfg`` (``callbacks``: transformers TrainerCallbacks, e.g. for logging); returns the final model
    directory, the global step, the mean training loss and the Trainer's log history."""

    if cfg.mode == "qlora":
        check_qlora()
    output_folder(cfg.out_dir)
    # one job per out_dir: rank 0 of the whole job (every node) holds the folder's lock, as evaluation does
    with main_process_lock(cfg.out_dir):
        return _train(cfg, callbacks)


def _train(cfg: FinetuneConfig, callbacks: list | None) -> dict:
    from gsco.data.conversations import ConversationCollator, ConversationDataset, read_training_data

    base = base_model_dir(cfg)
    skip_shared_memory_op_in_one_cpu_process(cfg)
    args = training_arguments(cfg)  # before loading: under ZeRO-3, from_pretrained then partitions as it loads
    if world_size() > 1:
        import torch.distributed as dist

        _ = args.device  # sets up the process group
        if dist.is_initialized():
            dist.barrier()  # the other ranks wait until rank 0 has written a preset's base directory
    resume = last_checkpoint(cfg.out_dir) if cfg.resume else None
    record = training_record(cfg, base)
    if resume:  # before anything is loaded
        check_same_training(cfg, record, resume)
    model, processor = load_base(base, cfg)
    samples = read_training_data(repo_file(cfg.data), cfg.image_root)
    if not samples:
        raise ConfigError(f"key 'data': {cfg.data} holds no usable sample")
    dataset = ConversationDataset(samples, processor, cfg.max_seq_length, cfg.overlong, cfg.system, render=cfg)
    model = prepare_trainable(model, cfg)
    GeneralistTrainer = _trainer_class()
    if cfg.gradient_checkpointing:
        model.enable_input_require_grads()
    trainer = GeneralistTrainer(model=model, args=args, train_dataset=dataset, callbacks=callbacks,
                           data_collator=ConversationCollator(processor.tokenizer.pad_token_id))
    if resume:
        logger.info("resuming from %s", resume)
    write_json({**config_to_dict(cfg), "training_run": record}, Path(cfg.out_dir) / "train_config.json")
    result = trainer.train(resume_from_checkpoint=resume)
    final = save_outputs(trainer, processor, cfg, base)
    return {"final": final, "global_step": trainer.state.global_step, "train_loss": result.training_loss,
            "log_history": trainer.state.log_history}


def save_complete(trainer, dst: Path, finish: Callable[[Path], None]) -> None:
    """``trainer.save_model`` (every rank: under ZeRO-3 it gathers the partitions) into ``.{name}.partial`` beside
    ``dst`` — one path for all ranks — then rank 0 adds what ``finish`` writes and renames it to ``dst``: a run
    killed while saving leaves the previous ``dst`` (or none), never half a model."""
    from gsco.runtime import replace_folder

    staging = dst.parent / f".{dst.name}.partial"
    if trainer.is_world_process_zero():
        shutil.rmtree(staging, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(staging))
    if trainer.is_world_process_zero():
        finish(staging)
        replace_folder(staging, dst)
    trainer.accelerator.wait_for_everyone()


def save_outputs(trainer, processor, cfg: FinetuneConfig, base: Path) -> Path:
    """``final/`` (standalone) and, for LoRA, ``adapter/`` (peft format); each appears only when complete."""
    out = Path(cfg.out_dir)
    model = trainer.model
    if cfg.mode in ("lora", "qlora"):  # QLoRA's adapter is merged into the 16-bit base, as QLoRA does
        save_complete(trainer, out / "adapter", processor.save_pretrained)
        if trainer.is_world_process_zero():
            from transformers.integrations.deepspeed import unset_hf_deepspeed_config

            from gsco.recipes.merge_lora import merge_lora

            unset_hf_deepspeed_config()  # the merge loads a whole, unpartitioned base model
            merge_lora(out / "adapter", out / "final", base=base, overwrite=True)  # this run owns final/
        trainer.accelerator.wait_for_everyone()
    else:
        def finish(folder: Path) -> None:
            processor.save_pretrained(folder)
            model.generation_config.save_pretrained(folder)

        save_complete(trainer, out / "final", finish)
    return out / "final"


def _train_and_print(cfg: FinetuneConfig) -> None:
    result = train(cfg)
    if is_main_process():
        print(f"steps: {result['global_step']}  train loss: {result['train_loss']:.4f}")
        print(f"model: {result['final']}")
        if cfg.mode in ("lora", "qlora"):
            print(f"adapter: {Path(cfg.out_dir) / 'adapter'}")


main = command(FinetuneConfig, _train_and_print, description="Fine-tune a generalist (LoRA, QLoRA or full).",
               config="configs/meddr/finetune_tiny.yaml", resolve=repo_file)


if __name__ == "__main__":
    sys.exit(main())
