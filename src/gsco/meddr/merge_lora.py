"""Merge a MedDr LoRA adapter (peft format) into a standalone model directory.

    python -m gsco.meddr.merge_lora --adapter OUTPUT_DIR/adapter --dst OUTPUT_DIR/merged [--base MODEL_DIR]

The base model is the adapter's ``base_model_name_or_path`` unless ``--base`` is given. The result loads with
``demo.py --model DST`` and ``inference_meddr.sh`` like any converted MedDr.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

logger = logging.getLogger(__name__)


def merge_lora(adapter: str | Path, dst: str | Path, base: str | Path | None = None) -> Path:
    import gsco.meddr  # noqa: F401
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    adapter, dst = Path(adapter), Path(dst)
    config_file = adapter / "adapter_config.json"
    if not config_file.is_file():
        raise ValueError(f"{adapter} is not a peft adapter directory (no adapter_config.json)")
    base = Path(base) if base else Path(json.loads(config_file.read_text())["base_model_name_or_path"])
    if not (base / "config.json").is_file():
        raise ValueError(f"base model {base} does not exist; pass --base DIR")
    # the base's stored dtype (bf16 for the published model: ~80 GB of CPU memory for the 40B merge)
    model = AutoModelForImageTextToText.from_pretrained(str(base), dtype="auto")
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    merged.save_pretrained(dst)
    processor_dir = adapter if (adapter / "processor_config.json").is_file() else base
    AutoProcessor.from_pretrained(str(processor_dir)).save_pretrained(dst)
    logger.info("merged %s into %s -> %s", adapter, base, dst)
    return dst


def main(argv: list[str] | None = None) -> int:
    from gsco.runtime import setup_logging

    parser = argparse.ArgumentParser(description="Merge a MedDr LoRA adapter into a standalone model directory.")
    parser.add_argument("--adapter", required=True)
    parser.add_argument("--dst", required=True)
    parser.add_argument("--base", default=None, help="base model directory (default: from adapter_config.json)")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        dst = merge_lora(args.adapter, args.dst, args.base)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"merged model: {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
