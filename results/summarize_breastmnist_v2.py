"""Summarise the three-seed BreastMNIST v2 runs of results/run_breastmnist_v2.sh into results/*.json.

    python results/summarize_breastmnist_v2.py OUT_DIR [SUFFIX]
"""
import json, sys, pathlib, statistics as st
out, suffix = pathlib.Path(sys.argv[1]), (sys.argv[2] if len(sys.argv) > 2 else "")
times = {}
for line in (out / "times.txt").read_text().splitlines():
    seed, step, wall, user, sys_ = line.split()
    t = times.setdefault(seed, {}).setdefault(step, {"wall_s": 0.0, "cpu_s": 0.0})  # a resumed run adds up
    t["wall_s"] += float(wall); t["cpu_s"] += float(user) + float(sys_)
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
