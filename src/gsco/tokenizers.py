"""Tokenizers the tiny presets build locally (nothing is downloaded)."""

from __future__ import annotations

from transformers import PreTrainedTokenizerFast


def byte_level_tokenizer(special: list[str], model_max_length: int = 4096, **named) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer without merges: ``special`` tokens take ids 0.. in order, then the 256 byte
    tokens, so any text round-trips. ``named``: ``bos_token=...``, ``eos_token=...`` and the like."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(special + alphabet)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(special)
    return PreTrainedTokenizerFast(tokenizer_object=backend, model_max_length=model_max_length,
                                   clean_up_tokenization_spaces=False, **named)
