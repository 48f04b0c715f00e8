#!/usr/bin/env bash
# Acceptance run: ResNet-18 from scratch on real BreastMNIST (28 px, native), MedMNIST v2 recipe, the reference's
# three seeds; then a summary (mean/std of test ACC and AUC, CPU time) in results/breastmnist_v2_resnet18[_cifar].json.
#   bash results/run_breastmnist_v2.sh                (timm's ResNet-18; ~1.5 min per seed on 2 cores)
#   STEM=cifar bash results/run_breastmnist_v2.sh     (MedMNIST v2's 28 px stem; ~10 min per seed)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
STEM=${STEM:-default}
SUFFIX=$([ "$STEM" = default ] && echo "" || echo "_$STEM")
OUT=${OUT:-outputs/v2_seeds$SUFFIX}
DATA=${DATA_PATH:-../shared/data/medmnist}
TIMES=$OUT/times.txt
mkdir -p "$OUT"; : > "$TIMES"
for seed in 9930641 115149041 252139603; do
  /usr/bin/time -a -o "$TIMES" -f "$seed train %e %U %S" "$PY" -m gsco.specialists.train \
    --config configs/specialists/medmnist_v2.yaml data_path="$DATA" output_path="$OUT" seed=$seed stem=$STEM
  /usr/bin/time -a -o "$TIMES" -f "$seed predict %e %U %S" "$PY" -m gsco.specialists.predict \
    --config configs/specialists/medmnist_v2.yaml data_path="$DATA" output_path="$OUT" seed=$seed stem=$STEM
done
"$PY" - "$OUT" "$SUFFIX" <<'PYEOF'
import json, sys, pathlib, statistics as st
out, suffix = pathlib.Path(sys.argv[1]), sys.argv[2]
times = {}
for line in (out / "times.txt").read_text().splitlines():
    seed, step, wall, user, sys_ = line.split()
    times.setdefault(seed, {})[step] = {"wall_s": float(wall), "cpu_s": float(user) + float(sys_)}
runs = []
for seed in ("9930641", "115149041", "252139603"):
    r = json.loads((out / f"breastmnist_28_endToEnd_resnet18_s{seed}_results.json").read_text())
    hist = [json.loads(l) for l in (out / f"breastmnist_28_endToEnd_resnet18_s{seed}_history.jsonl").read_text().splitlines()]
    best = max(hist, key=lambda h: h["val_auc"])
    runs.append({"seed": int(seed), "test_ACC": r["ACC"], "test_AUC": r["AUC"], "best_epoch": best["epoch"],
                 "val_AUC": best["val_auc"], **{f"{k}_{m}": v for k, d in times.get(seed, {}).items() for m, v in d.items()}})
summary = {"runs": runs,
           "mean_test_AUC": st.mean(r["test_AUC"] for r in runs), "std_test_AUC": st.stdev(r["test_AUC"] for r in runs),
           "mean_test_ACC": st.mean(r["test_ACC"] for r in runs), "std_test_ACC": st.stdev(r["test_ACC"] for r in runs)}
dst = pathlib.Path(f"results/breastmnist_v2_resnet18{suffix}.json")
dst.write_text(json.dumps(summary, indent=2))
print(json.dumps(summary, indent=2))
print(f"wrote {dst}")
PYEOF
