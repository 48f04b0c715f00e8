"""Convert an original MedDr / InternVL-Chat-V1.2 checkpoint into a transformers model directory.

    python -m gsco.meddr.convert original=/path/to/MedDr_0401 out_dir=/path/to/meddr-hf [dtype=bfloat16] \
        [lora_alpha=32] [tokenizer=DIR] [overwrite=true]

(or the same keys from ``--config FILE``.)

The original checkpoint ships no model code; the result loads with ``MedDrForConditionalGeneration`` (or
``AutoModelForImageTextToText`` once :mod:`gsco.meddr` is imported) and ``AutoProcessor``. The conversion streams:
one source shard is read, renamed and written before the next is opened, so the ~80 GB checkpoint converts in far
less memory than it occupies. A LoRA stored unmerged (``base_layer`` + ``lora_A``/``lora_B``, as the published
checkpoint keeps it) is merged as ``W + alpha/r * B @ A`` (InternVL trains it with ``alpha = 2r``).

Anything unexpected — an unknown key, a shape that does not fit, a missing file or tensor, a LoRA half — stops
the conversion with a message that names it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
from tqdm import tqdm

from gsco.errors import GscoError
from gsco.runtime import OutputFolderError, building_folder, read_json, reading

logger = logging.getLogger(__name__)

VISION_LAYER_RENAMES = {
    "attn.proj": "attention.projection_layer",
    "attn.q_norm": "attention.q_norm",
    "attn.k_norm": "attention.k_norm",
    "norm1": "layernorm_before",
    "norm2": "layernorm_after",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
PROJECTOR_RENAMES = {"mlp1.0": "layer_norm", "mlp1.1": "linear_1", "mlp1.3": "linear_2"}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# The defaults of InternVL-Chat-V1.2's own config classes (InternVLChatConfig, InternVisionConfig in
# configuration_internvl_chat.py / configuration_intern_vit.py): a checkpoint config that omits a key gets these, as
# the original code would give it. Note select_layer: -4 there, although MedDr's checkpoint sets -1.
INTERNVL_CHAT_DEFAULTS = {"select_layer": -4, "downsample_ratio": 0.5, "pad2square": False, "force_image_size": None}
INTERN_VIT_DEFAULTS = {"num_channels": 3, "patch_size": 14, "image_size": 224, "qkv_bias": False, "hidden_size": 3200,
                       "num_attention_heads": 25, "intermediate_size": 12800, "qk_normalization": True,
                       "num_hidden_layers": 48, "hidden_act": "gelu", "layer_norm_eps": 1e-6}


class ConversionError(GscoError, ValueError):
    """The source checkpoint is not what the converter expects; the message names the file and key."""


# ----------------------------------------------------------------------------------------------------------- config
def read_original_config(src: Path) -> dict:
    path = src / "config.json"
    if not path.is_file():
        raise ConversionError(f"{path} does not exist: key 'original' must be an original MedDr/InternVL-Chat "
                              "checkpoint")
    cfg = read_json(path, "model config")
    if not isinstance(cfg, dict):
        raise ConversionError(f"{path}: expected a JSON object, found {type(cfg).__name__}")
    if cfg.get("model_type") != "internvl_chat":
        raise ConversionError(f"{path}: model_type is {cfg.get('model_type')!r}, expected 'internvl_chat'")
    for key in ("vision_config", "llm_config"):
        if not isinstance(cfg.get(key), dict):
            raise ConversionError(f"{path}: key {key!r} is missing")
    if cfg.get("template", "Hermes-2") != "Hermes-2":
        raise ConversionError(f"{path}: template {cfg['template']!r} is not supported; MedDr uses 'Hermes-2'")
    if cfg.get("dynamic_image_size"):
        raise ConversionError(f"{path}: dynamic_image_size (InternVL 1.5+ tiling) is not supported; MedDr uses "
                              "one tile")
    for section, defaults in ((cfg, INTERNVL_CHAT_DEFAULTS), (cfg["vision_config"], INTERN_VIT_DEFAULTS)):
        for key, value in defaults.items():
            if key not in section:
                section[key] = value
                where = key if section is cfg else f"vision_config.{key}"
                logger.warning("%s has no %s: using InternVL-Chat's default %r", path, where, value)
    llm_arch = cfg["llm_config"].get("architectures") or ["LlamaForCausalLM"]
    if llm_arch[0] != "LlamaForCausalLM":
        raise ConversionError(f"{path}: llm_config.architectures {llm_arch} — only a Llama LLM is supported")
    return cfg


def config_from_original(orig: dict, image_token_id: int):
    """The MedDrConfig equivalent of an ``InternVLChatConfig`` dict."""
    from gsco.meddr.presets import MedDrPreset, build_config

    v, t = orig["vision_config"], orig["llm_config"]
    image_size = orig["force_image_size"] or v["image_size"]
    vision = {
        "hidden_size": v["hidden_size"], "num_hidden_layers": v["num_hidden_layers"],
        "num_attention_heads": v["num_attention_heads"], "intermediate_size": v["intermediate_size"],
        "image_size": image_size, "patch_size": v["patch_size"], "num_channels": v["num_channels"],
        "use_qk_norm": bool(v["qk_normalization"]), "attention_bias": bool(v["qkv_bias"]),
        "norm_type": v.get("norm_type", "rms_norm"),  # InternViT-6B V1.2 always uses RMSNorm
        "layer_norm_eps": v["layer_norm_eps"], "hidden_act": v["hidden_act"],
    }
    text_keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                 "vocab_size", "max_position_embeddings", "rms_norm_eps", "hidden_act", "bos_token_id",
                 "eos_token_id", "pad_token_id", "attention_bias", "rope_theta", "rope_scaling", "initializer_range")
    text = {k: t[k] for k in text_keys if t.get(k) is not None}
    preset = MedDrPreset(
        vision=vision, text=text, downsample_ratio=orig["downsample_ratio"],
        vision_feature_layer=orig["select_layer"], ps_version=orig.get("ps_version", "v1"),
        pad2square=bool(orig["pad2square"]), tokenizer=None,
    )
    preset.validate()
    return preset, build_config(preset, image_token_id)


# ---------------------------------------------------------------------------------------------------------- weights
def rename(name: str, tensor: torch.Tensor, cfg) -> Iterator[tuple[str, torch.Tensor]]:
    """Original parameter name -> transformers name(s); ``qkv`` splits into three. Unknown names raise KeyError."""
    if name == "language_model.lm_head.weight":
        yield "lm_head.weight", tensor
        return
    if name.startswith("language_model.model."):
        yield "model.language_model." + name.removeprefix("language_model.model."), tensor
        return
    if name.startswith("mlp1."):
        module, _, leaf = name.rpartition(".")
        if module in PROJECTOR_RENAMES:
            yield f"model.multi_modal_projector.{PROJECTOR_RENAMES[module]}.{leaf}", tensor
            return
    vt = "model.vision_tower."
    emb = {
        "vision_model.embeddings.class_embedding": "embeddings.cls_token",
        "vision_model.embeddings.patch_embedding.weight": "embeddings.patch_embeddings.projection.weight",
        "vision_model.embeddings.patch_embedding.bias": "embeddings.patch_embeddings.projection.bias",
    }
    if name in emb:
        yield vt + emb[name], tensor
        return
    if name == "vision_model.embeddings.position_embedding":
        yield vt + "embeddings.position_embeddings", fit_position_embedding(tensor, cfg.vision_config)
        return
    m = re.fullmatch(r"vision_model\.encoder\.layers\.(\d+)\.(.+)", name)
    if m:
        layer, rest = m.groups()
        prefix = f"{vt}encoder.layer.{layer}."
        if rest in ("ls1", "ls2"):
            yield prefix + ("lambda_1" if rest == "ls1" else "lambda_2"), tensor
            return
        module, _, leaf = rest.rpartition(".")
        if module == "attn.qkv":
            for part, chunk in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3, dim=0)):
                yield f"{prefix}attention.{part}.{leaf}", chunk.contiguous()
            return
        if module in VISION_LAYER_RENAMES:
            yield f"{prefix}{VISION_LAYER_RENAMES[module]}.{leaf}", tensor
            return
    raise KeyError(name)


def fit_position_embedding(pos: torch.Tensor, vision_config) -> torch.Tensor:
    """InternViT resizes its position embedding to the input grid at run time (bicubic, ``_get_pos_embed``);
    when ``force_image_size`` differs from the trained size, do that once here."""
    size = vision_config.image_size
    size = size[0] if isinstance(size, (list, tuple)) else size
    patch = vision_config.patch_size
    patch = patch[0] if isinstance(patch, (list, tuple)) else patch
    grid = size // patch
    old = round((pos.shape[1] - 1) ** 0.5)
    if old == grid:
        return pos
    cls, body = pos[:, :1], pos[:, 1:]
    body = body.float().reshape(1, old, old, -1).permute(0, 3, 1, 2)
    body = torch.nn.functional.interpolate(body, size=(grid, grid), mode="bicubic", align_corners=False)
    body = body.reshape(1, -1, grid * grid).permute(0, 2, 1).to(pos.dtype)
    return torch.cat([cls, body], dim=1)


_LORA = re.compile(r"^(?P<module>.+?)\.(?:base_layer\.(?P<leaf>weight|bias)|lora_(?P<ab>[AB])\.default\.weight)$")


class LoraMerger:
    """Collects ``base_layer`` / ``lora_A`` / ``lora_B`` pieces (which may sit in different shards) and yields
    the merged weight once a module is complete."""

    def __init__(self, alpha: float | None):
        self.alpha = alpha
        self.pending: dict[str, dict[str, torch.Tensor]] = {}
        self.merged = 0

    @staticmethod
    def strip_peft(name: str) -> str:
        """``language_model.base_model.model.model.x`` -> ``language_model.model.x`` (peft's wrapper prefix)."""
        return re.sub(r"^(language_model|vision_model)\.base_model\.model\.", r"\1.", name)

    def add(self, name: str, tensor: torch.Tensor) -> Iterator[tuple[str, torch.Tensor]]:
        name = self.strip_peft(name)
        m = _LORA.match(name)
        if not m:
            yield name, tensor
            return
        module = m["module"]
        if m["leaf"] == "bias":  # LoRA does not change a bias
            yield f"{module}.bias", tensor
            return
        parts = self.pending.setdefault(module, {})
        parts["base" if m["leaf"] else m["ab"]] = tensor
        if len(parts) == 3:
            del self.pending[module]
            a, b = parts["A"].float(), parts["B"].float()
            r = a.shape[0]
            scale = (self.alpha if self.alpha is not None else 2 * r) / r
            merged = parts["base"].float() + scale * (b @ a)
            self.merged += 1
            yield f"{module}.weight", merged.to(parts["base"].dtype)

    def check_done(self) -> None:
        if self.pending:
            module, parts = next(iter(self.pending.items()))
            raise ConversionError(f"LoRA of {module} is incomplete: found only {sorted(parts)} "
                                  f"({len(self.pending)} modules incomplete)")


def source_shards(src: Path) -> list[Path]:
    index = src / "model.safetensors.index.json"
    if index.is_file():
        stored = read_json(index, "safetensors index")
        weight_map = stored.get("weight_map") if isinstance(stored, dict) else None
        if not isinstance(weight_map, dict):
            raise ConversionError(f"{index}: no 'weight_map'")
        shards = sorted(set(weight_map.values()))
        for shard in shards:
            if not (src / shard).is_file():
                raise ConversionError(f"{index} names {shard}, which does not exist in {src}")
        return [src / s for s in shards]
    single = src / "model.safetensors"
    if single.is_file():
        return [single]
    if list(src.glob("*.bin")):
        raise ConversionError(f"{src} holds only .bin (pickle) weights, which are never loaded here; re-save them "
                              "as safetensors first")
    raise ConversionError(f"{src} has neither model.safetensors nor model.safetensors.index.json")


def expected_parameters(config) -> dict[str, torch.Size]:
    from gsco.meddr.model import MedDrForConditionalGeneration

    with torch.device("meta"):
        model = MedDrForConditionalGeneration(config)
    return {k: v.shape for k, v in model.state_dict().items()}


def convert_weights(src: Path, dst: Path, config, dtype: torch.dtype | None, lora_alpha: float | None) -> dict:
    """Stream the shards of ``src`` into ``dst``; returns counts for the log."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    expected = expected_parameters(config)
    shards = source_shards(src)
    merger = LoraMerger(lora_alpha)
    weight_map: dict[str, str] = {}
    total = 0
    for i, shard in enumerate(tqdm(shards, desc="converting shards", file=sys.stderr), 1):
        out_name = "model.safetensors" if len(shards) == 1 else f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        out: dict[str, torch.Tensor] = {}
        with reading(shard, "safetensors shard", "it is truncated or damaged: download it again"), \
                safe_open(str(shard), framework="pt") as f:
            for key in f.keys():
                for name, tensor in merger.add(key, f.get_tensor(key)):
                    try:
                        renamed = list(rename(name, tensor, config))
                    except KeyError:
                        raise ConversionError(f"{shard.name}: unexpected key {key!r} (not part of the "
                                              "InternVL-Chat-V1.2 layout)") from None
                    for new, t in renamed:
                        if new not in expected:
                            raise ConversionError(f"{shard.name}: key {key!r} maps to {new!r}, which the model lacks")
                        if t.shape != expected[new]:
                            raise ConversionError(f"{shard.name}: key {key!r} has shape {tuple(t.shape)}, the "
                                                  f"config implies {tuple(expected[new])} for {new}")
                        if new in weight_map or new in out:
                            raise ConversionError(f"{shard.name}: key {key!r} gives {new!r} a second time")
                        out[new] = (t.to(dtype) if dtype is not None else t).contiguous()
        save_file(out, str(dst / out_name), metadata={"format": "pt"})
        for name, t in out.items():
            weight_map[name] = out_name
            total += t.numel() * t.element_size()
        del out
    merger.check_done()
    missing = sorted(set(expected) - set(weight_map))
    if missing:
        raise ConversionError(f"{src}: {len(missing)} parameters are missing from the checkpoint, e.g. {missing[:5]}")
    if len(shards) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (dst / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return {"shards": len(shards), "tensors": len(weight_map), "bytes": total, "lora_merged": merger.merged}


# ---------------------------------------------------------------------------------------------- back to original
def original_state_dict(model) -> dict[str, torch.Tensor]:
    """The inverse of :func:`rename`: our weights under the original InternVL-Chat names (q/k/v re-stacked into
    ``qkv``), so a model trained here loads in the original code."""
    inverse_layer = {v: k for k, v in VISION_LAYER_RENAMES.items()}
    inverse_proj = {v: k for k, v in PROJECTOR_RENAMES.items()}
    state = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if name == "lm_head.weight":
            out["language_model.lm_head.weight"] = tensor
        elif name.startswith("model.language_model."):
            out["language_model.model." + name.removeprefix("model.language_model.")] = tensor
        elif name.startswith("model.multi_modal_projector."):
            module, _, leaf = name.removeprefix("model.multi_modal_projector.").rpartition(".")
            out[f"{inverse_proj[module]}.{leaf}"] = tensor
        elif name.startswith("model.vision_tower.embeddings."):
            leaf = name.removeprefix("model.vision_tower.embeddings.")
            out["vision_model.embeddings." + {
                "cls_token": "class_embedding", "position_embeddings": "position_embedding",
                "patch_embeddings.projection.weight": "patch_embedding.weight",
                "patch_embeddings.projection.bias": "patch_embedding.bias"}[leaf]] = tensor
        else:
            m = re.fullmatch(r"model\.vision_tower\.encoder\.layer\.(\d+)\.(.+)\.(\w+)", name)
            if m is None:
                if name.endswith(("lambda_1", "lambda_2")):
                    layer = re.search(r"layer\.(\d+)\.", name).group(1)
                    out[f"vision_model.encoder.layers.{layer}.ls{name[-1]}"] = tensor
                    continue
                raise KeyError(name)
            layer, module, leaf = m.groups()
            prefix = f"vision_model.encoder.layers.{layer}."
            if module in ("attention.q_proj", "attention.k_proj", "attention.v_proj"):
                if module == "attention.q_proj":
                    parts = [state[f"model.vision_tower.encoder.layer.{layer}.attention.{p}.{leaf}"]
                             for p in ("q_proj", "k_proj", "v_proj")]
                    out[f"{prefix}attn.qkv.{leaf}"] = torch.cat(parts, dim=0)
                continue
            out[f"{prefix}{inverse_layer[module]}.{leaf}"] = tensor
    return out


def original_config(config) -> dict:
    """An ``InternVLChatConfig`` dict for ``config`` (the keys the original code reads)."""
    v, t = config.vision_config, config.text_config
    size = v.image_size[0] if isinstance(v.image_size, (list, tuple)) else v.image_size
    patch = v.patch_size[0] if isinstance(v.patch_size, (list, tuple)) else v.patch_size
    llm = {k: getattr(t, k) for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                                      "num_key_value_heads", "vocab_size", "max_position_embeddings", "rms_norm_eps",
                                      "hidden_act", "bos_token_id", "eos_token_id", "pad_token_id", "attention_bias")}
    llm.update(architectures=["LlamaForCausalLM"], model_type="llama", tie_word_embeddings=False,
               rope_theta=(t.rope_parameters or {}).get("rope_theta", 10000.0), rope_scaling=None)
    return {
        "architectures": ["InternVLChatModel"], "model_type": "internvl_chat", "template": "Hermes-2",
        "select_layer": config.vision_feature_layer, "downsample_ratio": config.downsample_ratio,
        "force_image_size": size, "pad2square": False, "ps_version": config.ps_version,
        "use_backbone_lora": 0, "use_llm_lora": 0, "dynamic_image_size": False,
        "vision_config": {"architectures": ["InternVisionModel"], "model_type": "intern_vit_6b",
                          "hidden_size": v.hidden_size, "num_hidden_layers": v.num_hidden_layers,
                          "num_attention_heads": v.num_attention_heads, "intermediate_size": v.intermediate_size,
                          "image_size": size, "patch_size": patch, "num_channels": v.num_channels,
                          "qk_normalization": v.use_qk_norm, "qkv_bias": v.attention_bias, "norm_type": v.norm_type,
                          "layer_norm_eps": v.layer_norm_eps, "hidden_act": v.hidden_act},
        "llm_config": llm,
    }


def save_original(model, tokenizer, dst: str | Path, max_shard_bytes: int | None = None) -> Path:
    """Write ``model`` in the original InternVL-Chat-V1.2 layout (``config.json``, safetensors shards with an
    index when ``max_shard_bytes`` splits them, ``tokenizer/``) — what the published MedDr checkpoint looks like."""
    from safetensors.torch import save_file

    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in original_state_dict(model).items()}
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name in sorted(state):
        nbytes = state[name].numel() * state[name].element_size()
        if max_shard_bytes and shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = state[name]
        size += nbytes
    if len(shards) == 1:
        save_file(shards[0], str(dst / "model.safetensors"), metadata={"format": "pt"})
    else:
        weight_map = {}
        for i, shard in enumerate(shards, 1):
            fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, str(dst / fname), metadata={"format": "pt"})
            weight_map.update({k: fname for k in shard})
        total = sum(t.numel() * t.element_size() for t in state.values())
        (dst / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n")
    (dst / "config.json").write_text(json.dumps(original_config(model.config), indent=2) + "\n")
    tokenizer.save_pretrained(dst / "tokenizer")
    return dst


# ------------------------------------------------------------------------------------------------------------- main
def find_tokenizer_dir(src: Path, tokenizer: Path | None) -> Path:
    for candidate in ([tokenizer] if tokenizer else [src / "tokenizer", src]):
        if candidate.is_dir() and any((candidate / f).is_file() for f in ("tokenizer.json", "tokenizer.model")):
            return candidate
    raise ConversionError(f"no tokenizer (tokenizer.json or tokenizer.model) in {tokenizer or src}; give tokenizer=DIR")


def convert(src: str | Path, dst: str | Path, dtype: str = "auto", lora_alpha: float | None = None,
            tokenizer: str | Path | None = None, overwrite: bool = False) -> Path:
    """Convert ``src`` (original format) into the transformers directory ``dst``; returns ``dst``."""
    from gsco.meddr.presets import set_generation_defaults
    from gsco.meddr.processor import IMG_CONTEXT, build_processor, load_tokenizer

    src, dst = Path(src), Path(dst)
    orig = read_original_config(src)
    if dtype != "auto" and dtype not in DTYPES:
        raise ConversionError(f"key 'dtype': {dtype!r}, expected auto or one of {sorted(DTYPES)}")
    tokenizer_dir = find_tokenizer_dir(src, Path(tokenizer) if tokenizer else None)
    tok = load_tokenizer(tokenizer_dir)
    image_token_id = tok.convert_tokens_to_ids(IMG_CONTEXT)
    preset, config = config_from_original(orig, image_token_id)
    if image_token_id >= config.text_config.vocab_size:
        raise ConversionError(f"{IMG_CONTEXT} has id {image_token_id}, beyond the LLM's vocab_size "
                              f"{config.text_config.vocab_size}")
    target = DTYPES.get(dtype) or DTYPES.get(str(orig.get("torch_dtype")), None)
    config.dtype = target or torch.float32
    from transformers import GenerationConfig

    try:  # written beside dst and moved into place when complete; the source is never touched
        with building_folder(dst, overwrite, sources=(src, tokenizer_dir)) as out:
            stats = convert_weights(src, out, config, DTYPES.get(dtype), lora_alpha)
            config.save_pretrained(out)
            gen = GenerationConfig()
            set_generation_defaults(gen, tok)
            gen.save_pretrained(out)
            build_processor(tok, preset.vision["image_size"], preset.image_seq_length,
                            preset.pad2square).save_pretrained(out)
    except OutputFolderError as exc:
        raise ConversionError(str(exc)) from None
    logger.info("converted %d tensors (%.2f GB, %d shards, %d LoRA modules merged) into %s",
                stats["tensors"], stats["bytes"] / 1e9, stats["shards"], stats["lora_merged"], dst)
    return dst


@dataclasses.dataclass
class ConvertConfig:
    original: str  # the original checkpoint directory (config.json, *.safetensors)
    out_dir: str  # the transformers-format model directory to write
    dtype: str = "auto"  # auto (keep the stored dtype), bfloat16, float16, float32
    lora_alpha: float | None = None  # an unmerged LoRA's alpha (null: 2r, InternVL's recipe)
    tokenizer: str | None = None  # tokenizer directory (null: ORIGINAL/tokenizer or ORIGINAL)
    overwrite: bool = False  # replace a non-empty out_dir


def _convert_and_print(cfg: ConvertConfig) -> None:
    import gsco.meddr  # noqa: F401  (registers the Auto classes the saved processor refers to)

    dst = convert(cfg.original, cfg.out_dir, cfg.dtype, cfg.lora_alpha, cfg.tokenizer, cfg.overwrite)
    print(f"converted model: {dst}")


def main(argv: list[str] | None = None) -> int:
    from gsco.cli import command

    return command(ConvertConfig, _convert_and_print,
                   description="Convert an original MedDr (InternVL-Chat-V1.2) checkpoint.")(argv)


if __name__ == "__main__":
    sys.exit(main())
