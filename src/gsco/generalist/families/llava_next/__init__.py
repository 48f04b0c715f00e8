"""LLaVA-NeXT (llava-hf/llava-v1.6-mistral-7b-hf).

What matters for what the model sees: "anyres" — the image is tiled on the best-fitting of five 336-px grids plus a
336 px base view, 576 tokens each and a row-end token per feature row (a 28 px image: two tiles and the base view);
the Mistral tokenizer adds ``<s>``; "[INST] <image>\\n... [/INST]"; generation stops at ``</s>``.
"""

from gsco.generalist.families import Family
from gsco.generalist.families.llava import LLAVA_SYSTEM, build_llava_kind

FAMILY = Family(
    name="llava_next", model_type="llava_next", checkpoints="llava-hf/llava-v1.6-mistral-7b-hf",
    card="llava-hf/llava-v1.6-mistral-7b-hf", vision=("vision_tower", "multi_modal_projector"),
    build_tiny=lambda: build_llava_kind(FAMILY, "LlavaNextConfig"), card_system=LLAVA_SYSTEM)
