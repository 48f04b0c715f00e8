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


def word_level_tokenizer(special: list[str], texts: list[str], model_max_length: int = 4096,
                         **named) -> PreTrainedTokenizerFast:
    """A word-level tokenizer: every word and every run of punctuation one token (``\\w+|[^\\w\\s]+``, as BERT
    pre-tokenizes), the vocabulary the pieces of ``texts`` after the ``special`` tokens (other pieces are
    ``unk_token``, still one token each). English prompts get about as many tokens as a Llama-family BPE tokenizer
    gives them (a word or a punctuation mark each; rare words are split further there), so a benchmark with random
    weights sees prompts of realistic length, where a byte-level tokenizer makes them 4-5x longer. Whitespace is
    not a token; decoding joins tokens with spaces."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    pieces = pre_tokenizers.Whitespace()
    words = sorted({w for text in texts for w, _ in pieces.pre_tokenize_str(text)} - set(special))
    vocab = {tok: i for i, tok in enumerate(special + words)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=named.get("unk_token", special[0])))
    backend.pre_tokenizer = pieces
    backend.decoder = decoders.WordPiece()
    backend.add_special_tokens(special)
    return PreTrainedTokenizerFast(tokenizer_object=backend, model_max_length=model_max_length,
                                   clean_up_tokenization_spaces=False, **named)
