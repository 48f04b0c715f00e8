"""GSCo collaboration building blocks: the reference's prompt filling, evidence hints, and the case builder."""

import json
import logging

import numpy as np
import pytest

from gsco.collab.build_cases import build_cases
from gsco.collab.build_cases import main as build_main
from gsco.collab.config import GscoConfig
from gsco.collab.prompts import fill_gsco_prompt, moed_with_probabilities, rad_counts
from gsco.config import load_config
from gsco.data.registry import DatasetError
from gsco.recipes.gsco import run

from builders import build_tiny_llava, fake_results, pcam_cases
from conftest import REPO, shared_path
from reference_sources import GSCO_PCAM200_PROMPT, gsco_fill


def test_pcam200_prompt_filled_as_the_reference_does():
    case = {"rad": ["tumor", "tumor", "normal"], "moed": ["tumor", "normal", "tumor"]}
    filled = fill_gsco_prompt(GSCO_PCAM200_PROMPT, rad=case["rad"], moed=case["moed"])
    assert filled == gsco_fill(GSCO_PCAM200_PROMPT, case) == (
        " You are a helpful medical assistant. Your task is disease diagnosis. You are given a pathology image. "
        "The possible diagnoses are: 'normal', 'tumor'. The diagnoses of the most similar cases are "
        "tumor,tumor,normal. The diagnoses of the specialist models are tumor,normal,tumor. The response should "
        "only contain one option. ")


def test_templates_may_use_one_both_or_neither_placeholder_and_template_newlines_become_spaces():
    assert fill_gsco_prompt("Similar: ###RAD###.\nAnswer.", rad=["a", "b"]) == "Similar: a,b. Answer."
    assert fill_gsco_prompt("Experts: ###MOED###", moed=["x"]) == "Experts: x"
    assert fill_gsco_prompt("Plain\nquestion", rad=["a"], moed=["b"]) == "Plain question"
    # hints go in as they are (the reference replaces newlines in its template, not in the hints)
    assert fill_gsco_prompt("Reports: ###RAD###", rad=["a\nb", "c"], sep=" | ") == "Reports: a\nb | c"
    with pytest.raises(ValueError, match="uses ###MOED### but the case has no moed hints"):
        fill_gsco_prompt("###MOED###", rad=["a"])


def test_evidence_hints():
    assert rad_counts(["tumor"] * 7 + ["normal"] * 3, ["normal", "tumor"]) == [
        "tumor: 7 of 10 similar cases", "normal: 3 of 10 similar cases"]
    assert moed_with_probabilities(["tumor", "normal"], [0.934, 0.61]) == ["tumor (p=0.93)", "normal (p=0.61)"]


@pytest.mark.e2e
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


@pytest.mark.e2e
def test_case_builder_errors(tmp_path):
    data = shared_path("data", "medmnist", "breastmnist.npz")
    y_true = np.load(data)["test_labels"].ravel()
    fake_results(tmp_path / "a.json", y_true, 0)
    fake_results(tmp_path / "short.json", y_true[:10], 1)
    with pytest.raises(DatasetError, match="not on the same cases"):
        build_cases([tmp_path / "a.json", tmp_path / "short.json"], tmp_path / "c.json", data.parent)
    with pytest.raises(DatasetError, match="holds 10 neighbours"):
        build_cases([tmp_path / "a.json"], tmp_path / "c.json", data.parent, k=11)
    assert build_main([f"specialists=[{tmp_path / 'missing.json'}]", f"cases={tmp_path / 'c.json'}"]) == 2


def test_pcam200_config_assembles_the_reference_template():
    from gsco.collab.cases import template_for
    from gsco.collab.tasks import Task

    cfg = load_config(GscoConfig, REPO / "configs/gsco/pcam200.yaml")
    assert template_for(cfg, "moed_rad", Task.of(cfg)) == GSCO_PCAM200_PROMPT
    assert "###" not in template_for(cfg, "generalist", Task.of(cfg))


@pytest.mark.e2e
def test_hand_written_reference_case_file_runs_through_inference_gsco_sh_and_resumes(tmp_path, caplog):
    """A case file in the reference's format ({image, label, rad, moed}, image relative to an image root) runs with
    the default arms: those whose evidence it lacks (moed_prob) are skipped with one line, the table lists them."""
    import os
    import subprocess
    import sys

    from PIL import Image

    rng = np.random.default_rng(0)
    (tmp_path / "imgs").mkdir()
    cases = []
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "imgs" / f"p{i}.png")
        cases.append({"image": f"p{i}.png", "label": ["normal", "tumor"][i % 2],
                      "rad": ["tumor", "normal", "tumor"][: 1 + i % 3], "moed": ["tumor", "normal", "tumor"]})
    (tmp_path / "pcam200_meta.json").write_text(json.dumps(cases))
    env = {**os.environ, "PYTHON": sys.executable, "DATASET": "pcam200", "CASES": str(tmp_path / "pcam200_meta.json"),
           "IMAGE_ROOT": str(tmp_path / "imgs"), "OUT_DIR": str(tmp_path / "out")}
    cmd = ["bash", str(REPO / "inference_gsco.sh"), "device=cpu", "max_new_tokens=6", "eval_batch_size=2"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "out" / "moed_rad_predictions.jsonl").read_text().splitlines()]
    for row, case in zip(rows, cases):
        assert row["question"] == gsco_fill(GSCO_PCAM200_PROMPT, case)
        assert row["annotation"] == case["label"] and "parsed" in row
    table = json.loads((tmp_path / "out" / "ablation.json").read_text())
    assert table["arms"]["specialist_0"]["accuracy"] == pytest.approx(2 / 5)  # 'tumor' for all five
    assert list(table["arms"]) == ["specialist_0", "specialist_1", "specialist_2", "specialist_vote", "generalist",
                                   "moed", "rad", "moed_rad", "rad_counts"]
    why = "5 of 5 cases have no complete 'moed_prob'"
    assert list(table["skipped"]) == ["moed_prob"] and why in table["skipped"]["moed_prob"]
    assert proc.stderr.count("arm moed_prob skipped") == 1
    markdown = (tmp_path / "out" / "ablation.md").read_text()
    assert "| moed_rad | 5 |" in markdown and f"- moed_prob: {why}" in markdown
    png = tmp_path / "out" / "moed_rad_confusion.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and table["arms"]["moed_rad"]["confusion_png"] == str(png)
    # cut after three rows (one torn), re-run: same file as before
    full = (tmp_path / "out" / "moed_rad_predictions.jsonl").read_text()
    lines = full.splitlines(keepends=True)
    (tmp_path / "out" / "moed_rad_predictions.jsonl").write_text("".join(lines[:3]) + lines[3][:10])
    with caplog.at_level(logging.INFO):  # the command's settings, in this process
        run(load_config(GscoConfig, REPO / "configs/gsco/pcam200.yaml",
                        {"cases": str(tmp_path / "pcam200_meta.json"), "image_root": str(tmp_path / "imgs"),
                         "out_dir": str(tmp_path / "out"), "device": "cpu", "max_new_tokens": 6, "eval_batch_size": 2}))
    assert "arm moed_rad: 3 of 5 cases answered, 2 to go" in caplog.text
    assert (tmp_path / "out" / "moed_rad_predictions.jsonl").read_text() == full


def test_a_non_internvl_generalist_plugs_in(tmp_path):
    from gsco.generalist import Generalist

    model = build_tiny_llava(tmp_path / "llava")
    g = Generalist.load(str(model), device="cpu")
    assert type(g.model).__name__ == "LlavaForConditionalGeneration"
    cases = pcam_cases(tmp_path, 4)
    common = {"dataset": "pcam200", "options": ["normal", "tumor"], "modality": "pathology", "model": str(model),
              "cases": str(tmp_path / "cases.json"), "device": "cpu", "max_new_tokens": 5,
              "arms": ["generalist", "moed_rad"]}
    one = run(load_config(GscoConfig, None, {**common, "out_dir": str(tmp_path / "b1"), "eval_batch_size": 1}))
    four = run(load_config(GscoConfig, None, {**common, "out_dir": str(tmp_path / "b4"), "eval_batch_size": 4}))
    assert one["arms"]["moed_rad"]["n"] == four["arms"]["moed_rad"]["n"] == 4
    for arm in ("generalist", "moed_rad"):
        assert (tmp_path / "b1" / f"{arm}_predictions.jsonl").read_text() == \
            (tmp_path / "b4" / f"{arm}_predictions.jsonl").read_text()
    # the case file's hints change: its answers are not resumed as if nothing happened
    from gsco.evaluation.resumable import ResumeMismatchError

    cases[2]["rad"] = ["tumor"] * 3
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    with pytest.raises(ResumeMismatchError, match="generalist_predictions.jsonl holds 4 answers of another run "
                                                  r"\(cases: "):
        run(load_config(GscoConfig, None, {**common, "out_dir": str(tmp_path / "b1")}))
    rerun = run(load_config(GscoConfig, None, {**common, "out_dir": str(tmp_path / "b1"), "overwrite": True}))
    assert rerun["arms"]["moed_rad"]["n"] == 4
    asked = json.loads((tmp_path / "b1" / "moed_rad_predictions.jsonl").read_text().splitlines()[2])["question"]
    assert "tumor,tumor,tumor" in asked


@pytest.mark.e2e
def test_case_builder_reads_specialists_rad_source_and_k_from_the_gsco_config(tmp_path):
    import yaml

    data = shared_path("data", "medmnist", "breastmnist.npz")
    y_true = np.load(data)["test_labels"].ravel()
    a = fake_results(tmp_path / "a.json", y_true, 0)
    b = fake_results(tmp_path / "b.json", y_true, 1)
    cfg = yaml.safe_load((REPO / "configs/gsco/breastmnist.yaml").read_text())
    cfg["include"] = str(REPO / "configs/gsco" / cfg["include"])  # the copy starts from the same base file
    cfg["build"].update(specialists=[str(tmp_path / "a.json"), str(tmp_path / "b.json")], rad_from=1, rad_k=3,
                        data_path=str(data.parent))
    cfg["cases"] = str(tmp_path / "cases.json")
    (tmp_path / "gsco.yaml").write_text(yaml.safe_dump(cfg))
    assert build_main(["--config", str(tmp_path / "gsco.yaml")]) == 0
    cases = json.loads((tmp_path / "cases.json").read_text())
    assert cases[5]["rad"] == [["malignant", "normal or benign"][t] for t in b["all_search_train_labels"][5][:3]]
    assert len(cases[5]["moed"]) == 2 and a["y_pred"][5] in (0, 1)
    assert build_main(["--config", str(tmp_path / "gsco.yaml"), "rad_k=2"]) == 0  # a key overrides the config
    assert len(json.loads((tmp_path / "cases.json").read_text())[0]["rad"]) == 2


@pytest.mark.e2e
def test_inference_gsco_sh_killed_midway_resumes_to_the_same_predictions(tmp_path):
    import os
    import subprocess
    import sys

    from PIL import Image

    from conftest import REPO, kill_when_written

    rng = np.random.default_rng(5)
    cases = []
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(tmp_path / f"k{i}.png")
        cases.append({"image": f"k{i}.png", "label": "tumor", "rad": ["normal", "tumor"], "moed": ["tumor"]})
    (tmp_path / "cases.json").write_text(json.dumps(cases))

    def command(out):
        env = {**os.environ, "PYTHON": sys.executable, "DATASET": "pcam200", "CASES": str(tmp_path / "cases.json"),
               "OUT_DIR": str(out), "ARMS": "moed_rad,rad", "BATCH_SIZE": "4"}  # two cases (both arms) a batch
        return ["bash", str(REPO / "inference_gsco.sh"), "device=cpu", "max_new_tokens=12"], env

    # the uninterrupted run: the command's settings in this process
    run(load_config(GscoConfig, REPO / "configs/gsco/pcam200.yaml",
                    {"cases": str(tmp_path / "cases.json"), "out_dir": str(tmp_path / "full"),
                     "arms": ["moed_rad", "rad"], "eval_batch_size": 4, "device": "cpu", "max_new_tokens": 12}))
    cmd, env = command(tmp_path / "cut")
    preds = tmp_path / "cut" / "moed_rad_predictions.jsonl"
    killed_at = kill_when_written(cmd, env, preds, min_lines=4)
    assert 0 < killed_at < 12, "the run was not caught midway"
    again = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert again.returncode == 0 and f"arm moed_rad: {killed_at} of 12 cases answered" in again.stderr
    for arm in ("moed_rad", "rad"):  # each arm's file, though the kill may fall between the two appends
        assert (tmp_path / "cut" / f"{arm}_predictions.jsonl").read_text() == \
            (tmp_path / "full" / f"{arm}_predictions.jsonl").read_text()


@pytest.mark.e2e
def test_inference_gsco_sh_with_two_data_parallel_processes_writes_the_same_files(tmp_path):
    from PIL import Image

    from doc_commands import run_documented

    rng = np.random.default_rng(6)
    cases = []
    for i in range(7):
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(tmp_path / f"d{i}.png")
        cases.append({"image": f"d{i}.png", "label": ["normal", "tumor"][i % 2], "rad": ["normal"], "moed": ["tumor"]})
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    from gsco.evaluation.resumable import ResumeMismatchError

    # README's data-parallel command with 2 processes; the same settings in one process (this one) as the baseline
    run_documented("GPUS=4 DATASET=breastmnist MODEL=/path/to/meddr-hf CASES=outputs/gsco/breastmnist_cases.json "
                   "bash inference_gsco.sh",
                   replace={"GPUS=4": "GPUS=2", "DATASET=breastmnist": "DATASET=pcam200", "/path/to/meddr-hf": "tiny",
                            "outputs/gsco/breastmnist_cases.json": str(tmp_path / "cases.json")},
                   append=[f"out_dir={tmp_path / '2'}", "arms=[specialist_0,moed_rad]", "device=cpu",
                           "max_new_tokens=6"])
    settings = {"model": "tiny", "cases": str(tmp_path / "cases.json"), "arms": ["specialist_0", "moed_rad"],
                "device": "cpu", "max_new_tokens": 6}
    pcam200 = REPO / "configs" / "gsco" / "pcam200.yaml"
    run(load_config(GscoConfig, pcam200, {**settings, "out_dir": str(tmp_path / "1")}))
    outputs = {gpus: (tmp_path / gpus / "moed_rad_predictions.jsonl").read_text() for gpus in ("1", "2")}
    assert outputs["1"] == outputs["2"] and len(outputs["2"].splitlines()) == 7
    assert not list((tmp_path / "2").glob("*.rank*.jsonl"))
    assert json.loads((tmp_path / "2" / "ablation.json").read_text())["arms"]["moed_rad"]["n"] == 7
    # a GPUS=2 run killed before its merge leaves only part files; a re-run with another MoED sentence is refused
    # for their answers (it used to keep them, asked with the old prompt)
    lines = outputs["2"].splitlines(keepends=True)
    (tmp_path / "2" / "moed_rad_predictions.jsonl").unlink()
    (tmp_path / "2" / "moed_rad_predictions.rank0.jsonl").write_text("".join(lines[0::2]))
    (tmp_path / "2" / "moed_rad_predictions.rank1.jsonl").write_text("".join(lines[1:5:2]))
    with pytest.raises(ResumeMismatchError, match="moed_rad_predictions.jsonl line 1 \\(question_id 0\\): its "
                       "question is not the one asked now"):
        run(load_config(GscoConfig, pcam200, {**settings, "out_dir": str(tmp_path / "2"),
                                              "moed_sentence": "The experts say ###MOED###."}))
    assert not list((tmp_path / "2").glob("*.rank*.jsonl"))  # adopted into the main file, refused with it
    assert len((tmp_path / "2" / "moed_rad_predictions.jsonl").read_text().splitlines()) == 6


def test_multi_label_evidence_hints():
    from gsco.collab.prompts import moed_with_probabilities_multilabel, rad_counts_multilabel

    neighbours = [["effusion"], [], ["effusion", "mass"], [], []]
    assert rad_counts_multilabel(neighbours, ["atelectasis", "effusion", "mass"]) == [
        "no finding: 3 of 5 similar cases", "effusion: 2 of 5 similar cases", "mass: 1 of 5 similar cases"]
    assert moed_with_probabilities_multilabel([["mass", "effusion"], []], [[0.1, 0.62, 0.913], [0.2, 0.31, 0.05]],
                                              ["atelectasis", "effusion", "mass"]) == [
        "mass (p=0.91) and effusion (p=0.62)", "no finding (max p=0.31)"]


def test_multi_label_dataset_runs_from_specialists_to_the_ablation_table(toy_data, tmp_path):
    """Two specialists trained on a generated multi-label dataset -> case file -> arms, scored label by label."""
    from gsco.metrics.answers import multilabel_metrics
    from gsco.specialists.config import SpecialistConfig
    from gsco.specialists.predict import predict_specialist
    from gsco.specialists.train import train_specialist

    overrides = {**toy_data("toy_multilabel"), "epochs": 1}
    results = []
    for seed in (0, 1):
        cfg = load_config(SpecialistConfig, None, {**overrides, "seed": seed})
        train_specialist(cfg)
        results.append(predict_specialist(cfg)["files"].results)
    out = build_cases(results, tmp_path / "gsco" / "cases.json", tmp_path / "data", k=4,
                      extra_datasets=overrides["extra_datasets"])
    cases = json.loads(out.read_text())
    names = ["x", "y", "z", "w"]
    truth = np.load(tmp_path / "data" / "toy_multilabel.npz")["test_labels"]
    res = [json.loads(r.read_text()) for r in results]
    assert len(cases) == 24
    for i in (0, 11, 23):
        c = cases[i]
        assert c["label"] == [n for n, on in zip(names, truth[i]) if on]
        assert c["moed_labels"][1] == [n for n, on in zip(names, res[1]["y_pred"][i]) if on]
        assert c["moed"][1] == (" and ".join(c["moed_labels"][1]) or "no finding")
        assert c["rad_labels"][0] == [n for n, on in zip(names, res[0]["all_search_train_labels"][i][0]) if on]
        assert len(c["rad"]) == 4 and len(c["moed_prob"][0]) == 4

    gcfg = load_config(GscoConfig, None, {
        "dataset": "toy_multilabel", "extra_datasets": overrides["extra_datasets"], "cases": str(out),
        "out_dir": str(tmp_path / "gsco" / "out"), "model": "tiny", "device": "cpu", "max_new_tokens": 4,
        "arms": ["specialist_0", "specialist_1", "specialist_vote", "rad_counts", "moed_prob"]})
    table = run(gcfg)
    labels = [c["label"] for c in cases]
    # two specialists: a label named by one of them is a tie, which follows the first
    assert table["arms"]["specialist_vote"]["accuracy"] == table["arms"]["specialist_0"]["accuracy"]
    assert table["arms"]["specialist_1"]["macro_f1"] == pytest.approx(
        multilabel_metrics(labels, [c["moed_labels"][1] for c in cases], names)["macro_f1"])
    rows = [json.loads(line) for line in (tmp_path / "gsco" / "out" / "rad_counts_predictions.jsonl").read_text()
            .splitlines()]
    assert len(rows) == 24 and "name every diagnosis that applies, or 'no finding' if none does" in rows[0]["question"]
    assert "of 4 similar cases" in rows[0]["question"] and rows[0]["annotation"] == cases[0]["label"]
    md = (tmp_path / "gsco" / "out" / "ablation.md").read_text()
    assert "| arm | n | exact match | macro-F1 | micro-F1 | recall x |" in md
    assert (tmp_path / "gsco" / "out" / "moed_prob_confusion.png").is_file()


def test_hand_written_multi_label_case_file_with_labels_as_words(tmp_path, toy_registry):
    from PIL import Image

    from gsco.collab.cases import fill_case, read_cases
    from gsco.collab.tasks import Task
    from gsco.config import ConfigError, load_config

    Image.fromarray(np.zeros((28, 28), dtype=np.uint8)).save(tmp_path / "a.png")
    cases = [{"image": "a.png", "label": "x and z", "rad": ["x", "no finding", "x and z"],
              "moed": ["z", "x and z", "x"]},
             {"image": "a.png", "label": "no finding", "rad": ["no finding"], "moed": ["no finding", "y", "y and w"]}]
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    cfg = load_config(GscoConfig, None, {"dataset": "toy_multilabel", "extra_datasets": str(toy_registry),
                                         "cases": str(tmp_path / "cases.json"), "out_dir": str(tmp_path / "out"),
                                         "arms": ["specialist_0", "specialist_vote"]})
    task = Task.of(cfg)
    read = read_cases(tmp_path / "cases.json", task)
    assert [c["label"] for c in read] == [["x", "z"], []]
    assert ("most similar cases are x: 2 of 3 similar cases,z: 1 of 3 similar cases,no finding: 1 of 3 similar cases."
            in fill_case(cfg, "rad_counts", read[0], task))
    table = run(cfg)
    assert table["arms"]["specialist_0"]["accuracy"] == 0.5  # 'z' misses x; 'no finding' is right
    # the vote keeps labels named by 2 of 3: x and z (right), then y (wrong)
    vote = table["arms"]["specialist_vote"]
    assert vote["accuracy"] == 0.5 and vote["per_class_recall"]["x"] == 1.0
    assert vote["confusion"][4] == [0, 1, 0, 0, 0, 0]  # the 'no finding' case answered y
    cases[1]["label"] = "pneumonia"
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    with pytest.raises(ConfigError, match=r"cases.json case 1 \(1\): label 'pneumonia' is not a list of the options"):
        run(cfg)


@pytest.mark.e2e
def test_hint_samples_ask_the_arms_prompts_on_training_cases(tmp_path):
    from gsco.collab.cases import fill_case
    from gsco.collab.hint_samples import main as hint_main
    from gsco.collab.hint_samples import write_hint_samples
    from gsco.collab.tasks import Task
    from gsco.config import ConfigError, load_config
    from gsco.data.conversations import read_training_data
    from gsco.data.diagnosis_questions import diagnosis_question
    from gsco.data.registry import get_dataset_info

    from doc_commands import run_documented

    data = shared_path("data", "medmnist", "breastmnist.npz")
    y_train = np.load(data)["train_labels"].ravel()
    for seed in (0, 1):
        fake_results(tmp_path / f"s{seed}_train_results.json", y_train, seed, split="train")
    cases_path = build_cases([tmp_path / "s0_train_results.json", tmp_path / "s1_train_results.json"],
                             tmp_path / "gsco" / "train_cases.json", data.parent, k=5)
    cases = json.loads(cases_path.read_text())
    assert len(cases) == 546 and cases[0]["split"] == "train" and cases[0]["image"] == "images/train_0.png"
    cfg = load_config(GscoConfig, REPO / "configs/gsco/breastmnist.yaml")
    out = write_hint_samples(cfg, cases_path, tmp_path / "samples" / "hints.json")
    samples = json.loads(out.read_text())
    assert len(samples) == 546 * 6
    by_id = {s["id"]: s for s in samples}
    task = Task.of(cfg)
    case = cases[3]
    for arm in ("generalist", "moed_rad", "rad_counts", "moed_prob"):
        sample = by_id[f"{case['id']}:{arm}"]
        assert sample["conversations"][0]["value"] == "<image>\n" + fill_case(cfg, arm, case, task)
        assert sample["conversations"][1]["value"] == case["label"]
    # the plain arm asks what the diagnosis questions ask: one prompt for both fine-tuning recipes
    assert by_id[f"{case['id']}:generalist"]["conversations"][0]["value"] == \
        "<image>\n" + diagnosis_question(get_dataset_info("breastmnist"))
    read = read_training_data(out)
    assert len(read) == 546 * 6 and read[0].image.is_file()
    # two arms per case, the plain question kept and the other drawn with the seed: the documented command
    run_documented("python -m gsco.collab.hint_samples --config configs/gsco/breastmnist.yaml "
                   "cases=outputs/gsco/train/cases.json samples=outputs/gsco/train/hint_samples.json arms_per_case=2 "
                   "keep_arms=[generalist]",
                   replace={"outputs/gsco/train/cases.json": str(cases_path),
                            "outputs/gsco/train/hint_samples.json": str(tmp_path / "two.json")})
    two = json.loads((tmp_path / "two.json").read_text())
    assert len(two) == 2 * 546 and len({s["id"].split(":")[1] for s in two}) == 6
    kept = [s["id"].split(":") for s in two]
    assert [arm for _, arm in kept[0::2]] == ["generalist"] * 546 and [c for c, _ in kept[0::2]] == \
        [c for c, _ in kept[1::2]]
    assert {arm for _, arm in kept[1::2]} == {"moed", "rad", "moed_rad", "rad_counts", "moed_prob"}
    assert hint_main([f"cases={cases_path}", f"samples={tmp_path / 'two_again.json'}", "arms_per_case=2",
                      "keep_arms=[generalist]"]) == 0
    assert (tmp_path / "two_again.json").read_text() == (tmp_path / "two.json").read_text()
    assert hint_main([f"cases={cases_path}", f"samples={tmp_path / 'drawn.json'}", "arms_per_case=2"]) == 0
    drawn = [s["id"].split(":")[1] for s in json.loads((tmp_path / "drawn.json").read_text())]
    assert len(drawn) == 2 * 546 and drawn.count("generalist") < 546  # both drawn: the plain question not always
    with pytest.raises(ConfigError, match="key 'keep_arms': \\['generalist', 'rad'\\] must be among the arms "
                       "asked .* and at most arms_per_case \\(1\\)"):
        write_hint_samples(cfg, cases_path, tmp_path / "x.json", per_case=1, keep=["generalist", "rad"])
    # test-split cases are refused, as are arms that ask no generalist
    y_test = np.load(data)["test_labels"].ravel()
    fake_results(tmp_path / "t_results.json", y_test, 0)
    test_cases = build_cases([tmp_path / "t_results.json"], tmp_path / "gsco" / "test_cases.json", data.parent)
    with pytest.raises(ConfigError, match="is from the test split"):
        write_hint_samples(cfg, test_cases, tmp_path / "x.json")
    with pytest.raises(ConfigError, match=r"arms \['specialist_0'\] ask no generalist"):
        write_hint_samples(cfg, cases_path, tmp_path / "x.json", arms=["specialist_0"])


@pytest.mark.parametrize("name", ["breastmnist", "pcam200", "chestmnist"])
def test_every_shipped_gsco_config_assembles_each_arm(name):
    from gsco.collab.arms import ARMS
    from gsco.collab.cases import template_for
    from gsco.collab.tasks import Task

    cfg = load_config(GscoConfig, REPO / f"configs/gsco/{name}.yaml")
    task = Task.of(cfg)
    assert task.multi_label == (name == "chestmnist")
    for arm in ARMS:
        text = template_for(cfg, arm, task)
        assert ("###RAD###" in text) == (arm in ("rad", "moed_rad", "rad_counts"))
        assert ("###MOED###" in text) == (arm in ("moed", "moed_rad", "moed_prob"))
        assert "{" not in text and text.count("'") >= 2 * len(task.options)
    if task.multi_label:
        assert text.endswith("or 'no finding' if none does. ") and len(task.options) == 14


# ----------------------------------------------------------------------------------------------- the arm registry
def _complete_case(multi_label: bool) -> dict:
    if multi_label:
        return {"id": "m", "image": "m.png", "label": ["effusion"], "rad": ["effusion", "no finding", "mass"],
                "moed": ["effusion and mass", "no finding"], "moed_prob": [[0.9, 0.7, 0.1], [0.2, 0.3, 0.1]]}
    return {"id": "s", "image": "s.png", "label": "tumor", "rad": ["tumor", "normal", "tumor"],
            "moed": ["tumor", "normal"], "moed_prob": [0.93, 0.61]}


@pytest.mark.parametrize("multi_label", [False, True])
@pytest.mark.parametrize("arm", sorted(__import__("gsco.collab.arms", fromlist=["ARMS"]).ARMS))
def test_each_registered_arm_writes_its_hints_and_names_missing_evidence(arm, multi_label):
    from gsco.collab.arms import ARMS
    from gsco.collab.cases import fill_case, missing_evidence
    from gsco.collab.tasks import Task

    options = ["effusion", "mass", "nodule"] if multi_label else ["normal", "tumor"]
    cfg = load_config(GscoConfig, None, {"dataset": "chestmnist" if multi_label else "pcam200", "options": options})
    task, case, spec = Task.of(cfg), _complete_case(multi_label), ARMS[arm]
    prompt = fill_case(cfg, arm, case, task)
    assert "###" not in prompt and prompt.startswith(" ") and prompt.endswith(" ")  # the reference's form
    for writer, sentence in ((spec.rad, "most similar cases"), (spec.moed, "specialist models")):
        assert (sentence in prompt) == (writer is not None)
        if writer is not None:
            assert ",".join(writer(case, task)) in prompt
    assert missing_evidence(arm, [case]) is None
    for key in spec.evidence:
        reason = missing_evidence(arm, [case, {**case, "id": "x", key: None}])
        assert f"1 of 2 cases have no complete {key!r} (e.g. case x)" in reason


def test_a_cases_arms_asked_together_answer_as_arm_by_arm_and_resume_per_arm(tmp_path, vision_tower_calls):
    """share_prefix: the arms a case still lacks are asked in one batch about one image (the vision tower sees each
    case once, not once per arm), each arm keeps its own file and resume, and every file equals the arm-by-arm
    run's (share_prefix=false), also when one arm was complete and another half done before."""
    from PIL import Image

    rng = np.random.default_rng(3)
    cases = []
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(tmp_path / f"s{i}.png")
        cases.append({"id": f"s{i}", "image": f"s{i}.png", "label": ["normal", "tumor"][i % 2],
                      "rad": ["tumor", "normal", "tumor"][: 1 + i % 3], "moed": ["tumor", "normal"]})
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    arms = ["generalist", "moed", "rad", "moed_rad"]
    seen = vision_tower_calls  # images through the vision tower, per call

    def gsco(out: str, share: bool, arms: list[str]) -> dict:
        return run(load_config(GscoConfig, None, {
            "dataset": "pcam200", "device": "cpu", "cases": str(tmp_path / "cases.json"),
            "out_dir": str(tmp_path / out),
            "max_new_tokens": 8, "eval_batch_size": 8, "share_prefix": share, "arms": arms}))

    gsco("arm_by_arm", False, arms)
    assert sum(seen) == 5 * len(arms)
    seen.clear()
    gsco("together", True, arms)
    assert sum(seen) == 5 and len(seen) == 3  # two cases (8 questions) per batch, each image once
    files = {arm: (tmp_path / "arm_by_arm" / f"{arm}_predictions.jsonl").read_text() for arm in arms}
    assert all((tmp_path / "together" / f"{arm}_predictions.jsonl").read_text() == files[arm] for arm in arms)
    assert len({json.loads(line)["answer"] for arm in arms for line in files[arm].splitlines()}) > 1
    gsco("resumed", True, ["moed"])  # one arm complete, another half done: only what is missing is asked
    half = "".join(files["rad"].splitlines(keepends=True)[:2])
    (tmp_path / "resumed" / "rad_predictions.jsonl").write_text(half)
    (tmp_path / "resumed" / "rad_predictions.manifest.json").write_text(
        (tmp_path / "together" / "rad_predictions.manifest.json").read_text())
    seen.clear()
    result = gsco("resumed", True, arms)
    assert sum(seen) == 5  # every case still lacks generalist and moed_rad
    assert all((tmp_path / "resumed" / f"{arm}_predictions.jsonl").read_text() == files[arm] for arm in arms)
    assert all(result["arms"][arm]["n"] == 5 for arm in arms)


def test_damaged_json_inputs_are_one_line_naming_the_file_and_what_it_should_be(tmp_path):
    import re

    from gsco.collab.build_cases import load_results
    from gsco.collab.cases import read_cases
    from gsco.config import ConfigError
    from gsco.data.r2gen import read_r2gen_annotation

    bad = tmp_path / "bad.json"
    bad.write_text('{"cases": [1, ')
    for call, error, what in ((read_cases, ConfigError, "case file"), (lambda p: load_results([p]), DatasetError,
                              "specialist results file"), (read_r2gen_annotation, DatasetError, "R2Gen annotation")):
        with pytest.raises(error, match=re.escape(f"{bad}: not a readable {what} (JSON) (")) as info:
            call(bad)
        assert "\n" not in str(info.value)
