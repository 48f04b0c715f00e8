"""GSCo collaboration building blocks: the reference's prompt filling, evidence hints, and the case builder."""

import json

import numpy as np
import pytest

from conftest import shared_path
from gsco.collab.build_cases import build_cases
from gsco.collab.build_cases import main as build_main
from gsco.collab.prompts import PCAM200_TEMPLATE, fill_gsco_prompt, moed_with_probabilities, rad_counts
from gsco.data.registry import DatasetError


def test_pcam200_prompt_filled_as_the_reference_does():
    filled = fill_gsco_prompt(PCAM200_TEMPLATE, rad=["tumor", "tumor", "normal"], moed=["tumor", "normal", "tumor"])
    assert filled == (
        "You are a helpful medical assistant. Your task is disease diagnosis. You are given a pathology image. "
        "The possible diagnoses are: 'normal', 'tumor'. The diagnoses of the most similar cases are "
        "tumor,tumor,normal. The diagnoses of the specialist models are tumor,normal,tumor. The response should "
        "only contain one option.")


def test_templates_may_use_one_both_or_neither_placeholder_and_newlines_become_spaces():
    assert fill_gsco_prompt("Similar: ###RAD###.\nAnswer.", rad=["a", "b"]) == "Similar: a,b. Answer."
    assert fill_gsco_prompt("Experts: ###MOED###", moed=["x"]) == "Experts: x"
    assert fill_gsco_prompt("Plain\nquestion", rad=["a"], moed=["b"]) == "Plain question"
    with pytest.raises(ValueError, match="uses ###MOED### but the case has no moed hints"):
        fill_gsco_prompt("###MOED###", rad=["a"])


def test_evidence_hints():
    assert rad_counts(["tumor"] * 7 + ["normal"] * 3, ["normal", "tumor"]) == [
        "tumor: 7 of 10 similar cases", "normal: 3 of 10 similar cases"]
    assert moed_with_probabilities(["tumor", "normal"], [0.934, 0.61]) == ["tumor (p=0.93)", "normal (p=0.61)"]


def fake_results(path, y_true, seed, top_n=10, n_train=546):
    """A specialist results file with the reference's keys (predictions drawn at random)."""
    rng = np.random.default_rng(seed)
    prob = rng.dirichlet([1, 1], size=len(y_true))
    path.write_text(json.dumps({
        "dataset": "breastmnist", "task": "binary-class", "label_names": ["malignant", "normal or benign"],
        "img_size": 28, "y_true": [[int(y)] for y in y_true], "y_pred": prob.argmax(1).tolist(),
        "y_prob": prob.tolist(), "all_search_train_labels": rng.integers(0, 2, (len(y_true), top_n)).tolist(),
        "all_search_train_ids": rng.integers(0, n_train, (len(y_true), top_n)).tolist(),
        "all_search_sims": np.sort(rng.random((len(y_true), top_n)), axis=1).tolist()}))
    return json.loads(path.read_text())


def test_case_file_from_two_specialists_on_real_breastmnist(tmp_path):
    data = shared_path("data", "medmnist", "breastmnist.npz")
    y_true = np.load(data)["test_labels"].ravel()
    a = fake_results(tmp_path / "a_results.json", y_true, 0)
    b = fake_results(tmp_path / "b_results.json", y_true, 1)
    out = build_cases([tmp_path / "a_results.json", tmp_path / "b_results.json"], tmp_path / "gsco" / "cases.json",
                      data.parent, rad_from=1, k=5)
    cases = json.loads(out.read_text())
    names = ["malignant", "normal or benign"]
    assert len(cases) == 156 and (out.parent / cases[0]["image"]).is_file()
    for i in (0, 77, 155):
        c = cases[i]
        assert c["label"] == names[y_true[i]]
        assert c["moed"] == [names[a["y_pred"][i]], names[b["y_pred"][i]]]
        assert c["rad"] == [names[t] for t in b["all_search_train_labels"][i][:5]]
        assert c["moed_prob"][0] == pytest.approx(a["y_prob"][i][a["y_pred"][i]])


def test_case_builder_errors(tmp_path):
    data = shared_path("data", "medmnist", "breastmnist.npz")
    y_true = np.load(data)["test_labels"].ravel()
    fake_results(tmp_path / "a.json", y_true, 0)
    fake_results(tmp_path / "short.json", y_true[:10], 1)
    with pytest.raises(DatasetError, match="not on the same test cases"):
        build_cases([tmp_path / "a.json", tmp_path / "short.json"], tmp_path / "c.json", data.parent)
    with pytest.raises(DatasetError, match="holds 10 neighbours"):
        build_cases([tmp_path / "a.json"], tmp_path / "c.json", data.parent, k=11)
    assert build_main(["--results", str(tmp_path / "missing.json"), "--out", str(tmp_path / "c.json")]) == 2
