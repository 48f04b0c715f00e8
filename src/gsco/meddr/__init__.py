"""MedDr, the generalist, and what is its own: transformers' InternVL with MedDr's pixel-shuffle order, its
processor, presets, converter, export and memory plan (answering is :mod:`gsco.generalist`'s; evaluating and
fine-tuning any generalist are :mod:`gsco.recipes`').

Importing this package registers ``model_type: meddr`` with transformers' Auto classes (``AutoConfig``,
``AutoModelForImageTextToText``, ``AutoModel``, ``AutoImageProcessor``), so a converted MedDr directory loads with
``AutoModelForImageTextToText.from_pretrained`` / ``AutoProcessor.from_pretrained`` like any other model, and its
presets and its prefix sharing with the generalist layer's registry (:mod:`gsco.generalist.registry`).
"""

from gsco.meddr.model import MedDrConfig, MedDrForConditionalGeneration, MedDrModel
from gsco.meddr.model import register_auto_classes as _register_model
from gsco.meddr.processor import MedDrImageProcessor
from gsco.meddr.processor import register_auto_classes as _register_processor

_register_model()
_register_processor()


def _register_presets() -> None:
    from gsco.generalist.registry import declare_prefix_sharing, register_presets
    from gsco.meddr.presets import build_from_preset, known_presets, load_preset

    register_presets("meddr", build_from_preset, known_presets, load_preset)
    declare_prefix_sharing("meddr")  # answers equal the plain path: tests/generalist/test_generalist.py


_register_presets()

__all__ = ["MedDrConfig", "MedDrForConditionalGeneration", "MedDrModel", "MedDrImageProcessor"]
