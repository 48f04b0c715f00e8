"""Qwen2.5-VL (Qwen/Qwen2.5-VL-7B-Instruct, Qwen/Qwen2.5-VL-72B-Instruct).

What matters for what the model sees: an image is resized to a multiple of 28 px with ``min_pixels`` to
``max_pixels`` pixels and becomes one token per 28 x 28 px (14 px patches merged 2 x 2); the checkpoint's
``min_pixels`` of 3,136 (56 x 56) turns a MedMNIST thumbnail into 4 image tokens, so GSCo's default is the range the
card suggests, 256-1,280 tokens. The chat template adds "You are a helpful assistant." when no system message is
given; the tokenizer adds no BOS; generation stops at ``<|im_end|>`` or ``<|endoftext|>``.
"""

from gsco.generalist.families import Family, ImageKey, Size

QWEN2_5_VL_VISION = {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16}
TOKEN = 28 * 28  # pixels per image token (14 px patches, merged 2 x 2)


def build():
    """The tiny Qwen2.5-VL: the card's processor files, tokenizer behaviour, chat template and stop ids; the vision
    tower keeps the real patch, merge and window sizes (two blocks, the second with full attention)."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    from gsco.generalist.families import building

    tokenizer = building.tiny_tokenizer(FAMILY)
    processor = building.tiny_processor(FAMILY, tokenizer)
    real = building.structural_config(FAMILY)
    token_ids = dict(zip(("vision_start_token_id", "vision_end_token_id", "image_token_id", "video_token_id"),
                         building.ids(tokenizer, "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
                                      "<|video_pad|>")))
    text = {**real, **building.TEXT, "vocab_size": len(tokenizer), "max_position_embeddings": 4096,
            "rope_parameters": {"rope_type": "default", "mrope_section": [2, 2, 2], "rope_theta": real["rope_theta"]},
            "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.pad_token_id}
    vision = {**building.structural_config(FAMILY, "vision_config"), "depth": 2, "hidden_size": 32,
              "intermediate_size": 64, "num_heads": 2, "out_hidden_size": text["hidden_size"],
              "fullatt_block_indexes": [1]}
    config = AutoConfig.for_model("qwen2_5_vl", text_config=text, vision_config=vision, **token_ids,
                                  tie_word_embeddings=real["tie_word_embeddings"])
    model = AutoModelForImageTextToText.from_config(config)
    model.generation_config = building.generation_config(FAMILY, tokenizer)
    return model, processor


FAMILY = Family(
    name="qwen2_5_vl", model_type="qwen2_5_vl",
    checkpoints="Qwen/Qwen2.5-VL-7B-Instruct, Qwen/Qwen2.5-VL-72B-Instruct", card="Qwen/Qwen2.5-VL-7B-Instruct",
    vision=("visual",), build_tiny=build, prefix_sharing=False,
    no_prefix_sharing="Qwen2.5-VL's multimodal RoPE places the text after an image by the image's grid, computed "
                      "from the whole prompt in generate's first step; a cached prefix would lose it",
    card_system=None,  # the template's own "You are a helpful assistant." when none is given
    image_keys={"min_pixels": ImageKey("min_pixels"), "max_pixels": ImageKey("max_pixels")},
    image_defaults={"min_pixels": 256 * TOKEN, "max_pixels": 1280 * TOKEN},
    sizes={
        "qwen2.5-vl-7b": Size("Qwen/Qwen2.5-VL-7B-Instruct", 8.29e9, {
            "text_config": {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                            "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064},
            "vision_config": {**QWEN2_5_VL_VISION, "out_hidden_size": 3584}, "tie_word_embeddings": False}),
        "qwen2.5-vl-72b": Size("Qwen/Qwen2.5-VL-72B-Instruct", 73.4e9, {
            "text_config": {"hidden_size": 8192, "intermediate_size": 29568, "num_hidden_layers": 80,
                            "num_attention_heads": 64, "num_key_value_heads": 8, "vocab_size": 152064},
            "vision_config": {**QWEN2_5_VL_VISION, "out_hidden_size": 8192}, "tie_word_embeddings": False}),
    })
