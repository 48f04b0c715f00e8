#!/usr/bin/env bash
# Fine-tune MedDr (LoRA or full) — one CPU process, one GPU, or many GPUs on many nodes under DeepSpeed.
#   bash train.sh [key=value ...]
# Environment (each optional; unset means "as in the config"):
#   CONFIG         recipe YAML (default configs/meddr/finetune_tiny.yaml; the MedDr recipe: configs/meddr/finetune_meddr_lora.yaml)
#   MODEL          preset (tiny) or model directory (a converted MedDr)
#   DATA           sample file (JSON list / JSONL of {id, image, conversations}) or InternVL meta file
#   IMAGE_ROOT     images of a sample file are relative to this
#   OUT_DIR        checkpoints, final/ (standalone model), adapter/ (LoRA); OUTPUT_DIR, its earlier name, still works
#   MODE           lora | full | qlora (LoRA on a 4-bit NF4 LLM; CUDA + bitsandbytes)
#   DEEPSPEED      DeepSpeed config (configs/deepspeed/zero2.json, zero3.json, zero3_offload.json); empty: none
#   GPUS           GPUs per node (default: all visible; 0 on a machine without GPUs -> single CPU process)
#   NNODES NODE_RANK MASTER_ADDR MASTER_PORT    multi-node rendezvous (torchrun)
#   BATCH_SIZE     global batch over all GPUs of all nodes; with PER_DEVICE_BATCH_SIZE it sets
#   PER_DEVICE_BATCH_SIZE   gradient accumulation = BATCH_SIZE / (PER_DEVICE_BATCH_SIZE x GPUS x NNODES)
#   PYTHON
# Extra key=value arguments are passed to `python -m gsco.recipes.finetune` (same keys as the YAML).
# Re-running the same command resumes from the last checkpoint in OUT_DIR.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$HERE/.venv/bin/python" ]]; then PYTHON="$HERE/.venv/bin/python"; else PYTHON=python; fi
fi
if [[ -z "${GPUS:-}" ]]; then
  # torch counts the visible GPUs (CUDA_VISIBLE_DEVICES included); without an NVIDIA or ROCm device node there is
  # none to count, and asking torch would cost two seconds of importing it
  if compgen -G "/dev/nvidia[0-9]*" >/dev/null || [[ -e /dev/kfd ]] || command -v nvidia-smi >/dev/null; then
    GPUS=$("$PYTHON" -c "import torch; print(torch.cuda.device_count())")
  else
    GPUS=0
  fi
fi
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}
args=(--config "${CONFIG:-$HERE/configs/meddr/finetune_tiny.yaml}")
[[ -n "${MODEL:-}" ]] && args+=("model=${MODEL}")
[[ -n "${DATA:-}" ]] && args+=("data=${DATA}")
[[ -n "${IMAGE_ROOT:-}" ]] && args+=("image_root=${IMAGE_ROOT}")
OUT_DIR="${OUT_DIR:-${OUTPUT_DIR:-}}"
[[ -n "${OUT_DIR}" ]] && args+=("out_dir=${OUT_DIR}")
[[ -n "${MODE:-}" ]] && args+=("mode=${MODE}")
if [[ -n "${DEEPSPEED+x}" ]]; then
  if [[ -n "$DEEPSPEED" ]]; then args+=("deepspeed=${DEEPSPEED}"); else args+=("deepspeed=null"); fi
fi
WORLD=$(( (GPUS > 0 ? GPUS : 1) * NNODES ))
if [[ -n "${PER_DEVICE_BATCH_SIZE:-}" ]]; then
  args+=("per_device_train_batch_size=${PER_DEVICE_BATCH_SIZE}")
fi
if [[ -n "${BATCH_SIZE:-}" ]]; then
  PER=${PER_DEVICE_BATCH_SIZE:-$("$PYTHON" -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['per_device_train_batch_size'])" "${CONFIG:-$HERE/configs/meddr/finetune_tiny.yaml}")}
  if (( BATCH_SIZE % (PER * WORLD) != 0 )); then
    echo "train.sh: BATCH_SIZE=$BATCH_SIZE is not a multiple of PER_DEVICE_BATCH_SIZE=$PER x $WORLD processes" >&2
    exit 2
  fi
  args+=("gradient_accumulation_steps=$(( BATCH_SIZE / (PER * WORLD) ))")
fi
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" TOKENIZERS_PARALLELISM="${TOKENIZERS_PARALLELISM:-false}"
echo "train.sh: ${GPUS} GPU(s) x ${NNODES} node(s); ${args[*]} $*" >&2
if (( GPUS <= 0 )); then
  if [[ -z "${DEEPSPEED:-}" ]]; then
    exec "$PYTHON" -m gsco.recipes.finetune "${args[@]}" "$@"
  fi
  # DeepSpeed on a machine without GPUs (its CPU accelerator, gloo): one process, launched as torchrun would.
  export DS_ACCELERATOR="${DS_ACCELERATOR:-cpu}"
  GPUS=1
fi
exec "$PYTHON" -m torch.distributed.run --nnodes "$NNODES" --node_rank "$NODE_RANK" --nproc_per_node "$GPUS" \
  --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" -m gsco.recipes.finetune "${args[@]}" "$@"
