#!/usr/bin/env bash
# Batch evaluation of MedDr (or any image-text-to-text model directory) on a metafile: predictions + metrics.
#   bash inference_meddr.sh [key=value ...]
# Environment (each optional; unset means "as in the config"):
#   MODEL       converted MedDr directory (python -m gsco.meddr.convert), other model directory, or preset (tiny)
#   METAFILE    JSONL rows {id, split, image, text, question_id, answer[, question]}
#   IMAGE_ROOT  folder the rows' images are relative to (default: the metafile's folder)
#   TASK        report | vqa | diagnosis
#   OUT_DIR     where {metafile stem}_predictions.jsonl and _metrics.json go
#   BATCH_SIZE  questions per generate() call
#   GPUS        >1: one process per GPU (torchrun data parallel); for one model sharded over GPUs use device_map=auto
#   BACKEND     local (default: the model runs here) or openai: a served model behind an OpenAI-compatible API
#   BASE_URL    BACKEND=openai: the server's API root, e.g. http://localhost:8000/v1
#   MODEL_NAME  BACKEND=openai: the served model's name (default: the server's only model)
#   API_KEY     BACKEND=openai: read by the client from the environment; never logged or written
#   CONFIG (default configs/meddr/eval.yaml), PYTHON
# Extra key=value arguments are passed to `python -m gsco.recipes.evaluate` (same keys as the YAML).
# Re-running the same command resumes: questions already in the predictions file are skipped.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$HERE/.venv/bin/python" ]]; then PYTHON="$HERE/.venv/bin/python"; else PYTHON=python; fi
fi
args=(--config "${CONFIG:-$HERE/configs/meddr/eval.yaml}")
[[ -n "${MODEL:-}" ]] && args+=("model=${MODEL}")
[[ -n "${METAFILE:-}" ]] && args+=("metafile=${METAFILE}")
[[ -n "${IMAGE_ROOT:-}" ]] && args+=("image_root=${IMAGE_ROOT}")
[[ -n "${TASK:-}" ]] && args+=("task=${TASK}")
[[ -n "${OUT_DIR:-}" ]] && args+=("out_dir=${OUT_DIR}")
[[ -n "${BATCH_SIZE:-}" ]] && args+=("eval_batch_size=${BATCH_SIZE}")
[[ -n "${BACKEND:-}" ]] && args+=("backend=${BACKEND}")
[[ -n "${BASE_URL:-}" ]] && args+=("base_url=${BASE_URL}")
[[ -n "${MODEL_NAME:-}" ]] && args+=("model_name=${MODEL_NAME}")
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" TOKENIZERS_PARALLELISM="${TOKENIZERS_PARALLELISM:-false}"
if [[ "${GPUS:-1}" -gt 1 ]]; then
  exec "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$GPUS" -m gsco.recipes.evaluate "${args[@]}" "$@"
fi
exec "$PYTHON" -m gsco.recipes.evaluate "${args[@]}" "$@"
