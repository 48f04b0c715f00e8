"""The report specialist's config: R2GenGPT's IU-Xray recipe as defaults (``configs/report/*.yaml``)."""

from __future__ import annotations

import dataclasses
import re
from typing import Literal

from gsco.config import ConfigError
from gsco.data.render import RENDER_KEYS, RenderSettings
from gsco.specialists.report.model import DEFAULT_PROMPT, ReportModelSettings


@dataclasses.dataclass
class ReportConfig(RenderSettings):
    # sections: in a YAML file a mapping of their keys; on the command line section.key=value or key=value
    SECTIONS = {
        "data": ("dataset", "annotation", "image_root", "limit"),
        "model": ("vision_model", "llm", "mode", "vis_lora_r", "vis_lora_alpha", "lora_dropout", "global_only",
            "prompt", "end_sym", "max_length", "llm_dtype", "train_llm", "llm_use_lora", "llm_lora_r",
            "llm_lora_alpha"),
        "training": ("epochs", "batch_size", "learning_rate", "min_learning_rate", "weight_decay", "max_grad_norm",
            "seed", "precision", "drop_last", "save_every_steps", "scorer_weights", "resume"),
        "generation": ("eval_batch_size", "num_beams", "min_new_tokens", "max_new_tokens", "repetition_penalty",
            "length_penalty"),
        "evaluation": ("checkpoint", "split", "out_dir", "overwrite", "search_top_n", "retrieval_backend"),
        "scoring": ("report_tokenize", "truncate_references", "meteor"),
        "render": RENDER_KEYS,  # DICOM / NIfTI views (R2Gen's own data are PNGs)
    }
    # --- where ---
    run_dir: str = "outputs/report/iu_xray_shallow"  # the training run: checkpoints, history, best_checkpoint.json
    device: str = "auto"  # evaluation: the device; training: cpu forces the CPU, else accelerate places each process
    num_workers: int = 0  # DataLoader workers
    # --- data (R2Gen layout) ---
    dataset: str = "iu_xray"  # which cleaning rule the reports get (report/clean.py RULES: iu_xray, mimic_cxr)
    annotation: str = "data/iu_xray/annotation.json"  # R2Gen annotation: {train|val|test: [{id, report, image_path}]}
    image_root: str = "data/iu_xray/images"  # image_path entries are relative to this
    limit: int | None = None  # first N studies of each split (smoke runs)
    # --- model (R2GenGPT) ---
    vision_model: str = "tiny"  # local SwinModel folder (Swin-B 224) or "tiny"
    llm: str = "tiny"  # local Llama folder with its tokenizer (Llama-2-7B-chat) or "tiny"
    mode: Literal["shallow", "delta", "deep"] = "shallow"  # Swin frozen / LoRA on Swin / Swin trained
    vis_lora_r: int = 16  # delta mode: LoRA rank on Swin's query/value
    vis_lora_alpha: int = 16  # delta mode: LoRA alpha on Swin
    lora_dropout: float = 0.1  # dropout of every LoRA (Swin's and the LLM's)
    global_only: bool = False  # true: only Swin's pooled feature, not its patch tokens
    prompt: str = DEFAULT_PROMPT  # the instruction after the image (R2GenGPT's)
    end_sym: str | None = None  # null: the tokenizer's eos (</s>)
    max_length: int = 60  # target tokens per report
    # the LLM's weights: auto = fp16 on CUDA (R2GenGPT), fp32 on CPU
    llm_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    train_llm: bool = False  # beyond R2GenGPT (LLM always frozen): only for the tiny preset's random LLM
    llm_use_lora: bool = False  # R2GenGPT's option: LoRA on the LLM (q_proj, v_proj)
    llm_lora_r: int = 16  # llm_use_lora: LoRA rank
    llm_lora_alpha: int = 16  # llm_use_lora: LoRA alpha
    # --- training ---
    epochs: int = 15  # training epochs
    batch_size: int = 8  # training studies per step, per process
    learning_rate: float = 1e-4  # AdamW, cosine down to min_learning_rate
    min_learning_rate: float = 1e-6  # the cosine schedule's floor (per epoch, as R2GenGPT)
    weight_decay: float = 0.01  # AdamW weight decay
    max_grad_norm: float | None = None  # gradient clipping (null: none)
    seed: int = 42  # data order and initialisation
    # autocast: auto = bf16 on CUDA (R2GenGPT's --precision default 'bf16-mixed'), none on CPU; fp16 is an option
    precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    drop_last: bool = True  # the training loader drops the last partial batch (R2GenGPT's DataModule)
    save_every_steps: int = 200  # resume state every N steps (and at each epoch's end)
    # validation score that picks the best checkpoint: weights of report metrics (R2GenGPT: BLEU-4 and CIDEr)
    scorer_weights: dict[str, float] = dataclasses.field(default_factory=lambda: {"BLEU_4": 0.5, "CIDEr": 0.5})
    resume: bool = True  # continue an interrupted run from its last saved state
    # --- generation (R2GenGPT's IU-Xray evaluation) ---
    eval_batch_size: int = 12  # studies per generate() call (validation, evaluation, retrieval)
    num_beams: int = 3  # beam search width
    min_new_tokens: int = 40  # shortest report, in tokens
    max_new_tokens: int = 100  # longest report, in tokens
    repetition_penalty: float = 2.0  # > 1 discourages repeats
    length_penalty: float = 2.0  # beam scores: > 1 favours longer reports
    # --- evaluation ---
    checkpoint: str | None = None  # null: the best checkpoint of run_dir (best_checkpoint.json)
    split: Literal["train", "val", "test"] = "test"  # the split evaluated ({split}_reports.jsonl, _metrics.json)
    out_dir: str | None = None  # null: run_dir
    overwrite: bool = False  # write the reports over (a re-run with another checkpoint or input is refused otherwise)
    search_top_n: int = 10  # evaluation also retrieves this many similar training studies per study (RAD); 0: no
    retrieval_backend: Literal["torch", "faiss"] = "torch"  # exact search either way; faiss: its kernels (faiss-cpu)
    # --- scoring ---
    report_tokenize: Literal["none", "ptb"] = "none"  # none: score the cleaned reports as they are (R2GenGPT)
    # R2GenGPT scores against references cut to max_length tokens (its validation/test decode the tokenized
    # targets); true reproduces that, false (default) scores against the whole cleaned report
    truncate_references: bool = False
    meteor: bool = True  # METEOR needs Java

    def validate(self) -> None:
        self.check()
        for key in ("epochs", "batch_size", "eval_batch_size", "max_length", "num_beams", "max_new_tokens",
                    "save_every_steps"):
            if getattr(self, key) < 1:
                raise ConfigError(f"key {key!r}: must be at least 1, got {getattr(self, key)}")
        if self.min_new_tokens > self.max_new_tokens:
            raise ConfigError("key 'min_new_tokens' must not exceed 'max_new_tokens'")
        if not self.learning_rate > 0:
            raise ConfigError(f"key 'learning_rate': must be positive, got {self.learning_rate}")
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            raise ConfigError(f"key 'device': {self.device!r} is not valid; expected auto, cpu, cuda, cuda:N or mps")
        from gsco.metrics.report import REPORT_METRICS
        from gsco.specialists.report.clean import RULES

        if self.dataset not in RULES:
            raise ConfigError(f"key 'dataset': {self.dataset!r} has no report cleaning rule; choose from {list(RULES)}")

        unknown = sorted(set(self.scorer_weights) - set(REPORT_METRICS))
        if unknown or not self.scorer_weights:
            raise ConfigError(f"key 'scorer_weights': {unknown or 'empty'}; choose among {list(REPORT_METRICS)}")

    def model_settings(self) -> ReportModelSettings:
        fields = {f.name for f in dataclasses.fields(ReportModelSettings)}
        return ReportModelSettings(**{k: v for k, v in dataclasses.asdict(self).items() if k in fields})

    def generation_kwargs(self) -> dict:
        return {"num_beams": self.num_beams, "min_new_tokens": self.min_new_tokens,
                "max_new_tokens": self.max_new_tokens, "repetition_penalty": self.repetition_penalty,
                "length_penalty": self.length_penalty, "do_sample": False}


def report_command(run, description: str):
    """An entry point over ReportConfig (gsco.cli): ``[--config FILE] [key=value ...]``, FILE defaulting to
    configs/report/tiny.yaml (the repository's copy when run elsewhere); bad input exits with status 2."""
    from gsco.cli import command
    from gsco.runtime import repo_file

    return command(ReportConfig, run, description=description, config="configs/report/tiny.yaml", resolve=repo_file)
