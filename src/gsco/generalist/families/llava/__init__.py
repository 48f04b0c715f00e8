"""LLaVA-1.5 (llava-hf/llava-1.5-7b-hf, llava-hf/llava-1.5-13b-hf).

What matters for what the model sees: the image is resized and centre-cropped to 336 px and becomes 576 tokens (CLIP
ViT-L/14, the class token dropped); the Llama-2 tokenizer adds ``<s>``, the chat template does not; "USER: <image>\\n
... ASSISTANT:"; generation stops at ``</s>``.
"""

from gsco.generalist.families import Family

LLAVA_SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
                "detailed, and polite answers to the human's questions.")


def build_llava_kind(family, config_class_name: str):
    """A tiny LLaVA-kind model (LLaVA, LLaVA-NeXT) from ``family``'s files: the CLIP tower keeps its 336 px input and
    14 px patches, the language model shrinks."""
    import transformers
    from transformers import AutoModelForImageTextToText, CLIPVisionConfig

    from gsco.generalist.families import building

    tokenizer = building.tiny_tokenizer(family)
    processor = building.tiny_processor(family, tokenizer)
    text_class = transformers.CONFIG_MAPPING[family.card_file("config.json")["text_config"]["model_type"]]
    text = text_class(**{**building.structural_config(family, "text_config"), **building.TEXT,
                         "vocab_size": len(tokenizer), "max_position_embeddings": 4096,
                         "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                         "pad_token_id": tokenizer.pad_token_id})
    vision = CLIPVisionConfig(**{**building.structural_config(family, "vision_config"), **building.VISION,
                                 "projection_dim": 32})
    config = getattr(transformers, config_class_name)(
        **building.structural_config(family), text_config=text, vision_config=vision,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"))
    model = AutoModelForImageTextToText.from_config(config)
    model.generation_config = building.generation_config(family, tokenizer)
    return model, processor


FAMILY = Family(
    name="llava", model_type="llava", checkpoints="llava-hf/llava-1.5-7b-hf, llava-hf/llava-1.5-13b-hf",
    card="llava-hf/llava-1.5-7b-hf", vision=("vision_tower", "multi_modal_projector"),
    build_tiny=lambda: build_llava_kind(FAMILY, "LlavaConfig"), served=True, card_system=LLAVA_SYSTEM)
