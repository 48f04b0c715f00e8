"""SmolVLM2 (HuggingFaceTB/SmolVLM2-2.2B-Instruct; SmolVLM v1 checkpoints are idefics3 models).

Its tiny model is still written by hand (Idefics3's tiny parts with a video token): the checkpoint's files are not
shipped here yet (tests/generalist/test_family_cards.py names the families still without them).
"""

from gsco.generalist.families import Family
from gsco.generalist.families.idefics3 import TEMPLATE, parts


def build():
    from transformers import (
        SmolVLMConfig,
        SmolVLMForConditionalGeneration,
        SmolVLMImageProcessor,
        SmolVLMProcessor,
        SmolVLMVisionConfig,
    )
    from transformers.models.smolvlm.video_processing_smolvlm import SmolVLMVideoProcessor

    tok, config, sizes = parts(SmolVLMConfig, SmolVLMVisionConfig, ["<video>"])
    processor = SmolVLMProcessor(image_processor=SmolVLMImageProcessor(**sizes), tokenizer=tok,
                                 video_processor=SmolVLMVideoProcessor(), image_seq_len=1, chat_template=TEMPLATE)
    return SmolVLMForConditionalGeneration(config), processor


FAMILY = Family(
    name="smolvlm", model_type="smolvlm",
    checkpoints="HuggingFaceTB/SmolVLM2-2.2B-Instruct, HuggingFaceTB/SmolVLM2-500M-Video-Instruct",
    card="HuggingFaceTB/SmolVLM2-2.2B-Instruct", vision=("vision_model", "connector"), build_tiny=build)
