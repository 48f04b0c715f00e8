"""InternVL3 in transformers' classes (OpenGVLab/InternVL3-8B-hf, OpenGVLab/InternVL3-78B-hf).

What matters for what the model sees: the checkpoint tiles an image into 448 px tiles by its aspect ratio (1-12
tiles, plus a thumbnail when there is more than one), 256 tokens each between ``<img>`` and ``</img>``, normalised with
ImageNet's mean and std — whatever its size: a 64 x 48 px image becomes 12 upscaled tiles and a thumbnail, 3,328
tokens. GSCo's default for small medical images is one tile (``max_tiles=1``: 256 tokens); ``max_tiles=12`` is the
card's. The ChatML template writes no system message (InternVL's own
``chat()`` sends one: ``card_system``); the tokenizer adds no BOS; generation stops at ``<|im_end|>``.
"""

from gsco.generalist.families import Family, ImageKey, Size

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
INTERNVL_SYSTEM = ("你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的"
                   "多模态大语言模型。")


def build():
    """The tiny InternVL3: the card's processor files (448 px tiles of 256 tokens, ImageNet mean/std), tokenizer
    behaviour, chat template and stop id; InternViT keeps its 448 px input and 14 px patches."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    from gsco.generalist.families import building

    tokenizer = building.tiny_tokenizer(FAMILY)
    processor = building.tiny_processor(FAMILY, tokenizer)
    text = {**building.structural_config(FAMILY, "text_config"), **building.TEXT, "model_type": "qwen2",
            "vocab_size": len(tokenizer), "max_position_embeddings": 8192, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id}
    vision = {**building.structural_config(FAMILY, "vision_config"), **building.VISION,
              "model_type": "internvl_vision"}
    config = AutoConfig.for_model("internvl", **building.structural_config(FAMILY), text_config=text,
                                  vision_config=vision, image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"),
                                  tie_word_embeddings=False)
    model = AutoModelForImageTextToText.from_config(config)
    model.generation_config = building.generation_config(FAMILY, tokenizer)
    return model, processor


FAMILY = Family(
    name="internvl", model_type="internvl", checkpoints="OpenGVLab/InternVL3-8B-hf, OpenGVLab/InternVL3-78B-hf",
    card="OpenGVLab/InternVL3-8B-hf", vision=("vision_tower", "multi_modal_projector"), build_tiny=build,
    card_system=INTERNVL_SYSTEM, image_keys={"max_tiles": ImageKey("max_patches")},
    # a small medical image gains nothing from being upscaled into tiles: one 448 px tile (the checkpoint's 12 tile a
    # 64 x 48 px image into 12 tiles and a thumbnail, 3,328 tokens)
    image_defaults={"max_tiles": 1},
    sizes={
        "internvl3-8b": Size("OpenGVLab/InternVL3-8B-hf", 7.94e9, {
            "vision_config": INTERNVIT_300M, "text_config": QWEN2_5_7B, "downsample_ratio": 0.5,
            "tie_word_embeddings": False}),
        "internvl3-78b": Size("OpenGVLab/InternVL3-78B-hf", 78.4e9, {
            "vision_config": INTERNVIT_6B, "text_config": QWEN2_5_72B, "downsample_ratio": 0.5,
            "tie_word_embeddings": False}),
    })
