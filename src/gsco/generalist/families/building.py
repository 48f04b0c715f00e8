"""How a family's tiny random model is built from its folder's checkpoint files: the real processor files and chat
template as they are, a byte-level tokenizer carrying the real special tokens and BOS behaviour, the real structural
config with vocabulary, width and depth shrunk, and the real generation config with its stop tokens mapped by name.
Nothing is downloaded; the weights are random (answers are noise) and the code paths are the real family's."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

# the shrunk widths and depths (every other structural field is the checkpoint's)
TEXT = {"hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "initializer_range": 0.2}
VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
# files of a checkpoint that AutoProcessor reads beside the tokenizer's
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json", "chat_template.json")


def chat_template(family) -> str:
    """The checkpoint's chat template (its chat_template.json)."""
    return family.card_file("chat_template.json")["chat_template"]


def special_tokens(family) -> list[str]:
    """The checkpoint's added tokens, in the order of their ids."""
    decoder = family.card_file("tokenizer_config.json")["added_tokens_decoder"]
    return [decoder[k]["content"] for k in sorted(decoder, key=int)]


def real_token_names(family) -> dict[int, str]:
    """Real id -> token of the checkpoint's added tokens (to map its stop ids onto the tiny vocabulary)."""
    decoder = family.card_file("tokenizer_config.json")["added_tokens_decoder"]
    return {int(k): v["content"] for k, v in decoder.items()}


def bos_added(family) -> str | None:
    """The BOS token the checkpoint's tokenizer adds in front of every text it encodes, or None: its
    tokenizer_config's ``add_bos_token`` (SentencePiece-era tokenizers: Llama 2, Mistral, Gemma), or its
    tokenizer.json's post-processor (Llama 3) where the folder holds that excerpt."""
    config = family.card_file("tokenizer_config.json")
    post = family.folder / "tokenizer.json"
    if post.is_file():
        processor = json.loads(post.read_text())["post_processor"]
        single = processor.get("single") or next((p["single"] for p in processor.get("processors", [])
                                                  if p.get("type") == "TemplateProcessing"), [])
        first = single[0] if single else {}
        return first.get("SpecialToken", {}).get("id")
    return config.get("bos_token") if config.get("add_bos_token") else None


def tiny_tokenizer(family):
    """A byte-level tokenizer with the checkpoint's special tokens (ids 0.. in the checkpoint's order), its named
    tokens (bos, eos, pad, unk and the processor's image tokens), its BOS behaviour and chat template, padding on the
    left (batched generation)."""
    from tokenizers import processors

    from gsco.tokenizers import byte_level_tokenizer

    config = family.card_file("tokenizer_config.json")
    named = {k: config[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token") if config.get(k)}
    # the processor's named tokens (Gemma 3's boi_token, InternVL's context_image_token, ...): top-level keys in
    # files saved by transformers 4.x, extra_special_tokens in 5.x
    extra = {k: v for k, v in config.items() if k.endswith("_token") and isinstance(v, str) and k not in named}
    extra.update(config.get("extra_special_tokens") or {})
    if extra:
        named["extra_special_tokens"] = extra
    special = special_tokens(family)
    special += [t for t in extra.values() if t not in special]  # a named token the excerpt's ids leave out
    tokenizer = byte_level_tokenizer(special, **named)
    bos = bos_added(family)
    if bos is not None:
        bos_id = tokenizer.convert_tokens_to_ids(bos)
        tokenizer._tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)])
    tokenizer.chat_template = chat_template(family)
    tokenizer.padding_side = tokenizer.init_kwargs["padding_side"] = "left"
    return tokenizer


def tiny_processor(family, tokenizer=None, processor_kwargs: dict | None = None, **overrides):
    """The checkpoint's processor, loaded by ``AutoProcessor`` from its own files beside the tiny tokenizer (as a
    real folder loads, with ``processor_kwargs``); ``overrides``: preprocessor_config fields set otherwise."""
    from transformers import AutoProcessor

    tokenizer = tokenizer or tiny_tokenizer(family)
    with tempfile.TemporaryDirectory() as tmp:
        for name in PROCESSOR_FILES:
            if (family.folder / name).is_file():
                (Path(tmp) / name).write_text((family.folder / name).read_text())
        if overrides:
            pre = family.card_file("preprocessor_config.json")
            (Path(tmp) / "preprocessor_config.json").write_text(json.dumps({**pre, **overrides}))
        tokenizer.save_pretrained(tmp)
        # the model type, from which a folder without a video processor's file gets the family's default one
        (Path(tmp) / "config.json").write_text(json.dumps({"model_type": family.model_type}))
        return AutoProcessor.from_pretrained(tmp, **(processor_kwargs or {}))


def ids(tokenizer, *tokens: str) -> list[int]:
    return [tokenizer.convert_tokens_to_ids(t) for t in tokens]


def stop_ids(family, tokenizer, field: str = "eos_token_id") -> int | list[int] | None:
    """The checkpoint's generation_config ``field`` (ids of its vocabulary) as ids of the tiny vocabulary."""
    value = family.card_file("generation_config.json").get(field)
    if value is None:
        return None
    names = real_token_names(family)
    mapped = [tokenizer.convert_tokens_to_ids(names[v]) for v in (value if isinstance(value, list) else [value])]
    return mapped if isinstance(value, list) else mapped[0]


def generation_config(family, tokenizer):
    """The checkpoint's generation_config with its token ids mapped onto the tiny vocabulary."""
    from transformers import GenerationConfig

    values = {k: v for k, v in family.card_file("generation_config.json").items() if k != "transformers_version"}
    for field in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if field in values:
            values[field] = stop_ids(family, tokenizer, field)
    return GenerationConfig(**values)


def structural_config(family, part: str | None = None) -> dict:
    """The checkpoint's config.json (or its ``part``, e.g. text_config) without the token ids of the real
    vocabulary."""
    config = family.card_file("config.json")
    if part is not None:
        config = config.get(part, {})
    return {k: v for k, v in config.items() if not isinstance(v, dict) and not k.endswith(("token_id", "token_index"))
            and k not in ("architectures", "torch_dtype", "dtype", "transformers_version", "model_type")}
