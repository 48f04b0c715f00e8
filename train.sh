#!/usr/bin/env bash
# MedDr training (LoRA / full fine-tuning with DeepSpeed) — not available yet.
# To train a classification specialist now:
#   python -m gsco.specialists.train [--config configs/config.yaml] [key=value ...]
echo "train.sh: MedDr training is not available yet in this release." >&2
echo "To train a classification specialist: python -m gsco.specialists.train --config configs/config.yaml" >&2
exit 2
