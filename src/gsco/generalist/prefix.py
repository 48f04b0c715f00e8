"""Prefix sharing: a batch's questions about one image (a GSCo case's arms) compute the image and the prompt prefix
they share once, reuse its key/value cache, and decode together — greedy answers equal to the plain path's.

It reaches into transformers' cache (``batch_select_indices``, the layers' ``keys`` / ``values``) and the
processor's image tokens, so it is used only for model types whose family declares it
(:func:`gsco.generalist.registry.declare_prefix_sharing`; tested per family); any other model answers the plain way.
"""

from __future__ import annotations

import copy
import inspect

import torch


def suffix_groups(lengths: list[int]) -> list[list[int]]:
    """Item indices (sorted by suffix length) as one group, or two where splitting saves a quarter of the padded
    suffix tokens: each group's prefill pads its items' suffixes to its longest, and a second group costs a second
    forward pass (the decode loop stays one)."""
    order = sorted(range(len(lengths)), key=lambda r: lengths[r])
    whole = len(order) * lengths[order[-1]]
    best = min(((cut * lengths[order[cut - 1]] + (len(order) - cut) * lengths[order[-1]], cut)
                for cut in range(1, len(order))), default=(whole, 0))
    return [order[:best[1]], order[best[1]:]] if best[0] <= 0.75 * whole else [order]



def answer_sharing_prefix(generalist, keys: list, opened: dict, texts: list[str], max_new_tokens: int,
                           generate_kwargs: dict) -> list[str] | None:
    """Greedy answers that compute each distinct image, with the prompt prefix all items share, once: one
    forward over the prefix per distinct image, its key/value cache selected for every item, the items' own
    suffixes prefilled in one or two length groups (:func:`suffix_groups`, so short suffixes are not padded to
    the longest), then one batched ``generate`` over the merged cache (padding between prefix and suffix is
    masked out, so positions run on as in each item's own prompt). None when the shared prefix does not hold
    every image token."""
    tokenizer = generalist.processor.tokenizer
    order = list(opened)
    ids, pixel_values, token_types = encode_images_once(generalist.processor, texts, keys, opened)
    image_id = getattr(generalist.model.config, "image_token_id", None)
    shortest = min(len(i) for i in ids)
    heads = torch.stack([i[:shortest - 1] for i in ids])  # each item keeps at least one token of its own
    prefix = int((heads == heads[0]).all(0).long().cumprod(0).sum())  # the leading positions all items share
    if image_id is None or any((i[prefix:] == image_id).any() for i in ids) or \
            not (ids[0][:prefix] == image_id).any():
        return None  # an image is not (wholly) inside the shared prefix (e.g. images tiled into different counts)
    if _beyond_sliding_window(generalist.model.config, prefix + max(len(i) for i in ids) + max_new_tokens):
        return None  # a sliding-window layer would drop cached positions the padded merge relies on
    # transformers >= 5.2x calls it ``cache`` (``past_key_values`` before, still read with a warning)
    from transformers import GenerationMixin

    cache_key = ("cache" if "cache" in inspect.signature(GenerationMixin.prepare_inputs_for_generation).parameters
                 else "past_key_values")
    # each image's processor outputs (pixel values; LLaVA-NeXT's image sizes, Idefics3's pixel mask) in image order
    images = {name: torch.cat([pixel_values[k][name] for k in order]).to(generalist.device)
              for name in pixel_values[order[0]]}
    images["pixel_values"] = images["pixel_values"].to(generalist.model.dtype)
    # token types (Gemma 3: image tokens attend to each other both ways) for the prefix; the suffixes are text
    types = {} if token_types is None else \
        {"token_type_ids": token_types[:prefix].expand(len(order), prefix).to(generalist.device)}
    out = generalist.model(input_ids=ids[0][:prefix].expand(len(order), prefix).to(generalist.device),
                           use_cache=True, **images, **types)
    cache = out[cache_key] if cache_key in out else out["past_key_values"]
    lengths = [len(i) - prefix for i in ids]
    width = max(lengths)
    full = torch.full((len(ids), prefix + width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(full)
    for r, item in enumerate(ids):
        full[r, :prefix], full[r, prefix + width - lengths[r]:] = item[:prefix], item[prefix:]
        mask[r, :prefix], mask[r, prefix + width - lengths[r]:] = 1, 1
    full, mask = full.to(generalist.device), mask.to(generalist.device)
    rows = torch.tensor([order.index(k) for k in keys], device=generalist.device)
    groups = suffix_groups(lengths)
    if len(groups) > 1:  # each group's suffixes prefilled at its own width, the caches merged for one decode loop
        cache = _prefill_suffix_groups(generalist.model, cache, cache_key, rows, groups, full, mask, prefix,
                                            [max(lengths[r] for r in g) for g in groups])
    else:
        cache.batch_select_indices(rows)
    generated = generalist.model.generate(input_ids=full, attention_mask=mask, max_new_tokens=max_new_tokens,
                                    num_beams=1, do_sample=False, **{cache_key: cache}, **generate_kwargs)
    return [t.strip() for t in tokenizer.batch_decode(generated[:, full.shape[1]:], skip_special_tokens=True)]

def _beyond_sliding_window(config, length: int) -> bool:
    """Whether a layer of the language model attends over a sliding window shorter than ``length`` tokens (Gemma 3:
    1,024; the real prompts stay within it)."""
    text = getattr(config, "text_config", config)
    window = getattr(text, "sliding_window", None)
    sliding = "sliding_attention" in (getattr(text, "layer_types", None) or [])
    return bool(window) and sliding and length > window


def _prefill_suffix_groups(model, cache, cache_key: str, rows: torch.Tensor, groups: list[list[int]],
                           full: torch.Tensor, mask: torch.Tensor, prefix: int, widths: list[int]):
    """The prefix ``cache`` extended over every item's suffix but its last token: each group's suffixes in one
    forward padded only to that group's longest (positions counted over the unpadded tokens, as ``generate``
    counts them), then the groups' caches widened to the common width with masked zeros after the prefix and
    put back in item order."""
    end = full.shape[1] - 1  # the last prompt token is left for generate
    caches = []
    for group, width in zip(groups, widths):
        index = torch.tensor(group, device=full.device)
        group_cache = copy.deepcopy(cache)
        group_cache.batch_select_indices(rows[index])
        if width > 1:
            start = full.shape[1] - width
            group_mask = torch.cat([mask[index, :prefix], mask[index, start:end]], dim=1)
            positions = (group_mask.cumsum(-1) - 1).clamp(min=0)[:, prefix:]
            model(input_ids=full[index, start:end], attention_mask=group_mask, position_ids=positions,
                       use_cache=True, **{cache_key: group_cache})
        caches.append(group_cache)
    inverse = torch.argsort(torch.tensor([r for g in groups for r in g], device=full.device))
    merged = caches[0]
    for n, layer in enumerate(merged.layers):
        for name in ("keys", "values"):
            parts = []
            for c in caches:
                t = getattr(c.layers[n], name)
                gap = t.new_zeros(*t.shape[:2], end - t.shape[-2], t.shape[-1])
                parts.append(torch.cat([t[..., :prefix, :], gap, t[..., prefix:, :]], dim=-2))
            setattr(layer, name, torch.cat(parts)[inverse])
        if isinstance(getattr(layer, "cumulative_length", None), int):  # a sliding-window layer counts what it holds
            layer.cumulative_length = layer.keys.shape[-2]
    return merged

def encode_images_once(processor, texts: list[str], keys: list, opened: dict) \
        -> tuple[list[torch.Tensor], dict, torch.Tensor | None]:
    """Each item's input ids, each distinct image's processor outputs (pixel values and the like) and the first item's
    token types (where the
    processor gives them), every image processed once: the first prompt about an image goes through the processor;
    the others are only tokenized, their image placeholder replaced by the first one's expanded image span (start,
    context tokens, end). Where that does not reproduce the processor's ids for the first prompt, every item goes
    through the processor."""
    from gsco.generalist.inputs import adds_special_tokens

    tokenizer = processor.tokenizer
    special = adds_special_tokens(processor, texts[0])  # as the card's apply_chat_template decides (one BOS)
    first: dict = {}
    for r, key in enumerate(keys):
        first.setdefault(key, r)
    encoded = {key: processor(text=[texts[r]], images=[opened[key]], return_tensors="pt", add_special_tokens=special)
               for key, r in first.items()}
    per_token = ("input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids")
    pixel_values = {key: {name: value for name, value in e.items() if name not in per_token}
                    for key, e in encoded.items()}
    types = encoded[keys[0]].get("token_type_ids")
    types = None if types is None else types[0]
    marks = [getattr(processor, n, None) for n in ("image_token_id", "start_image_token_id", "end_image_token_id")]
    plain = tokenizer(texts, add_special_tokens=special)["input_ids"]
    spans = {}
    for key, r in first.items():
        full = encoded[key]["input_ids"][0]
        spliced = _splice_image_span(plain[r], full, *marks) if None not in marks else None
        if spliced is None or not torch.equal(spliced[0], full):
            return [processor(text=[t], images=[opened[k]], return_tensors="pt",
                              add_special_tokens=special)["input_ids"][0] for t, k in zip(texts, keys)], \
                pixel_values, types
        spans[key] = spliced[1]
    ids = [encoded[key]["input_ids"][0] if first[key] == r else _splice_image_span(plain[r], spans[key], *marks)[0]
           for r, key in enumerate(keys)]
    return ids, pixel_values, types


def _splice_image_span(plain: list[int], span_source: torch.Tensor, context_id: int, start_id: int,
                       end_id: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``plain`` (a prompt tokenized with its one image placeholder) with the placeholder replaced by the image span
    of ``span_source`` (start token through end token), and that span; None when either is not there once."""
    source = span_source.tolist()
    if plain.count(context_id) != 1 or source.count(start_id) != 1 or source.count(end_id) != 1:
        return None
    span = span_source[source.index(start_id):source.index(end_id) + 1]
    at = plain.index(context_id)
    before, after = (torch.tensor(part, dtype=span.dtype) for part in (plain[:at], plain[at + 1:]))
    return torch.cat([before, span, after]), span
