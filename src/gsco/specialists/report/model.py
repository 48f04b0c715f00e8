"""The report specialist: R2GenGPT's design on transformers' ``SwinModel`` and ``LlamaForCausalLM``.

The Swin encoder's last hidden state (49 patch tokens for Swin-B 224; views of a study averaged) goes through the
*visual mapper* — ``llama_proj`` (Linear to the LLM width) then ``layer_norm`` — and sits inside the prompt

    <s>Human: <Img>[image tokens]</Img> Generate a comprehensive and detailed diagnosis report for this chest xray
    image. \\nAssistant:

(one line in the prompt; broken here only to fit)

after which the LLM writes the report, ended by ``</s>``. The LLM stays frozen (``train_llm: true`` trains it too —
only for the random toy LLM of the ``tiny`` preset, which cannot learn otherwise). Alignment modes (R2GenGPT's):

- ``shallow``: Swin frozen, the mapper trained;
- ``delta``: as shallow plus LoRA on Swin's attention ``query``/``value`` (r 16, alpha 16, dropout 0.1, peft);
- ``deep``: Swin trained too.

R2GenGPT's optional ``llm_use_lora`` (LoRA r 16 / alpha 16 on the LLM's q_proj/v_proj) is supported as well.

Module names are R2GenGPT's (``visual_encoder``, ``llama_model``, ``llama_proj``, ``layer_norm``), so its checkpoints
— ``{"model": trainable parameters, "config", "epoch", "step"}`` — load by name, and ours are written the same way.
R2GenGPT ran transformers 4.30, whose Swin names differ from transformers 5's (``attention.self.query`` is now
``attention.q_proj``, ``intermediate.dense`` is ``mlp.fc1``, ...): checkpoint keys are translated both ways
(:func:`to_r2gengpt_key`, :func:`from_r2gengpt_key`).
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
from collections import OrderedDict
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from gsco.config import ConfigError
from gsco.runtime import UnreadableFileError, reading

logger = logging.getLogger(__name__)

Mode = Literal["shallow", "delta", "deep"]
IMAGE_PLACEHOLDER = "<ImageHere>"
PROMPT_TEMPLATE = "Human: <Img><ImageHere></Img> {prompt} \nAssistant:"
DEFAULT_PROMPT = "Generate a comprehensive and detailed diagnosis report for this chest xray image."

# The tiny preset: a 56 px Swin with two stages (7x7 = 49 output tokens, like Swin-B at 224) and a 2-layer Llama over
# a byte-level tokenizer with Llama-2's special ids (<unk> 0, <s> 1, </s> 2).
TINY_SWIN = dict(image_size=56, patch_size=4, num_channels=3, embed_dim=8, depths=[1, 1], num_heads=[1, 2],
                 window_size=7, mlp_ratio=2.0)
TINY_LLAMA = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=2, max_position_embeddings=1024, rms_norm_eps=1e-6, tie_word_embeddings=False)
SWIN_B_HINT = "Swin-B 224 (microsoft/swin-base-patch4-window7-224)"
LLAMA_HINT = "Llama-2-7B-chat (meta-llama/Llama-2-7b-chat-hf)"


@dataclasses.dataclass
class ReportModelSettings:
    vision_model: str = "tiny"  # "tiny" or a local SwinModel folder (Swin-B 224 for R2GenGPT)
    llm: str = "tiny"  # "tiny" or a local Llama folder (Llama-2-7B-chat for R2GenGPT), with its tokenizer
    mode: Mode = "shallow"
    vis_lora_r: int = 16
    vis_lora_alpha: int = 16
    lora_dropout: float = 0.1
    global_only: bool = False  # Swin's pooled vector (one image token) instead of its 49 patch tokens
    prompt: str = DEFAULT_PROMPT
    end_sym: str | None = None  # appended to each target report; null: the tokenizer's eos token (</s>)
    max_length: int = 60  # target tokens per report (with end_sym); longer reports are cut (R2GenGPT: truncation=True)
    # auto: fp16 on CUDA (R2GenGPT loads its LLM with torch_dtype=float16), else fp32
    llm_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    train_llm: bool = False  # beyond R2GenGPT (whose LLM is always frozen): for toy LLMs from random init only
    llm_use_lora: bool = False  # R2GenGPT's --llm_use_lora: LoRA on the LLM's q_proj/v_proj (peft's Llama default)
    llm_lora_r: int = 16
    llm_lora_alpha: int = 16


def tiny_tokenizer():
    from gsco.tokenizers import byte_level_tokenizer

    tok = byte_level_tokenizer(["<unk>", "<s>", "</s>"], 4096, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    tok.pad_token_id = 0  # R2GenGPT pads with id 0
    return tok


def _local_dir(path: str, key: str, hint: str) -> Path:
    folder = Path(path)
    if not folder.is_dir():
        raise ConfigError(f"key {key!r}: {path} is not a folder; R2GenGPT needs {hint} on disk (nothing is "
                          "downloaded) — see README, 'Report specialist'")
    return folder


def build_vision(settings: ReportModelSettings):
    """The Swin encoder and its image processor."""
    from transformers import SwinConfig, SwinModel, ViTImageProcessor

    if settings.vision_model == "tiny":
        config = SwinConfig(**TINY_SWIN)
        model = SwinModel(config)
    else:
        folder = _local_dir(settings.vision_model, "vision_model", SWIN_B_HINT)
        model = SwinModel.from_pretrained(folder, local_files_only=True)
        if (folder / "preprocessor_config.json").is_file():
            from transformers import AutoImageProcessor

            return model, AutoImageProcessor.from_pretrained(folder, local_files_only=True)
    size = model.config.image_size
    processor = ViTImageProcessor(size={"height": size, "width": size}, resample=3,  # bicubic, as Swin-B's
                                  image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    return model, processor


def build_llm(settings: ReportModelSettings, device: torch.device | None = None):
    """The frozen Llama and its tokenizer (pad id 0: R2GenGPT sets pad_token_id = 0)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    dtype = settings.llm_dtype
    if dtype == "auto":
        dtype = "float16" if device is not None and device.type == "cuda" else "float32"
    if settings.llm == "tiny":
        tokenizer = tiny_tokenizer()
        config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=1, eos_token_id=2, pad_token_id=0, **TINY_LLAMA)
        model = LlamaForCausalLM(config).to(getattr(torch, dtype))
    else:
        folder = _local_dir(settings.llm, "llm", LLAMA_HINT)
        tokenizer = AutoTokenizer.from_pretrained(folder, use_fast=False, local_files_only=True)
        tokenizer.pad_token_id = 0
        model = LlamaForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype), local_files_only=True)
    return model, tokenizer


class ReportGenerator(nn.Module):
    """Swin -> visual mapper -> frozen Llama. ``forward`` returns the report loss; ``generate`` writes reports."""

    def __init__(self, visual_encoder, llama_model, tokenizer, settings: ReportModelSettings):
        super().__init__()
        num_features = visual_encoder.num_features
        if settings.mode == "delta":
            from peft import LoraConfig, get_peft_model

            # R2GenGPT's target modules "query"/"value" are named q_proj/v_proj in transformers 5's Swin
            lora = LoraConfig(r=settings.vis_lora_r, lora_alpha=settings.vis_lora_alpha,
                              target_modules=["q_proj", "v_proj"], lora_dropout=settings.lora_dropout, bias="none")
            visual_encoder = get_peft_model(visual_encoder, lora)  # only the LoRA weights train
        else:
            visual_encoder.requires_grad_(settings.mode == "deep")
        if settings.llm_use_lora and settings.train_llm:
            raise ConfigError("keys 'llm_use_lora' and 'train_llm' exclude each other: LoRA trains adapters on a "
                              "frozen LLM")
        llama_model.requires_grad_(settings.train_llm)
        if settings.llm_use_lora:
            from peft import LoraConfig, TaskType, get_peft_model

            llama_model = get_peft_model(llama_model, LoraConfig(
                task_type=TaskType.CAUSAL_LM, r=settings.llm_lora_r, lora_alpha=settings.llm_lora_alpha,
                lora_dropout=settings.lora_dropout, target_modules=["q_proj", "v_proj"]))
        self.visual_encoder = visual_encoder
        self.llama_model = llama_model
        hidden = llama_model.config.hidden_size
        self.llama_proj = nn.Linear(num_features, hidden)
        self.layer_norm = nn.LayerNorm(hidden)
        self.tokenizer = tokenizer
        self.settings = settings
        self.end_sym = settings.end_sym if settings.end_sym is not None else tokenizer.eos_token
        before, after = PROMPT_TEMPLATE.format(prompt=settings.prompt).split(IMAGE_PLACEHOLDER)
        ids = lambda text: torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)  # noqa: E731
        self.register_buffer("prompt_before", torch.cat([torch.tensor([tokenizer.bos_token_id]), ids(before)]),
                             persistent=False)
        self.register_buffer("prompt_after", ids(after), persistent=False)

    # ------------------------------------------------------------------------------------------------ pieces
    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The parameters that train (what checkpoints store), by R2GenGPT's names."""
        return {name: p.detach() for name, p in self.named_parameters() if p.requires_grad}

    def encode_images(self, pixel_values: torch.Tensor, view_mask: torch.Tensor) -> torch.Tensor:
        """(B, V, 3, H, W) views and their (B, V) mask -> (B, N, hidden) image tokens: each view through Swin,
        the views of a study averaged, then the mapper (Linear + LayerNorm)."""
        b, v = view_mask.shape
        out = self.visual_encoder(pixel_values=pixel_values.flatten(0, 1))
        feats = out.pooler_output.unsqueeze(1) if self.settings.global_only else out.last_hidden_state
        feats = feats.unflatten(0, (b, v))
        weights = view_mask.to(feats.dtype)[..., None, None]
        feats = (feats * weights).sum(1) / weights.sum(1).clamp(min=1)
        return self.layer_norm(self.llama_proj(feats))

    @torch.no_grad()
    def study_features(self, pixel_values: torch.Tensor, view_mask: torch.Tensor) -> torch.Tensor:
        """(B, C) retrieval features: Swin's pooled output (the mean of its patch tokens), averaged over views."""
        b, v = view_mask.shape
        pooled = self.visual_encoder(pixel_values=pixel_values.flatten(0, 1)).pooler_output.unflatten(0, (b, v))
        weights = view_mask.to(pooled.dtype)[..., None]
        return (pooled * weights).sum(1) / weights.sum(1).clamp(min=1)

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.llama_model.get_input_embeddings()(ids)

    def _prompt_embeds(self, image_tokens: torch.Tensor) -> torch.Tensor:
        b = image_tokens.shape[0]
        dtype = self.llama_model.get_input_embeddings().weight.dtype
        return torch.cat([self._embed(self.prompt_before).expand(b, -1, -1), image_tokens.to(dtype),
                          self._embed(self.prompt_after).expand(b, -1, -1)], dim=1)

    def tokenize_reports(self, reports: list[str]) -> dict[str, torch.Tensor]:
        """Targets as R2GenGPT builds them: report + end_sym, no special tokens added, cut to max_length."""
        return self.tokenizer([r + self.end_sym for r in reports], add_special_tokens=False, padding="longest",
                              truncation=True, max_length=self.settings.max_length, return_tensors="pt")

    def truncated_reference(self, report: str) -> str:
        """The reference as R2GenGPT's validation and test score it: tokenized without end_sym, cut to max_length
        tokens and decoded back (so long reports lose their tail)."""
        ids = self.tokenizer(report, add_special_tokens=False, truncation=True,
                             max_length=self.settings.max_length)["input_ids"]
        return self.decode(torch.tensor(ids))

    # ------------------------------------------------------------------------------------------------ steps
    def forward(self, pixel_values: torch.Tensor, view_mask: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: torch.Tensor) -> torch.Tensor:
        """The mean cross-entropy over the report tokens (prompt and image positions carry no loss)."""
        prompt = self._prompt_embeds(self.encode_images(pixel_values, view_mask))
        inputs = torch.cat([prompt, self._embed(input_ids)], dim=1)
        mask = torch.cat([torch.ones(prompt.shape[:2], dtype=attention_mask.dtype, device=attention_mask.device),
                          attention_mask], dim=1)
        labels = torch.cat([torch.full(prompt.shape[:2], -100, dtype=torch.long, device=input_ids.device),
                            input_ids.masked_fill(attention_mask == 0, -100)], dim=1)
        return self.llama_model(inputs_embeds=inputs, attention_mask=mask, labels=labels).loss

    @torch.no_grad()
    def generate(self, pixel_values: torch.Tensor, view_mask: torch.Tensor, **generate_kwargs) -> list[str]:
        """Reports for a batch; ``generate_kwargs`` go to transformers' ``generate`` (beams, lengths, penalties)."""
        prompt = self._prompt_embeds(self.encode_images(pixel_values, view_mask))
        mask = torch.ones(prompt.shape[:2], dtype=torch.long, device=prompt.device)
        tok = self.tokenizer
        out = self.llama_model.generate(inputs_embeds=prompt, attention_mask=mask, pad_token_id=tok.pad_token_id,
                                        eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id,
                                        **generate_kwargs)
        return [self.decode(ids) for ids in out]

    def decode(self, ids: torch.Tensor) -> str:
        text = self.tokenizer.decode(ids, skip_special_tokens=False)
        for token in (self.tokenizer.bos_token, self.tokenizer.unk_token):
            text = text.replace(token, "") if token else text
        return text.split(self.end_sym)[0].split(self.tokenizer.pad_token or "\0")[0].strip()


def build_report_model(settings: ReportModelSettings, device: torch.device | None = None):
    """(model, image processor); the model's trainable parts are fp32, the frozen LLM in ``llm_dtype``."""
    vision, processor = build_vision(settings)
    llm, tokenizer = build_llm(settings, device)
    model = ReportGenerator(vision, llm, tokenizer, settings)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    logger.info("report model (%s): %s trainable of %s parameters", settings.mode, f"{trainable:,}", f"{total:,}")
    return model, processor


# ------------------------------------------------------------------------------------------------ checkpoints
# Swin parameter names: transformers 4.x (R2GenGPT's checkpoints) -> transformers 5, applied in this order.
SWIN_RENAMES = [
    (".attention.self.query.", ".attention.q_proj."),
    (".attention.self.key.", ".attention.k_proj."),
    (".attention.self.value.", ".attention.v_proj."),
    (".attention.self.relative_position_bias_table", ".attention.relative_position_bias.relative_position_bias_table"),
    (".attention.output.dense.", ".attention.o_proj."),
    (".intermediate.dense.", ".mlp.fc1."),
    (".output.dense.", ".mlp.fc2."),
]


def from_r2gengpt_key(key: str) -> str:
    """An R2GenGPT checkpoint key -> ours (only ``visual_encoder.*`` keys differ)."""
    if key.startswith("visual_encoder."):
        for old, new in SWIN_RENAMES:
            key = key.replace(old, new)
    return key


def to_r2gengpt_key(key: str) -> str:
    """Our key -> the name R2GenGPT's code (transformers 4.30) gives it."""
    if key.startswith("visual_encoder."):
        for old, new in SWIN_RENAMES:
            key = key.replace(new, old)
    return key


class _Namespace(dict):
    """Stands in for ``argparse.Namespace`` in checkpoints: its fields become dict items."""

    def __setstate__(self, state):
        self.update(state or {})


# The hyper-parameter containers R2GenGPT (Lightning 2.0) checkpoints pickle, and what each loads as, so the file
# loads with ``weights_only=True``; any other pickled class is refused. Lightning's AttributeDict is a dict subclass
# (pickled as dict items), loaded as an OrderedDict.
HYPERPARAMETER_CLASSES = {
    "lightning.fabric.utilities.data.AttributeDict": OrderedDict,
    "lightning.pytorch.utilities.parsing.AttributeDict": OrderedDict,
    "lightning_fabric.utilities.data.AttributeDict": OrderedDict,
    "pytorch_lightning.utilities.parsing.AttributeDict": OrderedDict,
    "argparse.Namespace": _Namespace,
}


def load_checkpoint_file(path: str | Path) -> dict:
    """A ``.pth`` checkpoint loaded with ``weights_only=True``; the hyper-parameter containers listed above load as
    dicts, any other pickled class is refused."""
    import re

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist")
    allowed: list = []
    for _ in range(len(HYPERPARAMETER_CLASSES) + 1):
        try:
            with torch.serialization.safe_globals(allowed), reading(path, "checkpoint"):
                data = torch.load(path, map_location="cpu", weights_only=True)
            break
        except UnreadableFileError as exc:
            if not isinstance(exc.__cause__, pickle.UnpicklingError):
                raise  # truncated or not a torch file
            found = re.search(r"GLOBAL ([\w.]+)", str(exc.__cause__))
            name = found.group(1) if found else None
            if name not in HYPERPARAMETER_CLASSES or any(a[1] == name for a in allowed):
                raise ConfigError(f"checkpoint {path}: holds a pickled object ({name or 'unknown'}) that is not plain "
                                  "weights or hyper-parameters; refusing to load it") from None
            allowed.append((HYPERPARAMETER_CLASSES[name], name))
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise ConfigError(f"checkpoint {path}: expected R2GenGPT's layout {{'model': state dict, 'config', 'epoch', "
                          f"'step'}}, found {type(data).__name__} with keys "
                          f"{list(data)[:5] if isinstance(data, dict) else []}")
    return data


def load_trainable(model: ReportGenerator, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load trainable parameters by name; every trainable parameter must be there and every key must be one."""
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    everything = dict(model.named_parameters())
    missing = sorted(trainable - set(state))
    frozen = sorted(k for k in state if k in everything and k not in trainable)
    unknown = sorted(k for k in state if k not in everything)
    problems = []
    if missing:
        problems.append(f"lacks {len(missing)} trainable parameters of mode {model.settings.mode!r} "
                        f"(first: {missing[:3]})")
    if frozen:
        problems.append(f"holds {len(frozen)} parameters mode {model.settings.mode!r} keeps frozen (first: "
                        f"{frozen[:3]}; a deep/delta checkpoint needs mode=deep/delta)")
    if unknown:
        problems.append(f"holds {len(unknown)} keys this model does not have (first: {unknown[:3]})")
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))
    for name, tensor in state.items():
        param = everything[name]
        if param.shape != tensor.shape:
            raise ConfigError(f"{source}: {name} has shape {tuple(tensor.shape)}, the model {tuple(param.shape)} "
                              "(another vision model or LLM size?)")
        with torch.no_grad():
            param.copy_(tensor.to(param.dtype))


def load_report_checkpoint(model: ReportGenerator, path: str | Path) -> dict:
    """Load an R2GenGPT ``.pth`` (or one of ours) into ``model``; returns the file's other entries (config, epoch,
    step)."""
    data = load_checkpoint_file(path)
    state = {from_r2gengpt_key(k): v for k, v in data["model"].items()}
    load_trainable(model, state, source=f"checkpoint {path}")
    logger.info("loaded %d trainable tensors from %s (epoch %s, step %s)", len(state), path, data.get("epoch"),
                data.get("step"))
    return {k: v for k, v in data.items() if k != "model"}


def save_report_checkpoint(model: ReportGenerator, path: str | Path, config: dict, epoch: int, step: int) -> Path:
    """R2GenGPT's layout: ``{"model": trainable parameters under its names, "config", "epoch", "step"}``; loads with
    ``torch.load(weights_only=True)`` here and in R2GenGPT's own code."""
    from gsco.runtime import atomic_torch_save

    state = {to_r2gengpt_key(k): v.detach().cpu().clone() for k, v in model.trainable_state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save({"model": state, "config": dict(config), "epoch": int(epoch), "step": int(step)}, path)
    return path
