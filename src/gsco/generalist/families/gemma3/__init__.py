"""Gemma 3 — MedGemma 4B / 27B (google/medgemma-4b-it, google/medgemma-27b-it) and Gemma 3 instruction models.

The card's files here are google/gemma-3-4b-it's, which MedGemma 4B shares (SOURCES.json). What matters for what the
model sees: the tokenizer adds ``<bos>`` and the chat template writes it too (so a prompt rendered to text and then
tokenized again has two — the card's ``apply_chat_template(tokenize=True)`` has one); every image is 896 px, 256 image
tokens between ``<start_of_image>`` and ``<end_of_image>``; generation stops at ``<eos>`` or ``<end_of_turn>``; the
language model alternates five sliding-window layers (1,024 tokens) with one full-attention layer and ties its
embeddings; the vision tower has no pooling head.
"""

from gsco.generalist.families import Family, Size

SIGLIP_400M = {"model_type": "siglip_vision_model", "hidden_size": 1152, "intermediate_size": 4304,
               "num_hidden_layers": 27, "num_attention_heads": 16, "image_size": 896, "patch_size": 14}


def build():
    """The tiny Gemma 3: the card's processor files (896 px, 256 image tokens), tokenizer behaviour and chat
    template; six text layers keep the real 5 sliding : 1 full pattern; no vision head. Its embeddings are untied
    where the real model ties them: tied, a random model of this width answers every prompt with the same repeated
    token (measured: 2 distinct answers to 6 prompts), so no test could see its answers depend on its input."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    from gsco.generalist.families import building

    tokenizer = building.tiny_tokenizer(FAMILY)
    processor = building.tiny_processor(FAMILY, tokenizer)
    text = {**building.structural_config(FAMILY, "text_config"), **building.TEXT, "num_hidden_layers": 6,
            "head_dim": 12, "query_pre_attn_scalar": 12, "vocab_size": len(tokenizer),
            "rope_parameters": {"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
                                "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}},
            "pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": building.stop_ids(FAMILY, tokenizer)}
    vision = {**building.structural_config(FAMILY, "vision_config"), **building.VISION,
              "model_type": "siglip_vision_model"}
    boi, eoi, image = building.ids(tokenizer, "<start_of_image>", "<end_of_image>", "<image_soft_token>")
    config = AutoConfig.for_model("gemma3", **building.structural_config(FAMILY), text_config=text,
                                  vision_config=vision, boi_token_index=boi, eoi_token_index=eoi,
                                  image_token_index=image, eos_token_id=building.stop_ids(FAMILY, tokenizer),
                                  tie_word_embeddings=False)
    model = AutoModelForImageTextToText.from_config(config)
    model.generation_config = building.generation_config(FAMILY, tokenizer)
    return model, processor


FAMILY = Family(
    name="gemma3", model_type="gemma3",
    checkpoints="google/medgemma-4b-it, google/medgemma-27b-it (MedGemma); google/gemma-3-*-it",
    card="google/medgemma-4b-it", vision=("vision_tower", "multi_modal_projector"), build_tiny=build, served=True,
    refused_dtypes={"float16": "Gemma 3's activations overflow float16's range (its weights were trained in "
                               "bfloat16): use dtype=bfloat16 on a GPU, or float32"},
    card_system="You are an expert radiologist.",
    sizes={
        "medgemma-4b": Size("google/medgemma-4b-it", 4.30e9, {
            "text_config": {"hidden_size": 2560, "intermediate_size": 10240, "num_hidden_layers": 34,
                            "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256,
                            "vocab_size": 262208},
            "vision_config": SIGLIP_400M, "mm_tokens_per_image": 256}),
        "medgemma-27b": Size("google/medgemma-27b-it", 27.4e9, {
            "text_config": {"hidden_size": 5376, "intermediate_size": 21504, "num_hidden_layers": 62,
                            "num_attention_heads": 32, "num_key_value_heads": 16, "head_dim": 128,
                            "vocab_size": 262208},
            "vision_config": SIGLIP_400M, "mm_tokens_per_image": 256}),
    })
