"""How much GPU memory a generalist run needs, per part, before anything is loaded: MedDr, or a published size of
another family (``model=medgemma-27b``, the published sizes of :mod:`gsco.generalist.families`), or any model folder.

    python -m gsco.meddr.plan model=meddr-40b batch_size=8 prompt_length=1024

The model is built on the meta device (no memory, no weights), so the parameter counts are exact for a preset or a
converted model folder. For each quantization the weight bytes follow each library's storage:

- none: every parameter in ``dtype``;
- torchao-int8: each quantized ``nn.Linear`` weight as int8, plus an fp32 scale and an int8 zero point per output
  row (equal to the bytes measured on a quantized model: tests/generalist/test_quantization.py);
- int8 (bitsandbytes LLM.int8): int8 weights plus an fp32 scale per output row;
- nf4 (bitsandbytes, double quantization): 4 bits per weight, one 8-bit scale per 64 weights and an fp32 scale per
  256 of those.

Modules in ``keep_unquantized`` (vision tower, projector, LM head by default), embeddings, norms and biases stay in
``dtype``. The KV cache holds keys and values of every LLM layer for ``batch_size`` sequences of ``prompt_length``
(image tokens included) + ``max_new_tokens`` (in full also for Gemma 3's sliding-window layers, which keep at most
1,024: an upper bound there). Activations and the CUDA context are not counted: a part "fits" a GPU
when the total is at most ``usable_fraction`` of it.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from gsco.generalist.quantization import KEEP_UNQUANTIZED, QUANTIZATIONS, kept

PARTS = ("vision tower", "projector", "LLM", "LM head")
GIB = 1024 ** 3
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}


@dataclasses.dataclass
class PlanConfig:
    model: str = "meddr-40b"  # meddr-40b, a published size (medgemma-4b, medgemma-27b, qwen2.5-vl-7b, qwen2.5-vl-72b,
    # internvl3-8b, internvl3-78b), any model folder, or a MedDr preset (tiny, a preset YAML)
    quantization: list[str] = dataclasses.field(default_factory=lambda: ["none", "int8", "nf4"])  # one column each
    keep_unquantized: list[str] = dataclasses.field(default_factory=lambda: list(KEEP_UNQUANTIZED))  # kept 16-bit
    dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"  # the weights' (and the KV cache's) dtype
    batch_size: int = 8  # sequences generated together
    prompt_length: int = 1024  # prompt tokens per sequence, image tokens included (MedDr: 256 per image)
    max_new_tokens: int = 512  # generated tokens per sequence (held in the KV cache)
    gpu_memory_gib: list[float] = dataclasses.field(default_factory=lambda: [24.0, 48.0, 80.0])  # GPUs to compare
    usable_fraction: float = 0.9  # share of a GPU the weights and KV cache may fill (activations, CUDA context)
    out: str | None = None  # also write the plan as JSON here

    def validate(self) -> None:
        from gsco.config import ConfigError

        for q in self.quantization:
            if q not in QUANTIZATIONS:
                raise ConfigError(f"key 'quantization': {q!r} is not one of {', '.join(QUANTIZATIONS)}")
        if min(self.batch_size, self.prompt_length) < 1 or self.max_new_tokens < 0:
            raise ConfigError("keys 'batch_size', 'prompt_length' must be >= 1 and 'max_new_tokens' >= 0")
        if not 0 < self.usable_fraction <= 1:
            raise ConfigError(f"key 'usable_fraction': {self.usable_fraction} is not in (0, 1]")


def meta_model(model: str, dtype: torch.dtype) -> nn.Module:
    """The model, built on the meta device: a published generalist's size (gsco.generalist.families: medgemma-4b,
    qwen2.5-vl-72b, ...), any model folder's config.json (a converted MedDr, MedGemma, ...) or a MedDr preset (name
    or YAML)."""
    from gsco.generalist.families import meta_model_of_size, sizes

    if model in sizes():
        return meta_model_of_size(model, dtype)
    folder = Path(model)
    if (folder / "config.json").is_file():
        from transformers import AutoConfig, AutoModelForImageTextToText

        from gsco.generalist.registry import import_family_of

        import_family_of(folder)  # MedDr's classes
        config = AutoConfig.from_pretrained(str(folder))
        with torch.device("meta"):
            return AutoModelForImageTextToText.from_config(config).to(dtype)
    from gsco.meddr.model import MedDrForConditionalGeneration
    from gsco.meddr.presets import preset_model_config

    with torch.device("meta"):
        return MedDrForConditionalGeneration(preset_model_config(model)).to(dtype)


# module names of each family's parts (gsco.generalist.families); a projector inside a vision module (Qwen2.5-VL's
# merger) counts as the projector
PROJECTORS = ("multi_modal_projector", "connector", "merger")
VISION = ("vision_tower", "visual", "vision_model")


def part_of(name: str) -> str:
    dotted = f".{name}."
    if any(f".{p}." in dotted for p in PROJECTORS):
        return "projector"
    if any(f".{v}." in dotted for v in VISION):
        return "vision tower"
    if name.startswith("lm_head."):
        return "LM head"
    return "LLM"


def linear_weight_bytes(out_features: int, in_features: int, quantization: str, dtype_bytes: int) -> int:
    """Bytes of one ``nn.Linear`` weight stored under ``quantization``."""
    n = out_features * in_features
    if quantization == "torchao-int8":
        return n + out_features * 4 + out_features  # int8 data, fp32 scale, int8 zero point per row
    if quantization == "int8":
        return n + out_features * 4  # int8 data, fp32 row scale (SCB)
    if quantization == "nf4":
        blocks = math.ceil(n / 64)
        return math.ceil(n / 2) + blocks + math.ceil(blocks / 256) * 4 + 256 * 4  # + 8-bit absmax, fp32 absmax2, code
    return n * dtype_bytes


def weight_plan(model: nn.Module, quantization: str, keep: list[str], dtype_bytes: int) -> dict[str, dict]:
    """Parameters and bytes per part (buffers counted as stored)."""
    plan = {part: {"parameters": 0, "bytes": 0} for part in PARTS}
    quantized = set()
    if quantization != "none":
        quantized = {f"{name}.weight" for name, module in model.named_modules()
                     if isinstance(module, nn.Linear) and not kept(name, keep)}
    linear_shapes = {f"{name}.weight": (m.out_features, m.in_features) for name, m in model.named_modules()
                     if isinstance(m, nn.Linear)}
    for name, param in model.named_parameters():
        row = plan[part_of(name)]
        row["parameters"] += param.numel()
        if name in quantized:
            row["bytes"] += linear_weight_bytes(*linear_shapes[name], quantization, dtype_bytes)
        else:
            row["bytes"] += param.numel() * param.element_size()
    for name, buffer in model.named_buffers():
        plan[part_of(name)]["bytes"] += buffer.numel() * buffer.element_size()
    return plan


def kv_cache_bytes(model: nn.Module, batch_size: int, tokens: int, dtype_bytes: int) -> int:
    text = model.config.text_config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    kv_heads = text.num_key_value_heads or text.num_attention_heads
    return 2 * text.num_hidden_layers * batch_size * tokens * kv_heads * head_dim * dtype_bytes


def plan(cfg: PlanConfig) -> dict:
    """{quantization: {part: {parameters, bytes}, "KV cache": ..., "total": bytes, "fits": {GiB: bool}}}."""
    dtype_bytes = DTYPE_BYTES[cfg.dtype]
    model = meta_model(cfg.model, getattr(torch, cfg.dtype))
    tokens = cfg.prompt_length + cfg.max_new_tokens
    kv = kv_cache_bytes(model, cfg.batch_size, tokens, dtype_bytes)
    result = {}
    for q in cfg.quantization:
        parts = weight_plan(model, q, cfg.keep_unquantized, dtype_bytes)
        weights = sum(p["bytes"] for p in parts.values())
        total = weights + kv
        result[q] = {**parts, "weights": weights, "KV cache": kv, "total": total,
                     "fits": {str(g): total <= g * GIB * cfg.usable_fraction for g in cfg.gpu_memory_gib}}
    return result


def human(n: int) -> str:
    for unit, size in (("GiB", GIB), ("MiB", 1024 ** 2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


def table(cfg: PlanConfig, result: dict) -> str:
    """The plan as a Markdown table: one column per quantization."""
    qs = list(result)
    lines = [f"| {cfg.model}, {cfg.dtype}, batch {cfg.batch_size}, {cfg.prompt_length}+{cfg.max_new_tokens} tokens | "
             + " | ".join(qs) + " |", "|---|" + "---|" * len(qs)]
    for part in (*PARTS, "weights", "KV cache", "total"):
        cells = [result[q][part]["bytes"] if isinstance(result[q][part], dict) else result[q][part] for q in qs]
        label = f"**{part}**" if part in ("weights", "total") else part
        lines.append(f"| {label} | " + " | ".join(human(c) for c in cells) + " |")
    for g in cfg.gpu_memory_gib:
        fits = ["yes" if result[q]["fits"][str(g)] else "no" for q in qs]
        lines.append(f"| fits {g:g} GiB (≤ {cfg.usable_fraction:.0%}) | " + " | ".join(fits) + " |")
    return "\n".join(lines)


def _plan_and_print(cfg: PlanConfig) -> None:
    result = plan(cfg)
    print(table(cfg, result))
    if cfg.out:
        from gsco.runtime import write_json

        write_json({"config": dataclasses.asdict(cfg), "plan": result}, Path(cfg.out))
        print(f"plan: {cfg.out}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    from gsco.cli import command

    return command(PlanConfig, _plan_and_print,
                   description="Memory a generalist needs per part, per quantization.")(argv)


if __name__ == "__main__":
    sys.exit(main())
