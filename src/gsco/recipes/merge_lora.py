"""Merge a LoRA adapter (peft format) into a standalone model directory (MedDr or any image-text-to-text model).

    python -m gsco.recipes.merge_lora adapter=OUT_DIR/adapter out_dir=OUT_DIR/merged [base=MODEL_DIR]

(or the same keys from ``--config FILE``.) The base model is the adapter's ``base_model_name_or_path`` unless
``base`` is given. The result loads with ``demo.py model=OUT_DIR`` and ``inference_meddr.sh`` like any converted
MedDr.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path

from gsco.config import ConfigError

logger = logging.getLogger(__name__)


def merge_lora(adapter: str | Path, dst: str | Path, base: str | Path | None = None,
               overwrite: bool = False) -> Path:
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from gsco.generalist.registry import import_family_of

    adapter, dst = Path(adapter), Path(dst)
    config_file = adapter / "adapter_config.json"
    if not config_file.is_file():
        raise ConfigError(f"key 'adapter': {adapter} is not a peft adapter directory (no adapter_config.json)")
    if not base:
        from gsco.runtime import read_json

        stored = read_json(config_file, "peft adapter config")
        if not isinstance(stored, dict) or not stored.get("base_model_name_or_path"):
            raise ConfigError(f"{config_file} does not name its base model (base_model_name_or_path); give base=DIR")
        base = stored["base_model_name_or_path"]
    base = Path(base)
    if not (base / "config.json").is_file():
        raise ConfigError(f"key 'base': base model {base} does not exist; give base=DIR")
    import_family_of(base)  # e.g. meddr's Auto classes
    # the base's stored dtype (bf16 for the published model: ~80 GB of CPU memory for the 40B merge)
    from gsco.runtime import building_folder

    with building_folder(dst, overwrite, sources=(adapter, base)) as out:  # in place only when complete
        model = AutoModelForImageTextToText.from_pretrained(str(base), dtype="auto")
        merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
        merged.save_pretrained(out)
        processor_dir = adapter if (adapter / "processor_config.json").is_file() else base
        AutoProcessor.from_pretrained(str(processor_dir)).save_pretrained(out)
    logger.info("merged %s into %s -> %s", adapter, base, dst)
    return dst


@dataclasses.dataclass
class MergeLoraConfig:
    adapter: str  # the peft adapter directory (train.sh's OUT_DIR/adapter)
    out_dir: str  # the merged model directory to write
    base: str | None = None  # base model directory (null: the adapter's base_model_name_or_path)
    overwrite: bool = False  # replace a non-empty out_dir (once the merged model is complete)


def _merge_and_print(cfg: MergeLoraConfig) -> None:
    print(f"merged model: {merge_lora(cfg.adapter, cfg.out_dir, cfg.base, cfg.overwrite)}")


def main(argv: list[str] | None = None) -> int:
    from gsco.cli import command

    return command(MergeLoraConfig, _merge_and_print,
                   description="Merge a LoRA adapter into a standalone model directory.")(argv)


if __name__ == "__main__":
    sys.exit(main())
