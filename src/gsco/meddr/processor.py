"""MedDr's processor: one image -> one square tile, the Hermes-2 chat template, the image special tokens.

MedDr was trained with InternVL-Chat-V1.2's preprocessing: RGB, optional padding to a square with the ImageNet
mean colour (``pad2square``), a bicubic *stretch* to ``force_image_size`` and ImageNet mean/std — never the
dynamic tiling that transformers' InternVL processor applies by default. transformers' PIL backend of the
GOT-OCR2 image processor reproduces that resize exactly, so the image processor is that class with tiling off and
``pad2square`` added; the processor is the stock ``InternVLProcessor``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from transformers import AutoImageProcessor, InternVLProcessor, PreTrainedTokenizerFast
from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import (
    GotOcr2ImageProcessorKwargs,
    GotOcr2ImageProcessorPil,
)
from transformers.models.internvl.video_processing_internvl import InternVLVideoProcessor

from gsco.data.readers import IMAGENET_MEAN, IMAGENET_STD, expand_to_square
from gsco.generalist.model import ModelLoadError
from gsco.meddr.model import MedDrConfig

IMG_START, IMG_END, IMG_CONTEXT, VIDEO = "<img>", "</img>", "<IMG_CONTEXT>", "<video>"
IMAGE_SPECIAL_TOKENS = {"start_image_token": IMG_START, "end_image_token": IMG_END,
                        "context_image_token": IMG_CONTEXT, "video_token": VIDEO}
DEFAULT_SYSTEM_MESSAGE = "Answer the questions."

# InternVL's "Hermes-2" conversation (MPT separator style): no newline after <|im_end|>. An image item renders as
# one <IMG_CONTEXT> followed by a newline; the processor expands it to <img> + N x <IMG_CONTEXT> + </img>.
# The {% generation %} markers let training ask for the assistant-token mask.
HERMES2_CHAT_TEMPLATE = (
    "{%- set system_message = '" + DEFAULT_SYSTEM_MESSAGE + "' -%}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- if messages[0]['content'] is string -%}{%- set system_message = messages[0]['content'] -%}"
    "{%- else -%}{%- set system_message = messages[0]['content'] | selectattr('type', 'equalto', 'text')"
    " | map(attribute='text') | join('') -%}{%- endif -%}"
    "{%- set messages = messages[1:] -%}"
    "{%- endif -%}"
    "{{- '<|im_start|>system\\n' + system_message + '<|im_end|>' -}}"
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{%- set text = message['content'] -%}"
    "{%- else -%}{%- set text = namespace(value='') -%}"
    "{%- for item in message['content'] if item['type'] == 'image' -%}"
    "{%- set text.value = text.value + '" + IMG_CONTEXT + "\\n' -%}{%- endfor -%}"
    "{%- for item in message['content'] if item['type'] == 'text' -%}"
    "{%- set text.value = text.value + item['text'] -%}{%- endfor -%}"
    "{%- set text = text.value -%}"
    "{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}{% generation %}{{- text + '<|im_end|>' -}}{% endgeneration %}"
    "{%- else -%}{{- text + '<|im_end|>' -}}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


class MedDrImageProcessorKwargs(GotOcr2ImageProcessorKwargs, total=False):
    r"""
    pad2square (`bool`, *optional*, defaults to `self.pad2square`):
        Pad the image to a square with the ImageNet mean colour before resizing (InternVL's ``expand2square``).
    """

    pad2square: bool


class MedDrImageProcessor(GotOcr2ImageProcessorPil):
    """One bicubic-stretched square tile per image, ImageNet mean/std; optional ``pad2square``."""

    valid_kwargs = MedDrImageProcessorKwargs
    image_mean = list(IMAGENET_MEAN)
    image_std = list(IMAGENET_STD)
    size = {"height": 448, "width": 448}
    crop_to_patches = False
    min_patches = 1
    max_patches = 1
    pad2square = False

    def _preprocess(self, images: list[np.ndarray], *args, pad2square: bool | None = None, **kwargs):
        if self.pad2square if pad2square is None else pad2square:
            images = [expand_to_square(image) for image in images]
        return super()._preprocess(images, *args, **kwargs)


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """A MedDr/InternVL tokenizer from a directory (fast ``tokenizer.json`` or Yi's SentencePiece files, which
    transformers converts), with the image special tokens named as the processor expects."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path), extra_special_tokens=dict(IMAGE_SPECIAL_TOKENS))
    return prepare_tokenizer(tokenizer)


def prepare_tokenizer(tokenizer: PreTrainedTokenizerFast) -> PreTrainedTokenizerFast:
    """Check the image special tokens (they must already be in the vocabulary, as in Yi's and the published
    checkpoint's) and set the Hermes-2 chat template and left padding for batched generation."""
    vocab = tokenizer.get_vocab()
    missing = [tok for tok in (IMG_START, IMG_END, IMG_CONTEXT, VIDEO) if tok not in vocab]
    if missing:
        raise ModelLoadError(f"the tokenizer lacks the special tokens {missing}; a MedDr tokenizer must define them")
    named = {name: getattr(tokenizer, name, None) for name in IMAGE_SPECIAL_TOKENS}
    if named != IMAGE_SPECIAL_TOKENS:
        raise ModelLoadError(f"the tokenizer names its image tokens {named}; load it with "
                             f"extra_special_tokens={IMAGE_SPECIAL_TOKENS} (gsco.meddr.processor.load_tokenizer does)")
    tokenizer.chat_template = HERMES2_CHAT_TEMPLATE
    tokenizer.padding_side = tokenizer.init_kwargs["padding_side"] = "left"  # saved with the tokenizer
    return tokenizer


def build_processor(tokenizer: PreTrainedTokenizerFast, image_size: int, image_seq_length: int,
                    pad2square: bool = False) -> InternVLProcessor:
    image_processor = MedDrImageProcessor(size={"height": image_size, "width": image_size}, pad2square=pad2square)
    return InternVLProcessor(
        image_processor=image_processor, tokenizer=prepare_tokenizer(tokenizer),
        video_processor=InternVLVideoProcessor(), image_seq_length=image_seq_length,
        chat_template=HERMES2_CHAT_TEMPLATE,
    )


# Yi's special tokens in Yi's order (ids 0-18), as the tokenizers built here lay them out
SPECIAL_TOKENS = ["<unk>", "<|startoftext|>", "<|endoftext|>", "<reserved_3>", "<reserved_4>", "<reserved_5>",
                  "<|im_start|>", "<|im_end|>", "<|im_sep|>", IMG_START, IMG_END, IMG_CONTEXT,
                  "<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>", VIDEO]
SPECIAL_NAMES = {"bos_token": "<|startoftext|>", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
                 "unk_token": "<unk>"}


def build_byte_tokenizer(model_max_length: int = 4096) -> PreTrainedTokenizerFast:
    """A small byte-level tokenizer with Yi's special-token layout (ids 0-18), for the ``tiny`` preset: any text
    round-trips through its 256 byte tokens, and nothing has to be downloaded."""
    from gsco.tokenizers import byte_level_tokenizer

    tokenizer = byte_level_tokenizer(SPECIAL_TOKENS, model_max_length, **SPECIAL_NAMES,
                                     extra_special_tokens=dict(IMAGE_SPECIAL_TOKENS))
    return prepare_tokenizer(tokenizer)


def build_word_tokenizer(texts: list[str], model_max_length: int = 4096) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over ``texts`` with Yi's special-token layout, for benchmarks: prompts get about
    MedDr's token counts (:func:`gsco.tokenizers.word_level_tokenizer`)."""
    from gsco.tokenizers import word_level_tokenizer

    tokenizer = word_level_tokenizer(SPECIAL_TOKENS, texts, model_max_length, **SPECIAL_NAMES,
                                     extra_special_tokens=dict(IMAGE_SPECIAL_TOKENS))
    return prepare_tokenizer(tokenizer)


def register_auto_classes() -> None:
    AutoImageProcessor.register(MedDrConfig, image_processor_classes={"pil": MedDrImageProcessor}, exist_ok=True)
