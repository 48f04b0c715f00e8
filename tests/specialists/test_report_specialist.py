"""The R2GenGPT-style report specialist: report cleaning (on the real IU-Xray reports), model, checkpoints."""

import json
from pathlib import Path

import pytest

from gsco.config import ConfigError
from gsco.specialists.report.clean import clean_report

from conftest import REPO, shared_path


@pytest.fixture(scope="module")
def iu_reports() -> dict[str, str]:
    data = json.loads(shared_path("data", "iu_xray", "annotation.json").read_text())
    return {r["id"]: r["report"] for split in data.values() for r in split}


# Hand-checked against R2Gen's rules: numbering dropped (also the "1. " inside "L1. A" — R2Gen's own quirk),
# doubled dots collapsed, punctuation and the ':'..'[' range (so '<', '>', '[') removed, hyphens kept, an empty
# sentence kept.
IU_CASES = {
    "CXR3260_IM-1547": "cardiomegaly andor pericardial effusion . right base opacity xxxx combination of pleural "
                       "effusion and atelectasisairspace disease . cannot exclude elevation right hemidiaphragm . "
                       "left lung relatively clear . limited exam due to underpenetrated technique related to large "
                       "patient habitus . no evidence of pneumothorax .",
    "CXR3368_IM-1620-0001": "the trachea is midline . the cardiomediastinal silhouette is normal . low lung volumes "
                            "causing mild bronchovascular crowding . no focal airspace consolidation is seen . there "
                            "is no pleural effusion . there is no large pneumothorax . visualized bony structures "
                            "reveal no acute abnormalities . pression low lung volumes without acute cardiopulmonary "
                            "findings .  .",
    "CXR2192_IM-0802": "no focal lung consolidation . no pneumothorax or pleural effusionheart size and pulmonary "
                       "vascularity are within normal limitsminimal degenerative changes of the thoracic spine . the "
                       "previouslybrdescribed xxxx deformity in the midthoracic spine is again seen . there is "
                       "subcutaneous shunt catheter tubing along the anterior chest wall .",
    "CXR2542_IM-1053": "the xxxx examination consists of frontal and lateral radiographs of the chest . the "
                       "cardiomediastinal contours are within normal limits . pulmonary vascularity is within normal "
                       "limits . no focal consolidation pleural effusion or pneumothorax identified . the visualized "
                       "osseous structures and upper abdomen are unremarkable .",
    "CXR3038_IM-1411": "the heart and mediastinum are unremarkable . there is a calcified granuloma within the left "
                       "upper lobe . the lungs are clear without infiltrate . there is no effusion or pneumothorax . "
                       "there are acute mild anterior xxxx deformities identified at l1-l2 . there is retropulsion of "
                       "the posterior vertebral body of la ct of the lumbar spine was already ordered at the time of "
                       "this dictation .",
    "CXR1647_IM-0424": "the lungs are clear bilaterally . specifically no evidence of focal consolidation "
                       "pneumothorax or pleural effusion . cardio mediastinal silhouette is unremarkable . visualized "
                       "osseous structures of the thorax are without acute abnormality .",
}


@pytest.mark.e2e
@pytest.mark.parametrize("study", sorted(IU_CASES))
def test_iu_xray_cleaning_matches_hand_checked_reports(iu_reports, study):
    assert clean_report(iu_reports[study], "iu_xray") == IU_CASES[study]


@pytest.mark.e2e
def test_every_real_iu_xray_report_cleans_to_lower_case_sentences(iu_reports):
    assert len(iu_reports) == 2955
    for report in iu_reports.values():
        cleaned = clean_report(report)
        assert cleaned.endswith(" .") and cleaned == cleaned.lower()
        assert not set(cleaned) & set(",;:()[]<>\"'/")


def test_mimic_cxr_cleaning_keeps_colons_and_hyphens():
    report = "FINDINGS:\n1. Low lung volumes..  2. No  effusion (left) or pneumo-thorax __ seen. \nIMPRESSION: none"
    assert clean_report(report, "mimic_cxr") == \
        "findings : low lung volumes . no effusion left or pneumo-thorax  seen . impression : none ."
    with pytest.raises(ValueError, match="'chexpert' is not one of iu_xray, mimic_cxr"):
        clean_report("x", "chexpert")


@pytest.mark.parametrize("dataset", sorted(__import__("gsco.specialists.report.clean", fromlist=["RULES"]).RULES))
def test_each_cleaning_rule_gives_lower_case_sentences_without_its_removed_characters(dataset):
    from gsco.specialists.report.clean import RULES

    report = "FINDINGS: The Heart is normal (size 12). 2. No effusion; lungs clear!. IMPRESSION: 'none'"
    cleaned = clean_report(report, dataset)
    sentences = cleaned[:-2].split(" . ")
    assert cleaned.endswith(" .") and cleaned == cleaned.lower() and len(sentences) == 3
    assert not set("".join(sentences)) & (RULES[dataset].removed | set("\"'/\\"))


def test_a_new_cleaning_rule_is_one_entry_and_scores_a_report_ablation(tmp_path, monkeypatch):
    from PIL import Image

    from gsco.collab.config import GscoConfig
    from gsco.config import load_config
    from gsco.recipes.gsco import run
    from gsco.specialists.report import clean

    digits = frozenset("0123456789")
    monkeypatch.setitem(clean.RULES, "no_digits", clean.CleaningRule(clean.RULES["iu_xray"].removed | digits))
    assert clean_report("Heart size 12. Lungs 3 clear.", "no_digits") == "heart size  . lungs  clear ."
    cases = []
    for i in range(3):
        Image.new("RGB", (32, 32), (10 * i, 0, 0)).save(tmp_path / f"s{i}.png")
        # a case file's labels are cleaned references already (build_cases cleans them); answers are cleaned to score
        cases.append({"id": f"s{i}", "image": f"s{i}.png", "label": "the heart size is cm . lungs are clear .",
                      "moed": [f"The heart size is {i + 5} cm. Lungs are clear."], "rad": ["Normal chest."]})
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    scores = {}
    for rule in ("iu_xray", "no_digits"):
        cfg = load_config(GscoConfig, REPO / "configs/gsco/iu_xray.yaml", {
            "cases": str(tmp_path / "cases.json"), "image_root": str(tmp_path), "out_dir": str(tmp_path / rule),
            "report_cleaning": rule, "meteor": False, "arms": ["specialist_0", "generalist"], "device": "cpu",
            "max_new_tokens": 4})
        scores[rule] = run(cfg)["arms"]["specialist_0"]
    assert scores["no_digits"]["BLEU_4"] > 0.99 > scores["iu_xray"]["BLEU_4"]  # only the digits differed
    with pytest.raises(ConfigError, match="'report_cleaning': 'chexpert'"):
        load_config(GscoConfig, REPO / "configs/gsco/iu_xray.yaml", {"report_cleaning": "chexpert"})


# ------------------------------------------------------------------------------------- the official checkpoint
def r2gengpt_swin_names(depths: list[int]) -> list[str]:
    """SwinModel's parameter names as transformers 4.30 (R2GenGPT's) writes them, listed by hand."""
    names = ["embeddings.patch_embeddings.projection.weight", "embeddings.patch_embeddings.projection.bias",
             "embeddings.norm.weight", "embeddings.norm.bias"]
    for i, depth in enumerate(depths):
        for j in range(depth):
            block = f"encoder.layers.{i}.blocks.{j}."
            names += [block + "layernorm_before.weight", block + "layernorm_before.bias",
                      block + "attention.self.relative_position_bias_table"]
            names += [block + f"attention.self.{p}.{w}" for p in ("query", "key", "value") for w in ("weight", "bias")]
            names += [block + f"attention.output.dense.{w}" for w in ("weight", "bias")]
            names += [block + "layernorm_after.weight", block + "layernorm_after.bias"]
            names += [block + f"{p}.dense.{w}" for p in ("intermediate", "output") for w in ("weight", "bias")]
        if i < len(depths) - 1:
            names += [f"encoder.layers.{i}.downsample.reduction.weight", f"encoder.layers.{i}.downsample.norm.weight",
                      f"encoder.layers.{i}.downsample.norm.bias"]
    return names + ["layernorm.weight", "layernorm.bias"]


@pytest.fixture
def lightning_hparams(monkeypatch):
    """A class pickled under Lightning 2.0's name for its hyper-parameter dict (R2GenGPT's ``config`` entry)."""
    import sys
    import types

    module = types.ModuleType("lightning.fabric.utilities.data")

    class AttributeDict(dict):
        pass

    AttributeDict.__module__ = module.__name__
    AttributeDict.__qualname__ = "AttributeDict"
    module.AttributeDict = AttributeDict
    for name in ("lightning", "lightning.fabric", "lightning.fabric.utilities"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return AttributeDict


def official_state(mode: str, model) -> dict:
    """R2GenGPT's trainable keys for ``mode``, with shapes looked up in our model, filled with random values."""
    import torch

    from gsco.specialists.report.model import TINY_SWIN, from_r2gengpt_key

    keys = ["llama_proj.weight", "llama_proj.bias", "layer_norm.weight", "layer_norm.bias"]
    if mode == "delta":
        keys += [f"visual_encoder.base_model.model.encoder.layers.{i}.blocks.{j}.attention.self.{p}.lora_{ab}"
                 ".default.weight" for i, depth in enumerate(TINY_SWIN["depths"]) for j in range(depth)
                 for p in ("query", "value") for ab in "AB"]
    if mode == "deep":
        keys += ["visual_encoder." + n for n in r2gengpt_swin_names(TINY_SWIN["depths"])]
    params = dict(model.named_parameters())
    gen = torch.Generator().manual_seed(0)
    return {k: torch.randn(params[from_r2gengpt_key(k)].shape, generator=gen) for k in keys}


@pytest.mark.parametrize("mode", ["shallow", "delta", "deep"])
def test_an_official_r2gengpt_checkpoint_loads_with_no_missing_or_unexpected_key(tmp_path, lightning_hparams, mode):
    import torch

    from gsco.specialists.report.model import (
        ReportModelSettings,
        build_report_model,
        from_r2gengpt_key,
        load_report_checkpoint,
        save_report_checkpoint,
    )

    model, _ = build_report_model(ReportModelSettings(mode=mode))
    state = official_state(mode, model)
    path = tmp_path / "checkpoint_epoch13_step1806_bleu0.161532_cider0.530213.pth"
    hparams = lightning_hparams(dataset="iu_xray", vis_use_lora=mode == "delta", freeze_vm=mode != "deep", vis_r=16)
    torch.save({"model": state, "config": hparams, "epoch": 13, "step": 1806}, path)

    extra = load_report_checkpoint(model, path)
    assert extra["epoch"] == 13 and extra["config"]["vis_r"] == 16
    if mode == "shallow":  # hyper-parameters pickled as an argparse.Namespace load too
        import argparse

        torch.save({"model": state, "config": argparse.Namespace(vis_r=8, dataset="iu_xray")}, path)
        assert load_report_checkpoint(model, path)["config"] == {"vis_r": 8, "dataset": "iu_xray"}
    trainable = model.trainable_state_dict()
    assert sorted(trainable) == sorted(from_r2gengpt_key(k) for k in state)  # nothing missing, nothing extra
    for key, value in state.items():
        assert torch.equal(trainable[from_r2gengpt_key(key)], value)
    # ours are written in the same layout, under the same names
    ours = save_report_checkpoint(model, tmp_path / "ours.pth", {"mode": mode}, 1, 2)
    saved = torch.load(ours, weights_only=True)
    assert sorted(saved["model"]) == sorted(state) and saved["epoch"] == 1


def test_checkpoint_errors_name_the_problem(tmp_path, lightning_hparams):
    import torch

    from gsco.config import ConfigError
    from gsco.specialists.report.model import ReportModelSettings, build_report_model, load_report_checkpoint

    deep, _ = build_report_model(ReportModelSettings(mode="deep"))
    shallow, _ = build_report_model(ReportModelSettings(mode="shallow"))
    torch.save({"model": official_state("deep", deep), "epoch": 0, "step": 0}, tmp_path / "deep.pth")
    with pytest.raises(ConfigError, match="holds 43 parameters mode 'shallow' keeps frozen"):
        load_report_checkpoint(shallow, tmp_path / "deep.pth")
    torch.save({"model": {"llama_proj.weight": torch.zeros(32, 16)}}, tmp_path / "part.pth")
    with pytest.raises(ConfigError, match="lacks 3 trainable parameters of mode 'shallow'"):
        load_report_checkpoint(shallow, tmp_path / "part.pth")
    torch.save({"model": official_state("shallow", shallow), "config": pytest.MonkeyPatch()}, tmp_path / "bad.pth")
    with pytest.raises(ConfigError, match="not plain weights or hyper-parameters; refusing"):
        load_report_checkpoint(shallow, tmp_path / "bad.pth")
    with pytest.raises(ConfigError, match="missing.pth does not exist"):
        load_report_checkpoint(shallow, tmp_path / "missing.pth")


# ------------------------------------------------------------------------------------- training and evaluation
def write_studies(root, sizes=(16, 4, 6)):
    """Real IU-Xray studies (ids, reports, two views each) with generated 64 px images, in the R2Gen layout."""
    import numpy as np
    from PIL import Image

    real = json.loads(shared_path("data", "iu_xray", "annotation.json").read_text())
    rng = np.random.default_rng(0)
    annotation = {}
    for split, n in zip(("train", "val", "test"), sizes):
        annotation[split] = real[split][:n]
        for study in annotation[split]:
            for view in study["image_path"]:
                (root / "images" / view).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(root / "images" / view)
    (root / "annotation.json").write_text(json.dumps(annotation))
    return annotation


def tiny_overrides(root) -> list[str]:
    """configs/report/tiny.yaml's settings as key=value overrides (with the test studies), so that the documented
    commands, written for R2GenGPT's recipe configs, run on the tiny preset here."""
    import yaml

    from gsco.specialists.report.config import ReportConfig

    from conftest import REPO

    shipped = yaml.safe_load((REPO / "configs/report/tiny.yaml").read_text())
    tiny = {}  # its sections' keys, flat: key=value reaches a key in any section
    for key, value in shipped.items():
        tiny.update(value if key in ReportConfig.SECTIONS else {key: value})
    tiny.update(annotation=str(root / "annotation.json"), image_root=str(root / "images"), device="cpu",
                learning_rate=3e-3, truncate_references=False)  # tiny_cfg's settings
    return [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in tiny.items() if k != "run_dir"]


def tiny_cfg(root, out, **overrides):
    from gsco.config import load_config
    from gsco.specialists.report.config import ReportConfig

    from conftest import REPO

    return load_config(ReportConfig, REPO / "configs/report/tiny.yaml", {
        "annotation": str(root / "annotation.json"), "image_root": str(root / "images"), "run_dir": str(out),
        "device": "cpu", "learning_rate": 3e-3, **overrides})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from gsco.specialists.report.train import train_report_specialist

    root = tmp_path_factory.mktemp("iu")
    annotation = write_studies(root)
    cfg = tiny_cfg(root, root / "run", epochs=4)
    result = train_report_specialist(cfg)
    return root, cfg, result, annotation


@pytest.mark.e2e
def test_tiny_preset_trains_on_real_reports_and_its_loss_falls(trained):
    import torch

    from gsco.specialists.report.model import build_report_model, load_report_checkpoint

    root, cfg, result, annotation = trained
    losses = [h["train_loss"] for h in result["history"]]
    assert len(losses) == 4 and losses[-1] < losses[0] - 0.3, losses
    history = [json.loads(line) for line in (root / "run" / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4] and "CIDEr" in history[0]["val"]
    val = [json.loads(line) for line in (root / "run" / "val" / "epoch4_reports.jsonl").read_text().splitlines()]
    assert [r["id"] for r in val] == [s["id"] for s in annotation["val"]]
    assert val[0]["annotation"] == clean_report(annotation["val"][0]["report"])
    best = json.loads((root / "run" / "best_checkpoint.json").read_text())
    assert best["score"] == max(h["val_score"] for h in history)
    saved = torch.load(best["checkpoint"], weights_only=True)
    assert set(saved) == {"model", "config", "epoch", "step"} and saved["config"]["mode"] == "deep"
    fresh, _ = build_report_model(cfg.model_settings())
    load_report_checkpoint(fresh, best["checkpoint"])  # every trainable key, nothing else


@pytest.mark.e2e
def test_training_stopped_midway_resumes_to_the_same_weights(trained, tmp_path):
    import torch

    from gsco.specialists.report.train import train_report_specialist

    root = trained[0]
    full = train_report_specialist(tiny_cfg(root, tmp_path / "full", epochs=2, save_every_steps=1000))
    stopped = train_report_specialist(tiny_cfg(root, tmp_path / "cut", epochs=2, save_every_steps=1000),
                                      stop_after_steps=3)  # in the middle of epoch 2 (2 batches per epoch)
    assert stopped["stopped_at_step"] == 3 and len(stopped["history"]) == 1
    resumed = train_report_specialist(tiny_cfg(root, tmp_path / "cut", epochs=2, save_every_steps=1000))
    assert [h["epoch"] for h in resumed["history"]] == [2]
    assert resumed["history"][0]["step"] == full["history"][1]["step"] == 4
    weights = []
    for run in ("full", "cut"):
        state = torch.load(tmp_path / run / "last_state.pt", weights_only=True)["model"]
        weights.append(state)
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        assert torch.allclose(weights[0][key], weights[1][key], atol=1e-6), key
    lines = (tmp_path / "cut" / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    import fcntl

    from gsco.runtime import OutputLockedError

    with open(tmp_path / "cut" / ".gsco.lock", "w") as held:  # another training run holds run_dir
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(OutputLockedError, match=r"cut is being written by another run .*\(run_dir=\.\.\.\)"):
            train_report_specialist(tiny_cfg(root, tmp_path / "cut", epochs=3, save_every_steps=1000))
    assert len((tmp_path / "cut" / "history.jsonl").read_text().splitlines()) == 2


@pytest.mark.e2e
def test_evaluation_writes_reports_and_metrics_and_resumes_after_a_kill(trained, tmp_path):
    import subprocess

    from conftest import REPO, kill_when_written
    from doc_commands import documented_argv, documented_env

    root, cfg, _, annotation = trained
    best = json.loads((root / "run" / "best_checkpoint.json").read_text())["checkpoint"]

    def command(out):
        return documented_argv(
            "TASK=report CONFIG=configs/report/iu_xray_shallow.yaml CHECKPOINT=ckpt.pth "
            "ANNOTATION=data/iu_xray/annotation.json IMAGE_ROOT=data/iu_xray/images OUT_DIR=outputs/report/eval "
            "bash inference_specialist.sh",
            replace={"ckpt.pth": best, "data/iu_xray/annotation.json": str(root / "annotation.json"),
                     "data/iu_xray/images": str(root / "images"), "outputs/report/eval": str(out)},
            append=[*tiny_overrides(root), "eval_batch_size=1"])

    env = documented_env()
    whole = subprocess.run(command(tmp_path / "whole"), env=env, capture_output=True, text=True, cwd=REPO)
    assert whole.returncode == 0, whole.stderr[-2000:]
    reports = (tmp_path / "whole" / "test_reports.jsonl").read_text()
    rows = [json.loads(line) for line in reports.splitlines()]
    assert [r["id"] for r in rows] == [s["id"] for s in annotation["test"]]
    assert rows[2]["annotation"] == clean_report(annotation["test"][2]["report"]) and rows[0]["answer"]
    metrics = json.loads((tmp_path / "whole" / "test_metrics.json").read_text())
    assert metrics["n_answered"] == 6 and set(metrics["metrics"]) == {
        "BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4", "ROUGE_L", "CIDEr"}
    assert "BLEU_4" in whole.stdout and "test_reports.jsonl" in whole.stdout

    out = tmp_path / "killed" / "test_reports.jsonl"
    kept = kill_when_written(command(tmp_path / "killed"), env, out, 2)
    assert 2 <= kept < 6
    again = subprocess.run(command(tmp_path / "killed"), env=env, capture_output=True, text=True, cwd=REPO)
    assert again.returncode == 0 and f"{6 - kept} to go" in again.stderr
    assert out.read_text() == reports


@pytest.mark.e2e
def test_report_collaboration_ablation_from_one_command(trained, tmp_path):
    """Specialist reports + retrieval -> report cases -> `inference_gsco.sh` (DATASET=iu_xray) -> one table."""
    from gsco.collab.prompts import fill_gsco_prompt
    from gsco.metrics.report import report_metrics

    from doc_commands import run_documented

    root, cfg, _, annotation = trained
    best = json.loads((root / "run" / "best_checkpoint.json").read_text())["checkpoint"]
    run_documented("TASK=report CONFIG=configs/report/iu_xray_shallow.yaml CHECKPOINT=ckpt.pth "
                   "OUT_DIR=outputs/report/eval bash inference_specialist.sh",
                   replace={"ckpt.pth": best, "outputs/report/eval": str(tmp_path / "eval")},
                   append=[*tiny_overrides(root), "search_top_n=5", "eval_batch_size=3"])
    retrieval = json.loads((tmp_path / "eval" / "test_retrieval.json").read_text())
    train_ids = {s["id"] for s in annotation["train"]}
    assert retrieval["ids"] == [s["id"] for s in annotation["test"]]
    assert all(len(n) == 5 and set(n) <= train_ids for n in retrieval["train_ids"])
    assert all(d == sorted(d) for d in retrieval["distances"])

    # the documented command (it once failed with a NameError that in-process calls could not see)
    run_documented("python -m gsco.collab.build_cases --config configs/gsco/iu_xray.yaml "
                   "specialists=[outputs/report/eval/test_reports.jsonl] annotation=data/iu_xray/annotation.json "
                   "rad_k=3 "
                   "cases=outputs/gsco/iu_xray_cases.json",
                   replace={"outputs/report/eval": str(tmp_path / "eval"),
                            "data/iu_xray/annotation.json": str(root / "annotation.json"),
                            "outputs/gsco/iu_xray_cases.json": str(tmp_path / "cases.json")})
    cases_path = tmp_path / "cases.json"
    # the same keys in-process (no --config: the report task's config) build the same file
    from gsco.collab.build_cases import main as build_main

    assert build_main(["task=report", f"specialists={tmp_path / 'eval' / 'test_reports.jsonl'}",
                       f"retrieval={tmp_path / 'eval' / 'test_retrieval.json'}",
                       f"annotation={root / 'annotation.json'}", "rad_k=3",
                       f"cases={tmp_path / 'cases_again.json'}"]) == 0
    assert (tmp_path / "cases_again.json").read_text() == cases_path.read_text()
    cases = json.loads(cases_path.read_text())
    train_reports = {s["id"]: clean_report(s["report"]) for s in annotation["train"]}
    assert cases[0]["rad"] == [train_reports[i] for i in retrieval["train_ids"][0][:3]]
    assert cases[0]["image"] == annotation["test"][0]["image_path"][0]

    proc = run_documented("DATASET=iu_xray MODEL=/path/to/meddr-hf IMAGE_ROOT=data/iu_xray/images "
                          "bash inference_gsco.sh",
                          replace={"/path/to/meddr-hf": "tiny", "data/iu_xray/images": str(root / "images")},
                          append=[f"cases={cases_path}", f"out_dir={tmp_path / 'gsco'}", "device=cpu",
                                  "max_new_tokens=12", "meteor=false"])
    table = json.loads((tmp_path / "gsco" / "ablation.json").read_text())
    assert list(table["arms"]) == ["specialist_0", "generalist", "moed", "rad", "moed_rad"]
    expected = report_metrics({str(i): c["label"] for i, c in enumerate(cases)},
                              {str(i): clean_report(c["moed"][0]) for i, c in enumerate(cases)}, "none", False)
    for key, value in expected.items():
        assert table["arms"]["specialist_0"][key] == pytest.approx(value)
    rows = [json.loads(line) for line in (tmp_path / "gsco" / "moed_rad_predictions.jsonl").read_text().splitlines()]
    template = (" You are a helpful medical assistant. Your task is report generation. You are given a chest X-ray "
                "image. The reports of the most similar cases are: ###RAD###. A specialist model wrote: ###MOED###. "
                "Write the findings section of the radiology report for this image. ")
    assert rows[1]["question"] == fill_gsco_prompt(template, cases[1]["rad"], cases[1]["moed"], sep=" | ")
    assert "parsed" not in rows[1] and rows[1]["annotation"] == cases[1]["label"]
    assert "| arm | n | BLEU_1 | BLEU_2 | BLEU_3 | BLEU_4 | ROUGE_L | CIDEr |" in proc.stdout
    assert (tmp_path / "gsco" / "ablation.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("name", ["tiny", "iu_xray_shallow", "mimic_cxr_shallow"])
def test_shipped_report_configs_load_and_name_missing_base_weights(name):
    from gsco.config import ConfigError, load_config
    from gsco.specialists.report.config import ReportConfig
    from gsco.specialists.report.model import build_report_model

    from conftest import REPO

    cfg = load_config(ReportConfig, REPO / f"configs/report/{name}.yaml")
    assert cfg.generation_kwargs()["num_beams"] == (1 if name == "tiny" else 3)
    if name != "tiny":
        assert (cfg.min_new_tokens, cfg.max_new_tokens) == ((40, 100) if name.startswith("iu") else (80, 120))
        with pytest.raises(ConfigError, match=r"key 'vision_model': .* is not a folder; R2GenGPT needs Swin-B 224"):
            build_report_model(cfg.model_settings())


@pytest.mark.e2e
def test_two_data_parallel_processes_share_each_epoch(trained, tmp_path):
    """torchrun with 2 CPU processes (gloo): each takes every other batch; one writes history and checkpoints."""
    from gsco.specialists.report.model import build_report_model, load_report_checkpoint

    from doc_commands import run_documented

    root = trained[0]
    run_documented("torchrun --standalone --nproc_per_node 2 -m gsco.specialists.report.train --config "
                   "configs/report/iu_xray_shallow.yaml vision_model=/models/swin-base-patch4-window7-224 "
                   "llm=/models/Llama-2-7b-chat-hf", env={"OMP_NUM_THREADS": "1"},
                   append=[*tiny_overrides(root), f"run_dir={tmp_path}", "epochs=2"])
    history = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [(h["epoch"], h["step"]) for h in history] == [(1, 1), (2, 2)]  # 2 batches per epoch, one per process
    best = json.loads((tmp_path / "best_checkpoint.json").read_text())
    model, _ = build_report_model(tiny_cfg(root, tmp_path).model_settings())
    load_report_checkpoint(model, best["checkpoint"])


@pytest.mark.e2e
def test_report_evaluation_with_two_data_parallel_processes_writes_the_same_file(trained, tmp_path):
    from gsco.specialists.report.evaluate import evaluate_reports

    from doc_commands import run_documented

    root = trained[0]
    one = evaluate_reports(tiny_cfg(root, root / "run", out_dir=str(tmp_path / "one"), eval_batch_size=2,
                                    search_top_n=0))
    reports = Path(one["reports"]).read_text()
    lines = reports.splitlines(keepends=True)
    (tmp_path / "two").mkdir()
    (tmp_path / "two" / "test_reports.jsonl").write_text(lines[0] + lines[1][:15])  # an interrupted earlier run
    best = json.loads((root / "run" / "best_checkpoint.json").read_text())["checkpoint"]
    proc = run_documented("TASK=report GPUS=4 CONFIG=configs/report/iu_xray_shallow.yaml CHECKPOINT=ckpt.pth "
                          "OUT_DIR=outputs/report/eval bash inference_specialist.sh", env={"OMP_NUM_THREADS": "1"},
                          replace={"GPUS=4": "GPUS=2", "ckpt.pth": best, "outputs/report/eval": str(tmp_path / "two")},
                          append=[*tiny_overrides(root), "eval_batch_size=2", "search_top_n=0"])
    assert "1 of 6 studies already written, 5 to go (rank 1 of 2" in proc.stderr
    assert (tmp_path / "two" / "test_reports.jsonl").read_text() == reports
    assert not list((tmp_path / "two").glob("*.rank*.jsonl"))
    assert json.loads((tmp_path / "two" / "test_metrics.json").read_text())["metrics"] == one["metrics"]


@pytest.mark.e2e
def test_truncated_references_are_cut_to_max_length_tokens_as_r2gengpt_scores_them(iu_reports):
    from gsco.specialists.report.model import ReportModelSettings, build_report_model

    model, _ = build_report_model(ReportModelSettings(max_length=20))
    report = clean_report(iu_reports["CXR1647_IM-0424"])
    assert model.truncated_reference(report) == report[:20].strip() == "the lungs are clear"  # 20 byte tokens
    short = "no acute disease ."
    assert model.truncated_reference(short) == short


def test_an_official_checkpoint_with_llm_lora_loads_and_generates(tmp_path):
    import torch

    from gsco.config import ConfigError
    from gsco.specialists.report.model import (
        TINY_LLAMA,
        ReportModelSettings,
        build_report_model,
        load_report_checkpoint,
    )

    model, _ = build_report_model(ReportModelSettings(mode="shallow", llm_use_lora=True))
    params = dict(model.named_parameters())
    keys = ["llama_proj.weight", "llama_proj.bias", "layer_norm.weight", "layer_norm.bias"]
    keys += [f"llama_model.base_model.model.model.layers.{i}.self_attn.{p}_proj.lora_{ab}.default.weight"
             for i in range(TINY_LLAMA["num_hidden_layers"]) for p in "qv" for ab in "AB"]
    state = {k: torch.randn(params[k].shape) for k in keys}
    torch.save({"model": state, "epoch": 1, "step": 9}, tmp_path / "llm_lora.pth")
    load_report_checkpoint(model, tmp_path / "llm_lora.pth")
    assert sorted(model.trainable_state_dict()) == sorted(keys)
    reports = model.generate(torch.randn(1, 2, 3, 56, 56), torch.ones(1, 2, dtype=torch.bool), max_new_tokens=4)
    assert len(reports) == 1
    with pytest.raises(ConfigError, match="exclude each other"):
        build_report_model(ReportModelSettings(llm_use_lora=True, train_llm=True))


@pytest.mark.e2e
def test_training_split_reports_become_hint_samples_for_the_generalist(trained, tmp_path):
    """Evaluation on the training split (retrieval leaves each study out) -> report cases -> samples asked with the
    report arms' prompts, answered with the cleaned reference."""
    from gsco.collab.build_cases import build_report_cases
    from gsco.collab.cases import fill_case
    from gsco.collab.config import GscoConfig
    from gsco.collab.hint_samples import write_hint_samples
    from gsco.collab.tasks import Task
    from gsco.config import ConfigError, load_config
    from gsco.specialists.report.evaluate import evaluate_reports

    from conftest import REPO

    root, _, _, annotation = trained
    result = evaluate_reports(tiny_cfg(root, root / "run", out_dir=str(tmp_path), split="train", search_top_n=4,
                                       meteor=False))
    retrieval = json.loads(Path(result["retrieval"]).read_text())
    assert all(study not in near for study, near in zip(retrieval["ids"], retrieval["train_ids"]))
    cases_path = build_report_cases(tmp_path / "train_reports.jsonl", result["retrieval"], root / "annotation.json",
                                    tmp_path / "train_cases.json", k=2)
    cases = json.loads(cases_path.read_text())
    assert len(cases) == 16 and {c["split"] for c in cases} == {"train"}
    cfg = load_config(GscoConfig, REPO / "configs/gsco/iu_xray.yaml", {"image_root": str(root / "images")})
    samples = json.loads(write_hint_samples(cfg, cases_path, tmp_path / "hints.json").read_text())
    assert len(samples) == 16 * 4
    by_id = {s["id"]: s for s in samples}
    sample = by_id[f"{cases[5]['id']}:moed_rad"]
    assert sample["conversations"][0]["value"] == "<image>\n" + fill_case(cfg, "moed_rad", cases[5], Task.of(cfg))
    assert sample["conversations"][1]["value"] == clean_report(annotation["train"][5]["report"])
    assert (tmp_path / sample["image"]).resolve() == (root / "images" / annotation["train"][5]["image_path"][0])
    with pytest.raises(ConfigError, match=r"arms \['rad_counts'\] ask no generalist"):
        write_hint_samples(cfg, cases_path, tmp_path / "x.json", arms=["rad_counts"])


@pytest.mark.e2e
def test_readme_report_training_command(trained, tmp_path):
    """R2GenGPT's IU-Xray recipe as README runs it, on the tiny preset (overrides) for one epoch of 8 studies."""
    from doc_commands import run_documented

    root = trained[0]
    proc = run_documented("python -m gsco.specialists.report.train --config configs/report/iu_xray_shallow.yaml "
                          "vision_model=/models/swin-base-patch4-window7-224 llm=/models/Llama-2-7b-chat-hf",
                          append=[*tiny_overrides(root), f"run_dir={tmp_path}", "epochs=1", "limit=8"])
    history = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [(h["epoch"], h["step"]) for h in history] == [(1, 1)] and "best checkpoint:" in proc.stdout
