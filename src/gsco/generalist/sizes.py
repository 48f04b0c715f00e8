"""The published generalists' real sizes, as transformers configs: the planner (``python -m gsco.meddr.plan
model=medgemma-4b``) builds them on the meta device (nothing is downloaded or allocated), and a test checks each
against the parameter count its model page publishes (within 1 %).

Each entry is the checkpoint's ``config.json`` reduced to what sets a parameter's shape (dimensions, layer counts,
vocabulary, tying); values not given take the transformers config class's defaults, which are the published models'.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Size:
    checkpoint: str  # the published model
    model_type: str  # its family's model type (gsco.generalist.families)
    published: float  # parameters, as its model page gives them
    config: dict  # the shape-setting fields of its config.json


SIGLIP_400M = {"model_type": "siglip_vision_model", "hidden_size": 1152, "intermediate_size": 4304,
               "num_hidden_layers": 27, "num_attention_heads": 16, "image_size": 896, "patch_size": 14}
QWEN2_5_VL_VISION = {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16}
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

SIZES: dict[str, Size] = {
    "medgemma-4b": Size("google/medgemma-4b-it", "gemma3", 4.30e9, {
        "text_config": {"hidden_size": 2560, "intermediate_size": 10240, "num_hidden_layers": 34,
                        "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "vocab_size": 262208},
        "vision_config": SIGLIP_400M, "mm_tokens_per_image": 256}),
    "medgemma-27b": Size("google/medgemma-27b-it", "gemma3", 27.4e9, {
        "text_config": {"hidden_size": 5376, "intermediate_size": 21504, "num_hidden_layers": 62,
                        "num_attention_heads": 32, "num_key_value_heads": 16, "head_dim": 128,
                        "vocab_size": 262208},
        "vision_config": SIGLIP_400M, "mm_tokens_per_image": 256}),
    "qwen2.5-vl-7b": Size("Qwen/Qwen2.5-VL-7B-Instruct", "qwen2_5_vl", 8.29e9, {
        "text_config": {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                        "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064},
        "vision_config": {**QWEN2_5_VL_VISION, "out_hidden_size": 3584}, "tie_word_embeddings": False}),
    "qwen2.5-vl-72b": Size("Qwen/Qwen2.5-VL-72B-Instruct", "qwen2_5_vl", 73.4e9, {
        "text_config": {"hidden_size": 8192, "intermediate_size": 29568, "num_hidden_layers": 80,
                        "num_attention_heads": 64, "num_key_value_heads": 8, "vocab_size": 152064},
        "vision_config": {**QWEN2_5_VL_VISION, "out_hidden_size": 8192}, "tie_word_embeddings": False}),
    "internvl3-8b": Size("OpenGVLab/InternVL3-8B-hf", "internvl", 7.94e9, {
        "vision_config": INTERNVIT_300M, "text_config": QWEN2_5_7B, "downsample_ratio": 0.5,
        "tie_word_embeddings": False}),
    "internvl3-78b": Size("OpenGVLab/InternVL3-78B-hf", "internvl", 78.4e9, {
        "vision_config": INTERNVIT_6B, "text_config": QWEN2_5_72B, "downsample_ratio": 0.5,
        "tie_word_embeddings": False}),
}


def meta_model_of_size(name: str, dtype):
    """The published model ``name`` (a key of :data:`SIZES`) built on the meta device."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    size = SIZES[name]
    config = AutoConfig.for_model(size.model_type, **size.config)
    with torch.device("meta"):
        return AutoModelForImageTextToText.from_config(config).to(dtype)
