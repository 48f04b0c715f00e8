"""Tiny random generalists, one per model family, built offline from transformers' own config, model and processor
classes with a byte-level tokenizer carrying the family's special tokens and a chat template that renders the
family's conversation format. Nothing is downloaded; the weights are random (answers are noise), the code paths are
the real family's: its processor's image tokens and tiling, its positions (Qwen2.5-VL's multimodal RoPE), its
attention (Gemma 3's bidirectional image block).

    python -m gsco.generalist.tiny family=gemma3 out_dir=outputs/tiny-gemma3

writes a model folder that every command loads as it loads the real checkpoint (``MODEL=outputs/tiny-gemma3 bash
inference_gsco.sh``). :data:`BUILDERS` has one builder per family of :mod:`gsco.generalist.families`.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path

# a small language model shared by the families' text configs (Llama, Qwen2, Gemma 3, Mistral alike)
TEXT = {"hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 4096,
        "initializer_range": 0.2}
VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}


# family name (gsco.generalist.families) -> its builder: build() -> (model, processor), random weights from the
# current torch seed
BUILDERS: dict[str, Callable] = {}


def tiny_family(name: str):
    """Decorator registering a builder as the tiny model of family ``name``."""
    def register(build: Callable) -> Callable:
        BUILDERS[name] = build
        return build

    return register


def _tokenizer(special: list[str], template: str, **named):
    """The byte-level tokenizer (:func:`gsco.tokenizers.byte_level_tokenizer`) with ``special`` tokens first, the
    chat ``template`` and left padding (batched generation)."""
    from gsco.tokenizers import byte_level_tokenizer

    tokenizer = byte_level_tokenizer(special, **named)
    tokenizer.chat_template = template
    tokenizer.padding_side = tokenizer.init_kwargs["padding_side"] = "left"
    return tokenizer


def _ids(tokenizer, *tokens: str) -> list[int]:
    return [tokenizer.convert_tokens_to_ids(t) for t in tokens]


def _vocab(tokenizer) -> int:
    return len(tokenizer)


# Chat templates written for the tiny models: each renders the family's conversation format for a list of messages
# whose content is a string or a list of {"type": "image"} / {"type": "text"} items (images where they stand).
def _items(image: str) -> str:
    """Jinja: the content of message ``m`` — a string, or its items with each image as ``image``."""
    return ("{%- if m['content'] is string -%}{{- m['content'] -}}{%- else -%}{%- for c in m['content'] -%}"
            "{%- if c['type'] == 'image' -%}{{- '" + image + "' -}}{%- else -%}{{- c['text'] -}}{%- endif -%}"
            "{%- endfor -%}{%- endif -%}")


def _chatml(image: str, default_system: str | None = None) -> str:
    """ChatML (Qwen2.5-VL, InternVL3): ``<|im_start|>role\\n...<|im_end|>\\n``, a default system turn if given."""
    system = ("{%- if messages[0]['role'] != 'system' -%}{{- '<|im_start|>system\\n" + default_system
              + "<|im_end|>\\n' -}}{%- endif -%}") if default_system else ""
    return (system + "{%- for m in messages -%}{{- '<|im_start|>' + m['role'] + '\\n' -}}" + _items(image)
            + "{{- '<|im_end|>\\n' -}}{%- endfor -%}"
            "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}")


# Gemma 3 (MedGemma): <bos>, turns "user" / "model", the system text opens the first user turn
GEMMA3_TEMPLATE = (
    "{{- bos_token -}}{%- set first = namespace(system='') -%}"
    "{%- if messages[0]['role'] == 'system' -%}{%- set m = messages[0] -%}{%- set first.system -%}" + _items("")
    + "{%- endset -%}{%- set messages = messages[1:] -%}{%- endif -%}"
    "{%- for m in messages -%}{{- '<start_of_turn>' + ('model' if m['role'] == 'assistant' else m['role']) + '\\n' -}}"
    "{%- if loop.first and first.system -%}{{- first.system + '\\n\\n' -}}{%- endif -%}" + _items("<start_of_image>")
    + "{{- '<end_of_turn>\\n' -}}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<start_of_turn>model\\n' -}}{%- endif -%}")


@tiny_family("gemma3")
def build_gemma3():
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3ImageProcessor,
        Gemma3Processor,
        Gemma3TextConfig,
        SiglipVisionConfig,
    )

    tokens = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}
    tok = _tokenizer(["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", *tokens.values()],
                     GEMMA3_TEMPLATE, pad_token="<pad>", eos_token="<end_of_turn>", bos_token="<bos>",
                     unk_token="<unk>", extra_special_tokens=tokens)
    boi, eoi, image = _ids(tok, *tokens.values())
    # 56 px -> 4 x 4 SigLIP patches, pooled to 2 x 2 = 4 image tokens (MedGemma: 896 px, 64 x 64 -> 256)
    config = Gemma3Config(
        text_config=Gemma3TextConfig(**TEXT, head_dim=12, query_pre_attn_scalar=12, vocab_size=_vocab(tok),
                                     sliding_window=1024, pad_token_id=0, bos_token_id=2, eos_token_id=_ids(
                                         tok, "<end_of_turn>")[0]),
        vision_config=SiglipVisionConfig(**VISION, image_size=56, patch_size=14),
        mm_tokens_per_image=4, boi_token_index=boi, eoi_token_index=eoi, image_token_index=image,
        tie_word_embeddings=False)  # tied, a random model repeats the prompt's last token (Gemma 3 ties them)
    processor = Gemma3Processor(
        image_processor=Gemma3ImageProcessor(size={"height": 56, "width": 56}, image_mean=[0.5] * 3,
                                             image_std=[0.5] * 3, do_pan_and_scan=False),
        tokenizer=tok, image_seq_length=4, chat_template=GEMMA3_TEMPLATE)
    return Gemma3ForConditionalGeneration(config), processor


@tiny_family("qwen2_5_vl")
def build_qwen2_5_vl():
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    image_span = "<|vision_start|><|image_pad|><|vision_end|>"
    template = _chatml(image_span, default_system="You are a helpful assistant.")
    tok = _tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                      "<|image_pad|>", "<|video_pad|>"], template, pad_token="<|endoftext|>", eos_token="<|im_end|>")
    start, end, image, video = _ids(tok, "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
    # the image's side rounded to 28 px (patch 14, 2 x 2 merge), 4 to 16 merged tokens: mixed sizes, mixed counts
    config = Qwen2_5_VLConfig(
        text_config={**TEXT, "vocab_size": _vocab(tok), "rope_parameters": {
            "rope_type": "default", "mrope_section": [2, 2, 2], "rope_theta": 10000.0},
            "eos_token_id": _ids(tok, "<|im_end|>")[0], "pad_token_id": 0, "bos_token_id": 0},
        vision_config={"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2,
                       "out_hidden_size": 48, "window_size": 56, "fullatt_block_indexes": [1]},
        image_token_id=image, video_token_id=video, vision_start_token_id=start, vision_end_token_id=end)
    pixels = {"min_pixels": 4 * 28 * 28, "max_pixels": 16 * 28 * 28}
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(**pixels), tokenizer=tok,
        video_processor=Qwen2VLVideoProcessor(**pixels), chat_template=template)
    return Qwen2_5_VLForConditionalGeneration(config), processor


def _internvl(text_config, template: str, special: list[str], named: dict, max_patches: int):
    """transformers' InternVL (InternViT + pixel-shuffle MLP + an LLM): 56 px tiles of 4 tokens, up to
    ``max_patches`` tiles and a thumbnail per image (InternVL3's dynamic tiling)."""
    from transformers import (
        GotOcr2ImageProcessor,
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLProcessor,
        InternVLVisionConfig,
    )
    from transformers.models.internvl.video_processing_internvl import InternVLVideoProcessor

    tokens = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
              "video_token": "<video>"}
    tok = _tokenizer([*special, *tokens.values()], template, extra_special_tokens=tokens, **named)
    config = InternVLConfig(
        vision_config=InternVLVisionConfig(**VISION, image_size=56, patch_size=14),
        text_config=text_config(**TEXT, vocab_size=_vocab(tok), eos_token_id=tok.eos_token_id,
                                pad_token_id=tok.pad_token_id),
        downsample_ratio=0.5, image_token_id=_ids(tok, "<IMG_CONTEXT>")[0], tie_word_embeddings=False)
    processor = InternVLProcessor(
        image_processor=GotOcr2ImageProcessor(size={"height": 56, "width": 56}, crop_to_patches=True,
                                              min_patches=1, max_patches=max_patches),
        tokenizer=tok, video_processor=InternVLVideoProcessor(), image_seq_length=4, chat_template=template)
    return InternVLForConditionalGeneration(config), processor


@tiny_family("internvl")
def build_internvl3():
    from transformers import Qwen2Config

    template = _chatml("<IMG_CONTEXT>\\n")
    return _internvl(Qwen2Config, template, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                     {"pad_token": "<|endoftext|>", "eos_token": "<|im_end|>"}, max_patches=4)


@tiny_family("internvl_chat")
def build_meddr():
    from gsco.generalist.registry import build_preset

    return build_preset("tiny")


def _llava_tokenizer(template: str, extra: list[str] = ()):
    return _tokenizer(["<unk>", "<s>", "</s>", "<image>", *extra], template, unk_token="<unk>", bos_token="<s>",
                      eos_token="</s>", pad_token="<unk>")


def _clip(image_size: int):
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(**VISION, image_size=image_size, patch_size=14, projection_dim=32)


def _llama(tok):
    from transformers import LlamaConfig

    return LlamaConfig(**TEXT, vocab_size=_vocab(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                       pad_token_id=tok.pad_token_id)


# LLaVA-1.5 ("USER: <image>\n... ASSISTANT:") and LLaVA-NeXT-Mistral ("[INST] <image>\n... [/INST]")
LLAVA_TEMPLATE = (
    "{%- for m in messages -%}{{- (m['role'] | upper) + ': ' -}}" + _items("<image>\\n") + "{{- ' ' -}}"
    "{%- if m['role'] == 'assistant' -%}{{- eos_token -}}{%- endif -%}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- 'ASSISTANT:' -}}{%- endif -%}")
MISTRAL_TEMPLATE = (
    "{{- bos_token -}}{%- for m in messages -%}{%- if m['role'] == 'assistant' -%}{{- ' ' -}}" + _items("")
    + "{{- eos_token -}}{%- else -%}{{- '[INST] ' -}}" + _items("<image>\\n") + "{{- ' [/INST]' -}}{%- endif -%}"
    "{%- endfor -%}")


@tiny_family("llava")
def build_llava():
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    tok = _llava_tokenizer(LLAVA_TEMPLATE)
    config = LlavaConfig(vision_config=_clip(28), text_config=_llama(tok), image_token_id=_ids(tok, "<image>")[0],
                         vision_feature_select_strategy="default")
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}),
        tokenizer=tok, patch_size=14, vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=LLAVA_TEMPLATE)
    return LlavaForConditionalGeneration(config), processor


@tiny_family("llava_next")
def build_llava_next():
    from transformers import (
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
    )

    tok = _llava_tokenizer(MISTRAL_TEMPLATE, ["[INST]", "[/INST]"])
    grid = [[28, 56], [56, 28], [56, 56]]  # "anyres": the image tiled on the best-fitting grid, plus a base view
    config = LlavaNextConfig(vision_config=_clip(28), text_config=_llama(tok), image_token_id=_ids(tok, "<image>")[0],
                             image_grid_pinpoints=grid, vision_feature_select_strategy="default")
    processor = LlavaNextProcessor(
        image_processor=LlavaNextImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28},
                                                image_grid_pinpoints=grid),
        tokenizer=tok, patch_size=14, vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=MISTRAL_TEMPLATE)
    return LlavaNextForConditionalGeneration(config), processor


# Idefics3 / SmolVLM: "<|im_start|>User:<image>...<end_of_utterance>\nAssistant:"
IDEFICS3_TEMPLATE = (
    "{{- '<|im_start|>' -}}{%- for m in messages -%}{{- (m['role'] | capitalize) + ':' -}}" + _items("<image>")
    + "{{- '<end_of_utterance>\\n' -}}{%- endfor -%}{%- if add_generation_prompt -%}{{- 'Assistant:' -}}{%- endif -%}")
IDEFICS3_TOKENS = ["<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>", "<image>",
                   "<global-img>", *(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7))]


def _idefics3_parts(config_class, vision_class, extra: list[str] = ()):
    tok = _tokenizer([*IDEFICS3_TOKENS, *extra], IDEFICS3_TEMPLATE, pad_token="<|endoftext|>",
                     eos_token="<end_of_utterance>", bos_token="<|im_start|>")
    # 28 px tiles of 14 px patches, 2 x 2 pixel shuffle: 1 token per tile, up to 2 x 2 tiles and a global view
    config = config_class(vision_config=vision_class(**VISION, image_size=28, patch_size=14),
                          text_config=_llama(tok), scale_factor=2, image_token_id=_ids(tok, "<image>")[0],
                          tie_word_embeddings=False)
    return tok, config, {"size": {"longest_edge": 56}, "max_image_size": {"longest_edge": 28}}


@tiny_family("idefics3")
def build_idefics3():
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
        Idefics3VisionConfig,
    )

    tok, config, sizes = _idefics3_parts(Idefics3Config, Idefics3VisionConfig)
    processor = Idefics3Processor(image_processor=Idefics3ImageProcessor(**sizes), tokenizer=tok, image_seq_len=1,
                                  chat_template=IDEFICS3_TEMPLATE)
    return Idefics3ForConditionalGeneration(config), processor


@tiny_family("smolvlm")
def build_smolvlm():
    from transformers import (
        SmolVLMConfig,
        SmolVLMForConditionalGeneration,
        SmolVLMImageProcessor,
        SmolVLMProcessor,
        SmolVLMVisionConfig,
    )
    from transformers.models.smolvlm.video_processing_smolvlm import SmolVLMVideoProcessor

    tok, config, sizes = _idefics3_parts(SmolVLMConfig, SmolVLMVisionConfig, ["<video>"])
    processor = SmolVLMProcessor(image_processor=SmolVLMImageProcessor(**sizes), tokenizer=tok,
                                 video_processor=SmolVLMVideoProcessor(), image_seq_len=1,
                                 chat_template=IDEFICS3_TEMPLATE)
    return SmolVLMForConditionalGeneration(config), processor


def build(family: str, seed: int = 0):
    """(model, processor) of the tiny ``family`` with random weights drawn from ``seed``."""
    import torch

    if family not in BUILDERS:
        from gsco.config import ConfigError

        raise ConfigError(f"key 'family': {family!r} is not a family; choose from {sorted(BUILDERS)}")
    torch.manual_seed(seed)
    model, processor = BUILDERS[family]()
    return model.eval(), processor


def save(family: str, out_dir: str | Path, seed: int = 0, overwrite: bool = False) -> Path:
    """Build the tiny ``family`` and save it as a transformers model folder (it appears only when complete)."""
    from transformers import GenerationConfig

    from gsco.runtime import building_folder

    model, processor = build(family, seed)
    tokenizer = processor.tokenizer
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id,
                                               bos_token_id=tokenizer.bos_token_id)
    with building_folder(Path(out_dir), overwrite) as out:
        model.save_pretrained(out)
        processor.save_pretrained(out)
    return Path(out_dir)


@dataclasses.dataclass
class TinyConfig:
    family: str  # a family of gsco.generalist.families: gemma3, qwen2_5_vl, internvl, internvl_chat, llava, ...
    out_dir: str  # the model folder to write
    seed: int = 0  # the random weights' seed
    overwrite: bool = False  # replace a non-empty out_dir

    def validate(self) -> None:
        if self.family not in BUILDERS:
            from gsco.config import ConfigError

            raise ConfigError(f"key 'family': {self.family!r} is not a family; choose from {sorted(BUILDERS)}")


def _save_and_print(cfg: TinyConfig) -> None:
    out = save(cfg.family, cfg.out_dir, cfg.seed, cfg.overwrite)
    from gsco.generalist.families import FAMILIES

    print(f"tiny {cfg.family} (random weights, stands for {FAMILIES[cfg.family].checkpoints}): {out}")


def main(argv: list[str] | None = None) -> int:
    from gsco.cli import command

    return command(TinyConfig, _save_and_print, description=__doc__.split("\n\n")[0])(argv)


if __name__ == "__main__":
    sys.exit(main())
