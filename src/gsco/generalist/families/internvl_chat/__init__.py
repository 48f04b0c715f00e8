"""MedDr (sunanhe/MedDr_0401, InternVL-Chat-V1.2) converted by ``gsco.meddr.convert``: transformers' InternVL classes
with MedDr's pixel shuffle (``model_type: meddr``, registered by :mod:`gsco.meddr`).

Its tiny model is the ``tiny`` preset, whose prompt, image tokens and logits are tested against the original model
code's on ../shared/fixtures/meddr_original_tiny (tests/meddr/test_meddr_model.py): the original code is MedDr's card.
"""

from gsco.generalist.families import Family


def build():
    from gsco.generalist.registry import build_preset

    return build_preset("tiny")


FAMILY = Family(
    name="internvl_chat", model_type="meddr",
    checkpoints="MedDr (sunanhe/MedDr_0401, InternVL-Chat-V1.2) converted by gsco.meddr.convert",
    card="sunanhe/MedDr_0401", vision=("vision_tower", "multi_modal_projector"), build_tiny=build, finetune=True,
    card_system="Answer the questions.", registers="gsco.meddr")
