#!/usr/bin/env bash
# Acceptance run: ResNet-18 from scratch on real BreastMNIST (28 px, native), MedMNIST v2 recipe, the reference's
# three seeds; then a summary (mean/std of test ACC and AUC, CPU time) in results/breastmnist_v2_resnet18[_cifar].json.
#   bash results/run_breastmnist_v2.sh                (the preset: MedMNIST v2's 28 px stem; ~18 min per seed on 2 cores)
#   STEM=default bash results/run_breastmnist_v2.sh   (timm's ImageNet stem; ~3 min per seed)
# A seed whose results JSON is in OUT is skipped: give a fresh OUT=... after changing the recipe.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
STEM=${STEM:-cifar}
SUFFIX=$([ "$STEM" = default ] && echo "" || echo "_$STEM")
OUT=${OUT:-outputs/v2_seeds$SUFFIX}
DATA=${DATA_PATH:-../shared/data/medmnist}
TIMES=$OUT/times.txt
mkdir -p "$OUT"
for seed in 9930641 115149041 252139603; do
  # a seed with results is done (its times are already in times.txt); an interrupted one resumes from _last.pth
  [ -f "$OUT/breastmnist_28_endToEnd_resnet18_s${seed}_results.json" ] && continue
  /usr/bin/time -a -o "$TIMES" -f "$seed train %e %U %S" "$PY" -m gsco.specialists.train \
    --config configs/specialists/medmnist_v2.yaml data_path="$DATA" output_path="$OUT" seed=$seed stem=$STEM
  /usr/bin/time -a -o "$TIMES" -f "$seed predict %e %U %S" "$PY" -m gsco.specialists.predict \
    --config configs/specialists/medmnist_v2.yaml data_path="$DATA" output_path="$OUT" seed=$seed stem=$STEM
done
"$PY" results/summarize_breastmnist_v2.py "$OUT" "$SUFFIX"
