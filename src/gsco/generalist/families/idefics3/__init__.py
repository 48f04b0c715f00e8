"""Idefics3 (HuggingFaceM4/Idefics3-8B-Llama3; SmolVLM v1, HuggingFaceTB/SmolVLM-Instruct, is an idefics3 model).

What matters for what the model sees: the checkpoint resizes an image's longest edge to 1,456 px and splits it into
364 px tiles of 169 tokens plus a global view — a 28 px MedMNIST image becomes 16 upscaled tiles and the global view,
2,873 image tokens of the same few pixels. GSCo's default for small medical images is one tile (``image_splitting``
off: the image squared to 364 px, 169 tokens); ``image_splitting=true`` is the card's, ``longest_edge`` sets the size
split into tiles. The Llama 3 tokenizer adds ``<|begin_of_text|>`` and the chat template writes it too (one, as
``apply_chat_template(tokenize=True)`` builds it); turns end with ``<end_of_utterance>``, where generation stops.
"""

from gsco.generalist.families import Family, ImageKey


def build_idefics3_kind(family, model_type: str):
    """A tiny Idefics3-kind model (Idefics3, SmolVLM) from ``family``'s files: the checkpoint's processor (tile size,
    longest edge, tokens a tile), tokenizer behaviour, chat template and stop ids; the vision tower keeps the tile
    size and 14 px patches, and the pixel shuffle its scale factor, so a tile gives the checkpoint's token count."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    from gsco.generalist.families import building

    tokenizer = building.tiny_tokenizer(family)
    processor = building.tiny_processor(family, tokenizer)
    text = {**building.structural_config(family, "text_config"), **building.TEXT, "model_type": "llama",
            "vocab_size": len(tokenizer), "max_position_embeddings": 8192, "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    vision = {**building.structural_config(family, "vision_config"), **building.VISION}
    config = AutoConfig.for_model(model_type, **building.structural_config(family), text_config=text,
                                  vision_config=vision, image_token_id=tokenizer.convert_tokens_to_ids("<image>"))
    model = AutoModelForImageTextToText.from_config(config)
    model.generation_config = building.generation_config(family, tokenizer)
    return model, processor


# a MedMNIST image is 28-224 px: one tile of the checkpoint's size, not 16 upscaled copies of it
IMAGE_KEYS = {"image_splitting": ImageKey("do_image_splitting"), "longest_edge": ImageKey("size.longest_edge")}
IMAGE_DEFAULTS = {"image_splitting": False}

FAMILY = Family(
    name="idefics3", model_type="idefics3",
    checkpoints="HuggingFaceM4/Idefics3-8B-Llama3; HuggingFaceTB/SmolVLM-Instruct (SmolVLM v1)",
    card="HuggingFaceM4/Idefics3-8B-Llama3", vision=("vision_model", "connector"),
    build_tiny=lambda: build_idefics3_kind(FAMILY, "idefics3"), image_keys=IMAGE_KEYS, image_defaults=IMAGE_DEFAULTS)
