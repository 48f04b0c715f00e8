"""README's first command (`make demo`), shortened: the whole GSCo recipe on the real BreastMNIST, and every
number of its table recomputed from the files it wrote."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import f1_score

from gsco.collab.arms import generalist_arms
from gsco.data.registry import answer_aliases
from gsco.metrics.answers import parse_option

from conftest import REPO, shared_path

OPTIONS = ["malignant", "normal or benign"]


def scores(truth: list[str], predicted: list[str | None]) -> dict:
    y = [OPTIONS.index(t) for t in truth]
    p = [OPTIONS.index(q) if q is not None else len(OPTIONS) for q in predicted]
    return {"accuracy": float(np.mean(np.array(y) == np.array(p))),
            "macro_f1": float(f1_score(y, p, labels=[0, 1], average="macro", zero_division=0)),
            "unparsed": sum(q is None for q in predicted)}


@pytest.mark.e2e
def test_make_demo_runs_the_recipe_and_its_table_recomputes_from_its_files(tmp_path):
    out = tmp_path / "demo"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = ["make", "-C", str(REPO), "-o", "install", "demo", f"PY={sys.executable}", f"DEMO_OUT={out}",
           f"DATA_PATH={shared_path('data', 'medmnist')}", "SPECIALIST_EPOCHS=1", "MEDDR_EPOCHS=0.25",
           "GSCO_ARGS=max_new_tokens=8"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"table: {out}/gsco/ablation.md" in proc.stdout and "| specialist_vote | 156 |" in proc.stdout

    table = json.loads((out / "gsco" / "ablation.json").read_text())
    arms = table["arms"]
    asked = list(generalist_arms(report=False))  # every registered arm the diagnosis task asks
    assert list(arms) == ["specialist_0", "specialist_1", "specialist_vote", *asked]
    cases = json.loads((out / "gsco" / "breastmnist_cases.json").read_text())
    truth = [c["label"] for c in cases]
    assert len(cases) == 156 and sum(t == "malignant" for t in truth) == 42
    # specialists: from the case file, itself from the results files
    results = [json.loads((out / "specialists" / f"breastmnist_28_endToEnd_{a}_s9930641_results.json").read_text())
               for a in ("resnet18", "mobilenetv3_small_100")]
    for j, res in enumerate(results):
        assert [c["moed"][j] for c in cases] == [OPTIONS[p] for p in res["y_pred"]]
        expected = scores(truth, [c["moed"][j] for c in cases])
        assert arms[f"specialist_{j}"]["accuracy"] == pytest.approx(res["ACC"]) == pytest.approx(expected["accuracy"])
    vote = [c["moed"][0] for c in cases]  # two specialists: a split vote follows the first
    assert arms["specialist_vote"]["accuracy"] == pytest.approx(scores(truth, vote)["accuracy"])
    # generalist arms: from their predictions files, the answers parsed again
    md = (out / "gsco" / "ablation.md").read_text()
    for arm in asked:
        rows = [json.loads(line) for line in (out / "gsco" / f"{arm}_predictions.jsonl").read_text().splitlines()]
        assert [r["question_id"] for r in rows] == [c["id"] for c in cases]
        parsed = [parse_option(r["answer"], OPTIONS, answer_aliases(OPTIONS, "breastmnist")) for r in rows]
        assert parsed == [r["parsed"] for r in rows] and [r["annotation"] for r in rows] == truth
        expected = scores(truth, parsed)
        for key in ("accuracy", "macro_f1", "unparsed"):
            assert arms[arm][key] == pytest.approx(expected[key]), (arm, key)
        assert f"| {arm} | 156 | {expected['accuracy']:.3f} | {expected['macro_f1']:.3f} |" in md
        assert (out / "gsco" / f"{arm}_confusion.png").is_file()
    # the generalist was fine-tuned on training-split samples asked with the arms' prompts
    samples = json.loads((out / "gsco" / "train" / "hint_samples.json").read_text())
    assert len(samples) == 2 * 546 and all(s["id"].startswith("breastmnist_train_") for s in samples)
    arms_asked = [s["id"].split(":")[1] for s in samples]  # each case: the plain question and one arm with hints
    assert arms_asked[0::2] == ["generalist"] * 546 and "generalist" not in arms_asked[1::2]
    assert (out / "meddr" / "final" / "config.json").is_file()

    # README's `make demo MODEL=...` after it: only GSCo runs again, with that generalist (a tiny Qwen2.5-VL standing
    # in for the checkpoint folder; its image keys through GSCO_ARGS keep the thumbnails at 4 tokens on this CPU), into
    # its own folder; the specialists and case files are kept
    from gsco.generalist.tiny import save

    medgemma = save("qwen2_5_vl", tmp_path / "medgemma-4b-it")
    kept = {p: p.stat().st_mtime_ns for p in (out / "specialists").iterdir()} | \
        {out / "gsco" / "breastmnist_cases.json": (out / "gsco" / "breastmnist_cases.json").stat().st_mtime_ns}
    again = subprocess.run([*cmd, f"MODEL={medgemma}", "GSCO_ARGS=max_new_tokens=4 arms=[generalist,moed_rad] "
                                                       "min_pixels=3136 max_pixels=3136"],
                           env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "specialist" not in again.stdout.split("inference_gsco.sh")[0]  # nothing before GSCo ran
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    table = json.loads((out / "gsco-medgemma-4b-it" / "ablation.json").read_text())
    assert list(table["arms"]) == ["generalist", "moed_rad"]  # the arms asked (GSCO_ARGS)
    rows = (out / "gsco-medgemma-4b-it" / "moed_rad_predictions.jsonl").read_text().splitlines()
    assert len(rows) == 156
