"""SmolVLM2 (HuggingFaceTB/SmolVLM2-2.2B-Instruct, HuggingFaceTB/SmolVLM2-500M-Video-Instruct; SmolVLM v1 checkpoints
are idefics3 models).

What matters for what the model sees: as Idefics3, with 384 px tiles of 81 tokens (pixel shuffle 3 x 3) and a longest
edge of 1,536 px — a 28 px image becomes 16 upscaled tiles and a global view, 1,377 image tokens; GSCo's default is
one tile (``image_splitting`` off, 81 tokens), ``image_splitting=true`` the card's. The chat template writes
``<|im_start|>``, which the tokenizer does not add; turns end with ``<end_of_utterance>``, where generation stops.
"""

from gsco.generalist.families import Family
from gsco.generalist.families.idefics3 import IMAGE_DEFAULTS, IMAGE_KEYS, build_idefics3_kind

FAMILY = Family(
    name="smolvlm", model_type="smolvlm",
    checkpoints="HuggingFaceTB/SmolVLM2-2.2B-Instruct, HuggingFaceTB/SmolVLM2-500M-Video-Instruct",
    card="HuggingFaceTB/SmolVLM2-2.2B-Instruct", vision=("vision_model", "connector"),
    build_tiny=lambda: build_idefics3_kind(FAMILY, "smolvlm"), image_keys=IMAGE_KEYS, image_defaults=IMAGE_DEFAULTS)
