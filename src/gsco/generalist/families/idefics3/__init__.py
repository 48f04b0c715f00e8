"""Idefics3 (HuggingFaceM4/Idefics3-8B-Llama3; SmolVLM v1, HuggingFaceTB/SmolVLM-Instruct, is an idefics3 model).

Its tiny model is still written by hand (28 px tiles, SmolVLM's template): the checkpoint's files are not shipped
here yet (tests/generalist/test_family_cards.py names the families still without them).
"""

from gsco.generalist.families import Family
from gsco.generalist.families.building import TEXT, VISION

TEMPLATE = ("{{- '<|im_start|>' -}}{%- for m in messages -%}{{- (m['role'] | capitalize) + ':' -}}"
            "{%- if m['content'] is string -%}{{- m['content'] -}}{%- else -%}{%- for c in m['content'] -%}"
            "{%- if c['type'] == 'image' -%}{{- '<image>' -}}{%- else -%}{{- c['text'] -}}{%- endif -%}"
            "{%- endfor -%}{%- endif -%}{{- '<end_of_utterance>\\n' -}}{%- endfor -%}"
            "{%- if add_generation_prompt -%}{{- 'Assistant:' -}}{%- endif -%}")
TOKENS = ["<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>", "<image>",
          "<global-img>", *(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7))]


def parts(config_class, vision_class, extra: list[str] = ()):
    """(tokenizer, config, image processor sizes) of a tiny Idefics3-kind model: 28 px tiles of 14 px patches, 2 x 2
    pixel shuffle (1 token per tile), up to 2 x 2 tiles and a global view."""
    from transformers import LlamaConfig

    from gsco.tokenizers import byte_level_tokenizer

    tok = byte_level_tokenizer([*TOKENS, *extra], pad_token="<|endoftext|>", eos_token="<end_of_utterance>",
                               bos_token="<|im_start|>")
    tok.chat_template = TEMPLATE
    tok.padding_side = tok.init_kwargs["padding_side"] = "left"
    text = LlamaConfig(**TEXT, max_position_embeddings=4096, vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                       eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    config = config_class(vision_config=vision_class(**VISION, image_size=28, patch_size=14), text_config=text,
                          scale_factor=2, image_token_id=tok.convert_tokens_to_ids("<image>"),
                          tie_word_embeddings=False)
    return tok, config, {"size": {"longest_edge": 56}, "max_image_size": {"longest_edge": 28}}


def build():
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
        Idefics3VisionConfig,
    )

    tok, config, sizes = parts(Idefics3Config, Idefics3VisionConfig)
    processor = Idefics3Processor(image_processor=Idefics3ImageProcessor(**sizes), tokenizer=tok, image_seq_len=1,
                                  chat_template=TEMPLATE)
    return Idefics3ForConditionalGeneration(config), processor


FAMILY = Family(
    name="idefics3", model_type="idefics3",
    checkpoints="HuggingFaceM4/Idefics3-8B-Llama3; HuggingFaceTB/SmolVLM-Instruct (SmolVLM v1)",
    card="HuggingFaceM4/Idefics3-8B-Llama3", vision=("vision_model", "connector"), build_tiny=build)
