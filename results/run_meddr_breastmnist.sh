#!/usr/bin/env bash
# MedDr tiny preset fine-tuned on real BreastMNIST phrased as diagnosis questions, evaluated on the test split.
#   bash results/run_meddr_breastmnist.sh        (from the repository root; a few CPU minutes)
# The tiny preset starts from random weights: this checks that the training and evaluation paths learn from real
# images, not what a 40B MedDr would score.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-outputs/meddr_breastmnist}
DATA=${DATA_PATH:-../shared/data/medmnist}
EPOCHS=${EPOCHS:-20}
"$PY" -m gsco.data.diagnosis_questions --dataset breastmnist --data-path "$DATA" --out "$OUT/questions"
# configs/meddr/finetune_tiny.yaml's defaults (MODE=full), only the epochs set here
/usr/bin/time -f "train wall %e s, cpu %U+%S s" env PYTHON="$PY" GPUS=0 MODE=full OUT_DIR="$OUT/train" \
  DATA="$OUT/questions/breastmnist_train_conversations.json" bash train.sh \
  epochs="$EPOCHS" logging_steps=20 save_steps=100000
PYTHON="$PY" MODEL="$OUT/train/final" METAFILE="$OUT/questions/breastmnist_test.jsonl" TASK=diagnosis \
  OUT_DIR="$OUT/eval" bash inference_meddr.sh max_new_tokens=24 device=cpu
"$PY" - "$OUT" <<'PYEOF'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
m = json.loads((out / "eval" / "breastmnist_test_metrics.json").read_text())["metrics"]
rows = [json.loads(l) for l in (out / "questions" / "breastmnist_test.jsonl").read_text().splitlines()]
majority = max(sum(r["answer"] == o for r in rows) for o in rows[0]["options"]) / len(rows)
summary = {"test_accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "per_class_recall": m["per_class_recall"],
           "unparsed": m["unparsed"], "majority_class_accuracy": majority, "n_test": len(rows)}
pathlib.Path("results/meddr_tiny_breastmnist.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary, indent=2))
PYEOF
