"""MedDr on transformers' own InternVL classes.

MedDr (InternVL-Chat-V1.2 layout) differs from transformers' ``InternVLForConditionalGeneration`` in one place
that matters numerically: its pixel shuffle is InternVL's "v1" variant, which lacks the final transpose, so the
256 image tokens reach the LLM in transposed (column-major) order. ``MedDrModel`` reproduces that order when
``config.ps_version == "v1"``; everything else is the stock class.

The config has its own ``model_type`` ("meddr") so that a converted directory can never be loaded silently into
the stock class with the wrong token order: importing :mod:`gsco.meddr` registers it with the Auto classes.
"""

from __future__ import annotations

import torch
from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, InternVLConfig
from transformers.models.internvl.modeling_internvl import (
    InternVLForConditionalGeneration,
    InternVLModel,
    InternVLPreTrainedModel,
)

PS_VERSIONS = ("v1", "v2")


@strict
class MedDrConfig(InternVLConfig):
    r"""``InternVLConfig`` plus the pixel-shuffle variant.

    ps_version (`str`, defaults to `"v1"`):
        `"v1"`: InternVL-Chat-V1.2 / MedDr token order (no final transpose); `"v2"`: transformers' InternVL order.
    """

    model_type = "meddr"
    ps_version: str = "v1"


class MedDrModel(InternVLModel):
    config_class = MedDrConfig

    def __init__(self, config: MedDrConfig):
        if config.ps_version not in PS_VERSIONS:
            raise ValueError(f"ps_version {config.ps_version!r} is not one of {PS_VERSIONS}")
        super().__init__(config)

    def pixel_shuffle(self, vision_features: torch.Tensor, scale_factor: float = 0.5) -> torch.Tensor:
        if self.config.ps_version == "v2":
            return super().pixel_shuffle(vision_features, scale_factor)
        b, w, h, c = vision_features.shape
        if int(h * scale_factor) * int(1 / scale_factor) != h or int(w * scale_factor) * int(1 / scale_factor) != w:
            raise ValueError(f"the {w}x{h} patch grid is not divisible by 1/{scale_factor}")
        x = vision_features.reshape(b, w, int(h * scale_factor), int(c / scale_factor)).permute(0, 2, 1, 3)
        return x.reshape(b, int(h * scale_factor), int(w * scale_factor), int(c / scale_factor**2))


class MedDrForConditionalGeneration(InternVLForConditionalGeneration):
    config_class = MedDrConfig

    def __init__(self, config: MedDrConfig):
        # The stock __init__ would build an InternVLModel first; build ours directly (the 40B model is large).
        InternVLPreTrainedModel.__init__(self, config)
        self.model = MedDrModel(config)
        self.lm_head = torch.nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()


def register_auto_classes() -> None:
    """Let ``AutoConfig`` / ``AutoModelForImageTextToText`` / ``AutoModel`` resolve ``model_type: meddr``."""
    AutoConfig.register("meddr", MedDrConfig, exist_ok=True)
    AutoModelForImageTextToText.register(MedDrConfig, MedDrForConditionalGeneration, exist_ok=True)
    AutoModel.register(MedDrConfig, MedDrModel, exist_ok=True)
