"""The generalist layer, model-agnostic: load an image-text-to-text model (a converted MedDr, a preset, or any
transformers model whose processor has a chat template) and answer batches of (image, question), locally or from a
server. Model families such as MedDr are reached only through :mod:`gsco.generalist.registry`; writing answers
resumably is :mod:`gsco.evaluation`'s.
"""

from gsco.generalist.model import Generalist, ModelLoadError, check_model_argument

__all__ = ["Generalist", "ModelLoadError", "check_model_argument"]
