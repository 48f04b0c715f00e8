#!/usr/bin/env bash
# GSCo: the generalist answers each case of a case file with specialists' hints (MoED), similar cases' labels (RAD),
# both, or neither; the specialists alone are scored too; one ablation table (Markdown + JSON) at the end.
#   bash inference_gsco.sh [key=value ...]
# Environment (each optional; unset means "as in the config"):
#   DATASET     selects configs/gsco/<dataset>.yaml (default breastmnist)
#   MODEL       converted MedDr directory, any image-text-to-text model directory, or a preset (tiny)
#   CASES       case file: JSON list of {image, label, rad, moed[, id, moed_prob]} (python -m gsco.collab.build_cases)
#   IMAGE_ROOT  case images are relative to this (default: the case file's folder)
#   OUT_DIR     {arm}_predictions.jsonl, ablation.md, ablation.json
#   BATCH_SIZE  questions per generate() call
#   GPUS        >1: one process per GPU (torchrun data parallel); for one model sharded over GPUs use device_map=auto
#   ARMS        comma-separated arms (default all), e.g. generalist,moed_rad
#   BACKEND     local (default: the model runs here) or openai: a served model behind an OpenAI-compatible API
#   BASE_URL    BACKEND=openai: the server's API root, e.g. http://localhost:8000/v1
#   MODEL_NAME  BACKEND=openai: the served model's name (default: the server's only model)
#   API_KEY     BACKEND=openai: read by the client from the environment; never logged or written
#   CONFIG, PYTHON
# Extra key=value arguments are passed to `python -m gsco.recipes.gsco`. Re-running resumes each arm.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$HERE/.venv/bin/python" ]]; then PYTHON="$HERE/.venv/bin/python"; else PYTHON=python; fi
fi
args=(--config "${CONFIG:-$HERE/configs/gsco/${DATASET:-breastmnist}.yaml}")
[[ -n "${MODEL:-}" ]] && args+=("model=${MODEL}")
[[ -n "${CASES:-}" ]] && args+=("cases=${CASES}")
[[ -n "${IMAGE_ROOT:-}" ]] && args+=("image_root=${IMAGE_ROOT}")
[[ -n "${OUT_DIR:-}" ]] && args+=("out_dir=${OUT_DIR}")
[[ -n "${BATCH_SIZE:-}" ]] && args+=("eval_batch_size=${BATCH_SIZE}")
[[ -n "${BACKEND:-}" ]] && args+=("backend=${BACKEND}")
[[ -n "${BASE_URL:-}" ]] && args+=("base_url=${BASE_URL}")
[[ -n "${MODEL_NAME:-}" ]] && args+=("model_name=${MODEL_NAME}")
[[ -n "${ARMS:-}" ]] && args+=("arms=[${ARMS}]")
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" TOKENIZERS_PARALLELISM="${TOKENIZERS_PARALLELISM:-false}"
if [[ "${GPUS:-1}" -gt 1 ]]; then
  exec "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$GPUS" -m gsco.recipes.gsco "${args[@]}" "$@"
fi
exec "$PYTHON" -m gsco.recipes.gsco "${args[@]}" "$@"
