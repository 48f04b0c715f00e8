"""The generalist families GSCo is tested with, and what each one's architecture allows.

A family is a transformers image-text-to-text architecture (its ``model_type`` in a model folder's config.json).
Every command loads any such folder through transformers' Auto classes; what a family adds here is what has been
tested of it (tests/generalist/test_families.py, over the tiny random model of each, :mod:`gsco.generalist.tiny`):

- batching: a batch of questions (mixed image sizes, left padding) gives the answers of the family's own
  one-question ``generate`` call;
- prefix sharing (:mod:`gsco.generalist.prefix`): a case's arms compute the image and their shared prompt prefix
  once, with the plain path's answers — or the reason it is off, said once when a run starts;
- quantization: the ``keep_unquantized`` default names the family's vision tower and projector;
- LoRA fine-tuning through ``train.sh`` and serving (``backend=openai`` through ``transformers serve``).

README's family table is this table (a test compares them).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Family:
    model_type: str  # config.json's model_type
    checkpoints: str  # the published checkpoints it stands for
    vision: tuple[str, ...]  # the vision tower's and projector's module names (kept unquantized)
    prefix_sharing: bool = True
    no_prefix_sharing: str = ""  # why not, said once per run where prefix sharing is off
    finetune: bool = False  # train.sh fine-tunes it (LoRA or full); the others are refused before loading
    served: bool = False  # tested behind transformers serve (backend=openai): tests/generalist/test_served.py


INTERNVL_PARTS = ("vision_tower", "multi_modal_projector")
IDEFICS3_PARTS = ("vision_model", "connector")

FAMILIES: dict[str, Family] = {
    "gemma3": Family("gemma3", "google/medgemma-4b-it, google/medgemma-27b-it (MedGemma); google/gemma-3-*-it",
                     INTERNVL_PARTS, served=True),
    "qwen2_5_vl": Family(
        "qwen2_5_vl", "Qwen/Qwen2.5-VL-7B-Instruct, Qwen/Qwen2.5-VL-72B-Instruct", ("visual",),
        prefix_sharing=False,
        no_prefix_sharing="Qwen2.5-VL's multimodal RoPE places the text after an image by the image's grid, "
                          "computed from the whole prompt in generate's first step; a cached prefix would lose it"),
    "internvl": Family("internvl", "OpenGVLab/InternVL3-8B-hf, OpenGVLab/InternVL3-78B-hf", INTERNVL_PARTS),
    "internvl_chat": Family("meddr", "MedDr (sunanhe/MedDr_0401, InternVL-Chat-V1.2) converted by gsco.meddr.convert",
                            INTERNVL_PARTS, finetune=True),
    "llava": Family("llava", "llava-hf/llava-1.5-7b-hf, llava-hf/llava-1.5-13b-hf", INTERNVL_PARTS, served=True),
    "llava_next": Family("llava_next", "llava-hf/llava-v1.6-mistral-7b-hf", INTERNVL_PARTS),
    "idefics3": Family("idefics3", "HuggingFaceM4/Idefics3-8B-Llama3", IDEFICS3_PARTS),
    "smolvlm": Family("smolvlm", "HuggingFaceTB/SmolVLM-Instruct, HuggingFaceTB/SmolVLM2-2.2B-Instruct",
                      IDEFICS3_PARTS),
}


def family_of(model_type: str | None) -> tuple[str, Family] | None:
    """(name, family) of a model type, or None for a model type no family covers."""
    for name, family in FAMILIES.items():
        if family.model_type == model_type:
            return name, family
    return None


def vision_modules() -> tuple[str, ...]:
    """Every family's vision tower and projector names (each absent from the other families' models)."""
    return tuple(dict.fromkeys(part for family in FAMILIES.values() for part in family.vision))
