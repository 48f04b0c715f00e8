"""The generalist layer, model-agnostic: load an image-text-to-text model (a converted MedDr, a preset, or any
transformers model whose processor has a chat template), answer batches of (image, question), and write answers
resumably (:func:`~gsco.generalist.resumable.answer_resumably`, shared by every evaluation). Model families such as
MedDr are reached only through :mod:`gsco.generalist.registry`.
"""

from gsco.generalist.model import Generalist, ModelLoadError, check_model_argument
from gsco.generalist.resumable import answer_resumably, chunks

__all__ = ["Generalist", "ModelLoadError", "check_model_argument", "answer_resumably", "chunks"]
