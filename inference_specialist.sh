#!/usr/bin/env bash
# Evaluate a trained specialist on the test split and build its retrieval index (inputs of GSCo's MoED and RAD).
#   bash inference_specialist.sh [key=value ...]
# Environment (each optional; unset means "as in the config"):
#   CONFIG (default configs/config.yaml), DATASET, ARCH, IMG_SIZE, TRAINING_PROCEDURE, SEED, PYTHON
# Extra key=value arguments are passed to `python -m gsco.specialists.predict` (same keys as the YAML).
set -euo pipefail
cd "$(dirname "$0")"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi
args=(--config "${CONFIG:-configs/config.yaml}")
[[ -n "${DATASET:-}" ]] && args+=("dataset=${DATASET}")
[[ -n "${ARCH:-}" ]] && args+=("architecture=${ARCH}")
[[ -n "${IMG_SIZE:-}" ]] && args+=("img_size=${IMG_SIZE}")
[[ -n "${TRAINING_PROCEDURE:-}" ]] && args+=("training_procedure=${TRAINING_PROCEDURE}")
[[ -n "${SEED:-}" ]] && args+=("seed=${SEED}")
export CUBLAS_WORKSPACE_CONFIG="${CUBLAS_WORKSPACE_CONFIG:-:4096:8}"
exec "$PYTHON" -m gsco.specialists.predict "${args[@]}" "$@"
