"""One way to build a generalist's input: the way its model card does.

The cards feed a model with ``processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
return_dict=True, return_tensors="pt")`` (or, for Qwen2.5-VL, the rendered text through the processor, which gives the
same ids). That renders the chat template and then runs the processor on the text and images, adding the tokenizer's
special tokens only when the rendered text does not already start with its BOS — a Gemma 3 or Idefics3 template
writes ``<bos>`` itself, and tokenizing the rendered text again with the tokenizer's own BOS gives two. Every path
here (plain, batched, prefix-shared) renders with :func:`render` and encodes with :func:`encode`, which is that
call, batched with left padding; a test compares its ids, mask and pixels with the card's for every family.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

logger = logging.getLogger(__name__)

# an image outside this many tokens is worth a line: fewer, the model sees a thumbnail coarsely; more, it is split
# into many tiles (and every arm of a case pays for them)
FEW_IMAGE_TOKENS, MANY_IMAGE_TOKENS = 64, 2048


def messages(question: str, with_image: bool, system: str | None = None, question_first: bool = False) -> list[dict]:
    """The conversation of one question: an optional system turn, then the user's image (if any) and text — or the
    text and then the image (``question_first``: MedGemma's card)."""
    image = [{"type": "image"}] if with_image else []
    text = [{"type": "text", "text": question}]
    content = text + image if question_first else image + text
    return ([{"role": "system", "content": [{"type": "text", "text": system}]}] if system else []) + \
        [{"role": "user", "content": content}]


def render(processor, question: str, with_image: bool, system: str | None = None,
           question_first: bool = False) -> str:
    """The chat template's text for one question, as the card renders it."""
    return processor.apply_chat_template(messages(question, with_image, system, question_first),
                                         add_generation_prompt=True, tokenize=False)


def adds_special_tokens(processor, text: str) -> bool:
    """What ``apply_chat_template(tokenize=True)`` decides: the tokenizer adds its special tokens (BOS) unless the
    rendered text starts with the BOS already."""
    bos = processor.tokenizer.bos_token
    return not (bos is not None and text.startswith(bos))


def encode(processor, texts: Sequence[str], images: Sequence | None):
    """The processor's inputs for rendered ``texts`` and their ``images`` (one list per text, or None), left padded:
    the card's call, batched."""
    processor.tokenizer.padding_side = "left"
    return processor(text=list(texts), images=images, padding=True, return_tensors="pt",
                     add_special_tokens=adds_special_tokens(processor, texts[0]))


def image_token_id(processor) -> int | None:
    """The id of the token that stands for one image feature in the prompt (``<image_soft_token>``,
    ``<|image_pad|>``, ``<IMG_CONTEXT>``, ``<image>``), or None."""
    # Gemma 3's processor names the image's opening token; its tokenizer names the feature token
    token = getattr(processor.tokenizer, "image_token", None) or getattr(processor, "image_token", None)
    return None if token is None else processor.tokenizer.convert_tokens_to_ids(token)


def image_token_counts(processor, input_ids, images_per_row: Sequence[int]) -> list[int]:
    """Image tokens per image of each row (rows with one image or none: the count, or 0)."""
    token = image_token_id(processor)
    if token is None:
        return []
    return [int((row == token).sum()) // n for row, n in zip(input_ids, images_per_row) if n]


def warn_image_tokens(counts: Sequence[int], said: set) -> None:
    """One line (once per generalist) when an image became fewer than 64 or more than 2,048 image tokens."""
    for count in counts:
        if not FEW_IMAGE_TOKENS <= count <= MANY_IMAGE_TOKENS and "image tokens" not in said:
            said.add("image tokens")
            logger.warning("an image became %d image tokens (outside %d-%d: %s); the family's image keys set this "
                           "(README, 'Generalist families'), and show_prompt=true shows what the model receives",
                           count, FEW_IMAGE_TOKENS, MANY_IMAGE_TOKENS,
                           "the model sees it coarsely" if count < FEW_IMAGE_TOKENS else "every question pays for it")


def describe(processor, input_ids, images_per_row: int) -> str:
    """The token sequence a model receives, decoded with special tokens visible, runs of one repeated special token
    written once with their length (``<image_soft_token>×256``), then how many image tokens each image became."""
    tokenizer = processor.tokenizer
    special = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
    ids = [int(i) for i in input_ids]
    pieces, text = [], []
    i = 0
    while i < len(ids):
        if ids[i] in special:
            if text:
                pieces.append(tokenizer.decode(text, skip_special_tokens=False))
                text = []
            run = 1
            while i + run < len(ids) and ids[i + run] == ids[i]:
                run += 1
            token = tokenizer.convert_ids_to_tokens(ids[i])
            pieces.append(token if run == 1 else f"{token}×{run}")
            i += run
        else:
            text.append(ids[i])
            i += 1
    if text:
        pieces.append(tokenizer.decode(text, skip_special_tokens=False))
    lines = [f"prompt ({len(ids)} tokens):", "".join(pieces)]
    counts = image_token_counts(processor, [input_ids], [images_per_row])
    for n in range(images_per_row):
        lines.append(f"image {n + 1}: {counts[0] if counts else 'unknown'} image tokens")
    return "\n".join(lines)


def show_prompt(generalist, cfg, image, question: str, system: str | None = None) -> None:
    """``show_prompt=true``: print, once per generalist, what the model receives for this question to stderr — the
    tokens (a local model) or the chat messages (a served one, whose server applies its own template)."""
    import json
    import sys

    if not getattr(cfg, "show_prompt", False) or getattr(generalist, "_shown_prompt", False):
        return
    generalist._shown_prompt = True
    if hasattr(generalist, "describe_input"):
        text = generalist.describe_input(image, question, system)
    else:
        text = "messages sent to the server (its chat template renders them):\n" + \
            json.dumps(messages(question, image is not None, system), indent=1)
    print(f"--- show_prompt: what {generalist.name} receives for the first question ---\n{text}\n---",
          file=sys.stderr)
