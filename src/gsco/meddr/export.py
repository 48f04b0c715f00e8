"""A converted (or fine-tuned and merged) MedDr written back in the original InternVL-Chat-V1.2 layout, for the
serving engines that implement InternVL-Chat (vLLM, LMDeploy, SGLang):

    python -m gsco.meddr.export model=outputs/meddr-hf out_dir=outputs/meddr-internvl [max_shard_gb=5]

Writes ``config.json`` (``InternVLChatConfig``: template Hermes-2, ps_version v1, select_layer, downsample_ratio,
force_image_size, the InternViT and Llama configs), the weights under the original names in safetensors shards
with an index, the tokenizer at the top level (where engines look for it; ``tokenizer/`` as the published
checkpoint also has it) with MedDr's Hermes-2 chat template, and ``generation_config.json`` (stop at
``<|im_end|>``). ``python -m gsco.meddr.convert`` reads the result back to the same weights (tested).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Literal

from gsco.errors import GscoError
from gsco.meddr.processor import HERMES2_CHAT_TEMPLATE, IMG_CONTEXT

logger = logging.getLogger(__name__)

# What an engine's InternVL-Chat prompt builder expects: each image as "<image>" (the engine expands it to
# <img> + N x <IMG_CONTEXT> + </img>), otherwise MedDr's Hermes-2 conversation exactly.
ENGINE_CHAT_TEMPLATE = HERMES2_CHAT_TEMPLATE.replace(IMG_CONTEXT + "\\n", "<image>\\n")


# The config class of OpenGVLab's InternVL-Chat repositories (their configuration_internvl_chat.py), which engines
# load with trust_remote_code; the export names it as those repositories do.
ENGINE_CONFIG_CLASS = "configuration_internvl_chat.InternVLChatConfig"


class ExportError(GscoError, ValueError):
    """A model directory that cannot be exported, or a destination that would be overwritten."""


def export(model: str | Path, out_dir: str | Path, dtype: str = "auto", max_shard_gb: float = 5.0,
           overwrite: bool = False) -> Path:
    """Write the converted MedDr directory ``model`` to ``out_dir`` in the original layout; returns ``out_dir``."""
    import torch
    from transformers import AutoProcessor, GenerationConfig

    import gsco.meddr  # noqa: F401  (registers model_type meddr)
    from gsco.meddr.convert import DTYPES, save_original
    from gsco.meddr.model import MedDrForConditionalGeneration
    from gsco.runtime import OutputFolderError, building_folder, read_json

    src, dst = Path(model), Path(out_dir)
    if not (src / "config.json").is_file():
        raise ExportError(f"{src}: no config.json; give model=DIR, a converted MedDr (python -m gsco.meddr.convert)")
    if dtype != "auto" and dtype not in DTYPES:
        raise ExportError(f"key 'dtype': {dtype!r}, expected auto or one of {sorted(DTYPES)}")
    from gsco.generalist.model import check_weight_files

    check_weight_files(src)  # a truncated or pickled weight file: one error naming it, before loading
    loaded = MedDrForConditionalGeneration.from_pretrained(src, dtype=DTYPES.get(dtype, "auto")).eval()
    processor = AutoProcessor.from_pretrained(src)
    tokenizer = processor.tokenizer
    try:
        with building_folder(dst, overwrite, sources=(src,)) as out:
            tokenizer.chat_template = ENGINE_CHAT_TEMPLATE
            with torch.no_grad():
                save_original(loaded, tokenizer, out, max_shard_bytes=int(max_shard_gb * 1e9))
            tokenizer.save_pretrained(out)  # also at the top level, where engines read it
            config = read_json(out / "config.json", "model config")
            config["auto_map"] = {"AutoConfig": ENGINE_CONFIG_CLASS}  # where trust_remote_code finds the config class
            (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
            generation = GenerationConfig.from_pretrained(src) if (src / "generation_config.json").is_file() \
                else GenerationConfig(eos_token_id=tokenizer.eos_token_id)
            generation.save_pretrained(out)
    except OutputFolderError as exc:
        raise ExportError(str(exc)) from None
    logger.info("exported %s to %s (original InternVL-Chat layout)", src, dst)
    return dst


@dataclasses.dataclass
class ExportConfig:
    model: str  # a converted MedDr directory (python -m gsco.meddr.convert, or a merged fine-tune)
    out_dir: str  # the directory to write, in the original InternVL-Chat-V1.2 layout
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: as stored
    max_shard_gb: float = 5.0  # the largest safetensors shard
    overwrite: bool = False  # replace a non-empty out_dir

    def validate(self) -> None:
        from gsco.config import ConfigError

        if not self.max_shard_gb > 0:
            raise ConfigError(f"key 'max_shard_gb': must be positive, got {self.max_shard_gb}")


def _export_and_print(cfg: ExportConfig) -> None:
    dst = export(cfg.model, cfg.out_dir, cfg.dtype, cfg.max_shard_gb, cfg.overwrite)
    print(f"exported model: {dst}")


def main(argv: list[str] | None = None) -> int:
    from gsco.cli import command

    return command(ExportConfig, _export_and_print,
                   description=__doc__.split("\n\n")[0])(argv)


if __name__ == "__main__":
    sys.exit(main())
