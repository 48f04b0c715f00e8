"""Tiny random generalists, one per model family (:mod:`gsco.generalist.families`), built offline from the family
folder's checkpoint files and transformers' own classes: nothing is downloaded; the weights are random (answers are
noise), the code paths and what the model sees are the real family's — its processor's image sizes and tokens, its
tokenizer's BOS and special tokens, its chat template, its stop ids.

    python -m gsco.generalist.tiny family=gemma3 out_dir=outputs/tiny-gemma3

writes a model folder that every command loads as it loads the real checkpoint (``MODEL=outputs/tiny-gemma3 bash
inference_gsco.sh``).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from gsco.generalist.families import FAMILIES, build_tiny


def build(family: str, seed: int = 0):
    """(model, processor) of the tiny ``family`` with random weights drawn from ``seed``."""
    return build_tiny(family, seed)


def save(family: str, out_dir: str | Path, seed: int = 0, overwrite: bool = False) -> Path:
    """Build the tiny ``family`` and save it as a transformers model folder (it appears only when complete)."""
    from transformers import GenerationConfig

    from gsco.runtime import building_folder

    model, processor = build(family, seed)
    tokenizer = processor.tokenizer
    if not model.generation_config.eos_token_id:  # a builder without the checkpoint's generation config
        model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id,
                                                   pad_token_id=tokenizer.pad_token_id,
                                                   bos_token_id=tokenizer.bos_token_id)
    with building_folder(Path(out_dir), overwrite) as out:
        model.save_pretrained(out)
        processor.save_pretrained(out)
    return Path(out_dir)


@dataclasses.dataclass
class TinyConfig:
    family: str  # a family of gsco.generalist.families: gemma3, qwen2_5_vl, internvl, internvl_chat, llava, ...
    out_dir: str  # the model folder to write
    seed: int = 0  # the random weights' seed
    overwrite: bool = False  # replace a non-empty out_dir

    def validate(self) -> None:
        if self.family not in FAMILIES:
            from gsco.config import ConfigError

            raise ConfigError(f"key 'family': {self.family!r} is not a family; choose from {sorted(FAMILIES)}")


def _save_and_print(cfg: TinyConfig) -> None:
    out = save(cfg.family, cfg.out_dir, cfg.seed, cfg.overwrite)
    print(f"tiny {cfg.family} (random weights, stands for {FAMILIES[cfg.family].checkpoints}): {out}")


def main(argv: list[str] | None = None) -> int:
    from gsco.cli import command

    return command(TinyConfig, _save_and_print, description=__doc__.split("\n\n")[0])(argv)


if __name__ == "__main__":
    sys.exit(main())
