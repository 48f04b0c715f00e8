"""MedDr, the generalist: transformers' InternVL with MedDr's pixel-shuffle order, its processor, converter,
generation and evaluation.

Importing this package registers ``model_type: meddr`` with transformers' Auto classes (``AutoConfig``,
``AutoModelForImageTextToText``, ``AutoModel``, ``AutoImageProcessor``), so a converted MedDr directory loads with
``AutoModelForImageTextToText.from_pretrained`` / ``AutoProcessor.from_pretrained`` like any other model.
"""

from gsco.meddr.model import MedDrConfig, MedDrForConditionalGeneration, MedDrModel
from gsco.meddr.model import register_auto_classes as _register_model
from gsco.meddr.processor import MedDrImageProcessor
from gsco.meddr.processor import register_auto_classes as _register_processor

_register_model()
_register_processor()

__all__ = ["MedDrConfig", "MedDrForConditionalGeneration", "MedDrModel", "MedDrImageProcessor"]
