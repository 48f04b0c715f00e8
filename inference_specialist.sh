#!/usr/bin/env bash
# Evaluate a trained specialist on the test split.
#   bash inference_specialist.sh [key=value ...]              classification: results JSON, plots, retrieval index
#   TASK=report bash inference_specialist.sh [key=value ...]  report generation: test_reports.jsonl + test_metrics.json
# Environment (each optional; unset means "as in the config"):
#   TASK (classification | report; default classification), CONFIG, PYTHON
#   classification (default CONFIG configs/config.yaml): DATASET, ARCH, IMG_SIZE, TRAINING_PROCEDURE, SEED
#   report (default CONFIG configs/report/iu_xray_shallow.yaml): CHECKPOINT, ANNOTATION, IMAGE_ROOT, OUT_DIR,
#     GPUS (>1: torchrun data parallel, one process per GPU, each writing part of the reports; merged at the end)
# Extra key=value arguments are passed through (same keys as the YAML).
set -euo pipefail
cd "$(dirname "$0")"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi
export CUBLAS_WORKSPACE_CONFIG="${CUBLAS_WORKSPACE_CONFIG:-:4096:8}"
case "${TASK:-classification}" in
  report)
    args=(--config "${CONFIG:-configs/report/iu_xray_shallow.yaml}")
    [[ -n "${CHECKPOINT:-}" ]] && args+=("checkpoint=${CHECKPOINT}")
    [[ -n "${ANNOTATION:-}" ]] && args+=("annotation=${ANNOTATION}")
    [[ -n "${IMAGE_ROOT:-}" ]] && args+=("image_root=${IMAGE_ROOT}")
    [[ -n "${OUT_DIR:-}" ]] && args+=("out_dir=${OUT_DIR}")
    if [[ "${GPUS:-1}" -gt 1 ]]; then
      exec "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$GPUS" \
        -m gsco.specialists.report.evaluate "${args[@]}" "$@"
    fi
    exec "$PYTHON" -m gsco.specialists.report.evaluate "${args[@]}" "$@" ;;
  classification)
    args=(--config "${CONFIG:-configs/config.yaml}")
    [[ -n "${DATASET:-}" ]] && args+=("dataset=${DATASET}")
    [[ -n "${ARCH:-}" ]] && args+=("architecture=${ARCH}")
    [[ -n "${IMG_SIZE:-}" ]] && args+=("img_size=${IMG_SIZE}")
    [[ -n "${TRAINING_PROCEDURE:-}" ]] && args+=("training_procedure=${TRAINING_PROCEDURE}")
    [[ -n "${SEED:-}" ]] && args+=("seed=${SEED}")
    exec "$PYTHON" -m gsco.specialists.predict "${args[@]}" "$@" ;;
  *)
    echo "error: TASK=${TASK} is not one of classification, report" >&2; exit 2 ;;
esac
