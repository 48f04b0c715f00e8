"""MedDr presets: small YAML files that describe the architecture, shipped inside the package
(``gsco/meddr/model_configs/*.yaml``, as open_clip ships its ``model_configs``), so an installed ``gsco`` builds
them from any working directory; a path to a YAML file of the same form works too.

``tiny`` builds a random toy MedDr with a locally built tokenizer (tests, ``demo.py`` without ``model=``);
``meddr-40b`` records the published checkpoint's dimensions (the converter reads them from the checkpoint itself).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Literal

import torch

from gsco.config import ConfigError, load_config

logger = logging.getLogger(__name__)

PRESET_DIR = Path(__file__).resolve().parent / "model_configs"


@dataclasses.dataclass
class MedDrPreset:
    vision: dict = dataclasses.field(default_factory=dict)  # transformers InternVLVisionConfig fields
    text: dict = dataclasses.field(default_factory=dict)  # transformers LlamaConfig fields
    downsample_ratio: float = 0.5
    vision_feature_layer: int = -1
    ps_version: Literal["v1", "v2"] = "v1"
    pad2square: bool = False
    tokenizer: str | None = "byte"
    image_token_id: int | None = None  # without a tokenizer of its own: the image context token's id (meddr-40b)

    def validate(self) -> None:
        from transformers import InternVLVisionConfig, LlamaConfig

        missing = [section for section in ("vision", "text") if not getattr(self, section)]
        if missing:  # an empty file would otherwise build transformers' default (7B-parameter) model
            raise ConfigError(f"not a MedDr preset: no {' or '.join(repr(m) for m in missing)} section (a preset "
                              f"names its architecture; see the shipped ones in {PRESET_DIR})")

        for section, cls in (("vision", InternVLVisionConfig), ("text", LlamaConfig)):
            valid = {f.name for f in dataclasses.fields(cls)} | {"rope_theta"}
            unknown = sorted(set(getattr(self, section)) - valid)
            if unknown:
                raise ConfigError(f"section {section!r}: unknown {cls.__name__} fields {unknown}")
        size, patch = self.vision.get("image_size", 448), self.vision.get("patch_size", 14)
        if size % patch or (size // patch) % round(1 / self.downsample_ratio):
            raise ConfigError(f"vision image_size {size} / patch_size {patch} must give a patch grid divisible by "
                              f"1/downsample_ratio = {1 / self.downsample_ratio:g}")

    @property
    def image_seq_length(self) -> int:
        grid = self.vision.get("image_size", 448) // self.vision.get("patch_size", 14)
        return int(grid * self.downsample_ratio) ** 2


def known_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def preset_path(name: str) -> Path:
    """A path to a preset YAML file, or the name of a shipped preset (``tiny``, ``meddr-40b``)."""
    for candidate in (Path(name), PRESET_DIR / f"{name}.yaml"):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"MedDr preset {name!r} not found; shipped presets: {known_presets()} "
                      f"({PRESET_DIR}), or give a path to a preset YAML")


def load_preset(name: str) -> MedDrPreset:
    return load_config(MedDrPreset, preset_path(name))


def build_config(preset: MedDrPreset, image_token_id: int, **text_overrides):
    """The transformers config of a preset; the LLM head is untied and RoPE theta kept, as in Yi-34B."""
    from transformers import LlamaConfig

    from gsco.meddr.model import MedDrConfig

    text = LlamaConfig(**{"tie_word_embeddings": False, **preset.text, **text_overrides})
    return MedDrConfig(
        vision_config={"use_mean_pooling": True, **preset.vision},  # no final LayerNorm, as InternViT
        text_config=text.to_dict(),
        image_token_id=image_token_id,
        image_seq_length=preset.image_seq_length,
        downsample_ratio=preset.downsample_ratio,
        vision_feature_layer=preset.vision_feature_layer,
        vision_feature_select_strategy="default",  # drop the CLS token
        projector_hidden_act="gelu",
        tie_word_embeddings=False,
        ps_version=preset.ps_version,
    )


def build_preset_tokenizer(preset: MedDrPreset):
    from gsco.meddr.processor import build_byte_tokenizer, load_tokenizer

    if preset.tokenizer == "byte":
        return build_byte_tokenizer(preset.text.get("max_position_embeddings", 4096))
    if preset.tokenizer is None:
        raise ConfigError("this preset has no tokenizer of its own: convert the original checkpoint instead")
    return load_tokenizer(preset.tokenizer)


def preset_model_config(name: str, preset: MedDrPreset | None = None, tokenizer=None):
    """The transformers config ``build_from_preset`` builds a preset's model from (special token ids from the
    preset's tokenizer; a preset without one, such as meddr-40b, keeps its YAML's ids and ``image_token_id``)."""
    preset = preset or load_preset(name)
    if tokenizer is None and preset.tokenizer is not None:
        tokenizer = build_preset_tokenizer(preset)
    if tokenizer is None:
        return build_config(preset, image_token_id=preset.image_token_id or 0)
    config = build_config(preset, tokenizer.convert_tokens_to_ids(tokenizer.context_image_token),
                          bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id)
    if len(tokenizer) > config.text_config.vocab_size:
        raise ConfigError(f"preset {name}: tokenizer has {len(tokenizer)} tokens, text vocab_size is "
                          f"{config.text_config.vocab_size}")
    return config


def build_from_preset(name: str, seed: int = 0, dtype: torch.dtype = torch.float32):
    """A randomly initialised MedDr of the preset's size and its processor (for tests, demos, training from
    scratch); ``seed`` makes the weights reproducible."""
    from gsco.meddr.model import MedDrForConditionalGeneration
    from gsco.meddr.processor import build_processor

    preset = load_preset(name)
    tokenizer = build_preset_tokenizer(preset)
    config = preset_model_config(name, preset, tokenizer)
    torch.manual_seed(seed)
    model = MedDrForConditionalGeneration(config).to(dtype).eval()
    set_generation_defaults(model.generation_config, tokenizer)
    processor = build_processor(tokenizer, preset.vision.get("image_size", 448), preset.image_seq_length,
                                preset.pad2square)
    return model, processor


def set_generation_defaults(gen, tokenizer) -> None:
    """Greedy decoding that stops at ``<|im_end|>``, as the original ``chat()`` does (a GenerationConfig)."""
    gen.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    gen.pad_token_id = tokenizer.pad_token_id
    gen.bos_token_id = tokenizer.bos_token_id
    gen.do_sample = False
    gen.num_beams = 1
    gen.max_new_tokens = 512


@dataclasses.dataclass
class SavePresetConfig:
    out_dir: str  # the model directory to write
    preset: str = "tiny"  # a shipped preset (tiny, meddr-40b) or a preset YAML's path
    seed: int = 0  # of the random initialisation
    overwrite: bool = False  # replace a non-empty out_dir (once the new model is complete)


def _save_and_print(cfg: SavePresetConfig) -> None:
    from gsco.generalist.registry import save_preset

    print(f"model: {save_preset(cfg.preset, cfg.out_dir, cfg.seed, cfg.overwrite)}")


def main(argv: list[str] | None = None) -> int:
    from gsco.cli import command

    return command(SavePresetConfig, _save_and_print,
                   description="Save a MedDr preset (random weights) as a model directory. Presets: "
                   + ", ".join(known_presets()) + ".")(argv)


if __name__ == "__main__":
    raise SystemExit(main())
