"""InternVL3 in transformers' classes (OpenGVLab/InternVL3-8B-hf, OpenGVLab/InternVL3-78B-hf).

Its tiny model is still written by hand (ChatML template, 56 px tiles of 4 tokens, CLIP's mean/std): the checkpoint's
files are not shipped here yet (tests/generalist/test_families.py names the families still without them).
"""

from gsco.generalist.families import Family, Size
from gsco.generalist.families.building import TEXT, VISION

INTERNVIT_300M = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
                  "image_size": [448, 448], "patch_size": [14, 14], "attention_bias": True, "use_qk_norm": False,
                  "norm_type": "layer_norm"}
INTERNVIT_6B = {"hidden_size": 3200, "intermediate_size": 12800, "num_hidden_layers": 45, "num_attention_heads": 25,
                "image_size": [448, 448], "patch_size": [14, 14], "attention_bias": False, "use_qk_norm": True,
                "norm_type": "rms_norm"}
QWEN2_5_7B = {"model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
              "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 151674, "tie_word_embeddings": False}
QWEN2_5_72B = {**QWEN2_5_7B, "hidden_size": 8192, "intermediate_size": 29568, "num_hidden_layers": 80,
               "num_attention_heads": 64, "num_key_value_heads": 8}
CHATML = ("{%- for m in messages -%}{{- '<|im_start|>' + m['role'] + '\\n' -}}"
          "{%- if m['content'] is string -%}{{- m['content'] -}}{%- else -%}{%- for c in m['content'] -%}"
          "{%- if c['type'] == 'image' -%}{{- '<IMG_CONTEXT>\\n' -}}{%- else -%}{{- c['text'] -}}{%- endif -%}"
          "{%- endfor -%}{%- endif -%}{{- '<|im_end|>\\n' -}}{%- endfor -%}"
          "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}")


def build():
    """transformers' InternVL (InternViT + pixel-shuffle MLP + Qwen2): 56 px tiles of 4 tokens, up to 4 tiles and a
    thumbnail per image (InternVL3's dynamic tiling)."""
    from transformers import (
        GotOcr2ImageProcessor,
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLProcessor,
        InternVLVisionConfig,
        Qwen2Config,
    )
    from transformers.models.internvl.video_processing_internvl import InternVLVideoProcessor

    from gsco.tokenizers import byte_level_tokenizer

    tokens = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
              "video_token": "<video>"}
    tok = byte_level_tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>", *tokens.values()],
                               extra_special_tokens=tokens, pad_token="<|endoftext|>", eos_token="<|im_end|>")
    tok.chat_template = CHATML
    tok.padding_side = tok.init_kwargs["padding_side"] = "left"
    config = InternVLConfig(
        vision_config=InternVLVisionConfig(**VISION, image_size=56, patch_size=14),
        text_config=Qwen2Config(**TEXT, max_position_embeddings=4096, vocab_size=len(tok),
                                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        downsample_ratio=0.5, image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"), tie_word_embeddings=False)
    processor = InternVLProcessor(
        image_processor=GotOcr2ImageProcessor(size={"height": 56, "width": 56}, crop_to_patches=True,
                                              min_patches=1, max_patches=4),
        tokenizer=tok, video_processor=InternVLVideoProcessor(), image_seq_length=4, chat_template=CHATML)
    return InternVLForConditionalGeneration(config), processor


FAMILY = Family(
    name="internvl", model_type="internvl", checkpoints="OpenGVLab/InternVL3-8B-hf, OpenGVLab/InternVL3-78B-hf",
    card="OpenGVLab/InternVL3-8B-hf", vision=("vision_tower", "multi_modal_projector"), build_tiny=build,
    sizes={
        "internvl3-8b": Size("OpenGVLab/InternVL3-8B-hf", 7.94e9, {
            "vision_config": INTERNVIT_300M, "text_config": QWEN2_5_7B, "downsample_ratio": 0.5,
            "tie_word_embeddings": False}),
        "internvl3-78b": Size("OpenGVLab/InternVL3-78B-hf", 78.4e9, {
            "vision_config": INTERNVIT_6B, "text_config": QWEN2_5_72B, "downsample_ratio": 0.5,
            "tie_word_embeddings": False}),
    })
