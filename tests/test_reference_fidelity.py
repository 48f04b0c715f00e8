"""Where our configs and code say "as the reference", compare with the reference's own construction.

Prompts: the reference's literal evaluated the way the reference evaluates it (tests/reference_sources.py), compared
byte for byte with what we build and what the model reads. Recipes: each value of a recipe config against the
reference script's flag or default, parsed from the script's text.
"""

import json
import logging
import shutil

import pytest
import yaml

from gsco.config import load_config

import reference_sources as ref
from conftest import REPO, shared_path

# ------------------------------------------------------------------------------------------------------- prompts
CASES = [{"id": "a", "image": "a.png", "label": "tumor", "rad": ["tumor", "tumor", "normal"],
          "moed": ["tumor", "normal", "tumor"]},
         {"id": "b", "image": "b.png", "label": "normal", "rad": ["normal"], "moed": ["normal"]}]


@pytest.fixture(scope="module")
def tiny_processor():
    from gsco.meddr.presets import build_from_preset

    return build_from_preset("tiny")[1]


def test_gsco_pcam200_prompt_is_byte_equal_to_the_references(tiny_processor):
    from gsco.collab.cases import fill_case, template_for
    from gsco.collab.config import GscoConfig
    from gsco.collab.tasks import Task

    cfg = load_config(GscoConfig, REPO / "configs/gsco/pcam200.yaml")
    task = Task.of(cfg)
    assert template_for(cfg, "moed_rad", task) == ref.GSCO_PCAM200_PROMPT
    assert ref.GSCO_PCAM200_PROMPT.startswith(" You are") and ref.GSCO_PCAM200_PROMPT.endswith("option. ")
    for case in CASES:
        question = fill_case(cfg, "moed_rad", case, task)
        assert question == ref.gsco_fill(ref.GSCO_PCAM200_PROMPT, case)
        # ... and the text the model reads is the reference's Hermes-2 conversation around it
        rendered = tiny_processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}],
            add_generation_prompt=True, tokenize=False)
        expanded = rendered.replace("<IMG_CONTEXT>\n", "<img>" + "<IMG_CONTEXT>" * 16 + "</img>\n")
        assert expanded == ref.hermes2_prompt(question, 16)
    # the arms without one of the hints drop its sentence and keep the reference's spacing
    moed_only = template_for(cfg, "moed", task)
    assert moed_only == ref.GSCO_PCAM200_PROMPT.replace(" The diagnoses of the most similar cases are ###RAD###.", "")
    stripped = load_config(GscoConfig, REPO / "configs/gsco/pcam200.yaml", {"prompt_style": "stripped"})
    assert template_for(stripped, "moed_rad", task) == ref.GSCO_PCAM200_PROMPT.strip()


def test_gsco_decoding_is_the_references():
    from gsco.collab.config import GscoConfig

    cfg = load_config(GscoConfig, REPO / "configs/gsco/pcam200.yaml")
    assert cfg.max_new_tokens == ref.GSCO_GENERATION["max_new_tokens"] == 512
    assert GscoConfig().max_new_tokens == 512  # greedy (num_beams 1, no sampling) is the only decoding GSCo runs


@pytest.mark.parametrize("name, literal, row_question", [
    ("iu_xray", ref.MRG_PROMPT, None),
    ("pcam200", ref.PCAM200_PROMPT, "Is this tumor?"),  # a row's own question does not replace the reference prompt
    ("pmcvqa", ref.PMCVQA_PROMPT, "What modality is shown in the image"),
])
def test_meddr_reference_prompts_are_byte_equal_to_the_references(tmp_path, name, literal, row_question):
    from gsco.recipes.evaluate import EvalConfig, read_metafile

    row = {"id": 0, "split": "test", "image": "x.png", "question_id": 0,
           "answer": "tumor" if name == "pcam200" else "a"}
    if row_question is not None:
        row["question"] = row_question
    (tmp_path / "meta.jsonl").write_text(json.dumps(row) + "\n")
    cfg = load_config(EvalConfig, REPO / f"configs/meddr/reference/{name}.yaml",
                      {"metafile": str(tmp_path / "meta.jsonl")})
    (item,) = read_metafile(cfg)
    assert item.question == ref.meddr_question(literal, row_question)
    assert item.question.encode() == ref.meddr_question(literal, row_question).encode()


def test_pmcvqa_reference_prompt_keeps_the_missing_spaces():
    assert ref.PMCVQA_PROMPT == ("You are a helpful medical assistant.You are require to answer the question based on "
                                 "the medical image.The question is {}.")


@pytest.mark.parametrize("name, dataset", [("iu_xray", "iumrg"), ("pmcvqa", "pmcvqa"), ("pcam200", "retoct")])
def test_meddr_reference_configs_decode_as_inference_meddr_py(name, dataset):
    from gsco.recipes.evaluate import EvalConfig, generation_kwargs

    cfg = load_config(EvalConfig, REPO / f"configs/meddr/reference/{name}.yaml")
    assert cfg.max_new_tokens == ref.MEDDR_MAX_NEW_TOKENS[dataset]
    assert cfg.min_new_tokens == ref.MEDDR_GENERATION["min_new_tokens"]
    assert cfg.length_penalty == ref.MEDDR_GENERATION["length_penalty"]
    assert cfg.num_beams == ref.MEDDR_NUM_BEAMS_OVER_30B  # MedDr has 40B parameters
    assert cfg.eval_batch_size == 1 and cfg.row_question is False and cfg.system is None
    assert generation_kwargs(cfg) == {"min_new_tokens": 1}  # length_penalty 1 is transformers' own default


@pytest.mark.e2e
def test_r2gen_metafile_is_byte_identical_to_meddrs_iu_xray_metafile(tmp_path):
    """MedDr's own data/iu_mrg_meta.jsonl (1,180 rows, one per image) has SHA-256 ca31e98f...; our converter writes
    the same bytes from the R2Gen annotation."""
    import hashlib

    from gsco.data.r2gen import r2gen_to_metafile

    out = tmp_path / "iu_mrg_meta.jsonl"
    assert r2gen_to_metafile(shared_path("data", "iu_xray", "annotation.json"), "test", out, "each", "images/") == 1180
    assert hashlib.sha256(out.read_bytes()).hexdigest() == \
        "ca31e98fc67d98f0549ebd6d37f9e327715e5a90a4edb1be9f65fd3d4ba31f1c"


# ------------------------------------------------------------------------------------------------------- recipes
def test_meddr_lora_recipe_is_train_sh():
    from gsco.recipes.finetune import LLM_LORA_MODULES, FinetuneConfig

    flags = ref.script_flags(ref.MEDDR_TRAIN_SH)
    cfg = load_config(FinetuneConfig, REPO / "configs/meddr/finetune_meddr_lora.yaml", {"model": "x", "data": "y"})
    truth = {"True": True, "False": False}
    assert cfg.freeze_vision is truth[flags["freeze_backbone"]]
    assert cfg.freeze_projector is truth[flags["freeze_mlp"]]
    assert cfg.mode == "lora" and truth[flags["freeze_llm"]]  # the LLM's own weights stay frozen under LoRA
    assert cfg.lora_r == int(flags["use_llm_lora"])
    assert cfg.lora_alpha == ref.MEDDR_LLM_LORA["alpha_per_r"] * cfg.lora_r
    assert cfg.lora_dropout == ref.MEDDR_LLM_LORA["dropout"]
    assert sorted(cfg.lora_modules) == sorted(ref.MEDDR_LLM_LORA["targets"]) == sorted(LLM_LORA_MODULES)
    assert cfg.learning_rate == float(flags["learning_rate"])
    assert cfg.epochs == float(flags["num_train_epochs"])
    assert cfg.weight_decay == float(flags["weight_decay"])
    assert cfg.warmup_ratio == float(flags["warmup_ratio"])
    assert cfg.lr_scheduler_type == flags["lr_scheduler_type"]
    assert cfg.max_seq_length == int(flags["max_seq_length"])
    assert cfg.group_by_length is truth[flags["group_by_length"]]
    assert cfg.gradient_checkpointing is truth[flags["grad_checkpoint"]]
    assert cfg.bf16 == "true" and truth[flags["bf16"]]
    assert cfg.save_steps == int(flags["save_steps"]) and cfg.save_total_limit == int(flags["save_total_limit"])
    assert cfg.logging_steps == int(flags["logging_steps"])
    assert cfg.num_workers == int(flags["dataloader_num_workers"])
    assert cfg.max_grad_norm == 1.0 and cfg.seed == 42  # transformers' TrainingArguments defaults, which it keeps
    assert json.loads((REPO / cfg.deepspeed).read_text())["zero_optimization"]["stage"] == 3
    env = ref.MEDDR_TRAIN_SH_ENV
    assert cfg.per_device_train_batch_size == env["PER_DEVICE_BATCH_SIZE"]
    # train.sh: GRADIENT_ACC=$((BATCH_SIZE / PER_DEVICE_BATCH_SIZE / GPUS)), its nodes not counted
    accumulation = env["BATCH_SIZE"] // env["PER_DEVICE_BATCH_SIZE"] // env["GPUS"]
    assert cfg.gradient_accumulation_steps == accumulation
    # so on its two nodes each step sees 4 x 8 x 2 x 4 = 256 samples: the header's command asks our train.sh (which
    # divides by every node's GPUs) for exactly that
    effective = env["PER_DEVICE_BATCH_SIZE"] * env["GPUS"] * env["NNODES"] * accumulation
    header = (REPO / "configs/meddr/finetune_meddr_lora.yaml").read_text().split("\nmodel:")[0]
    assert f"BATCH_SIZE={effective} " in header and f"GPUS={env['GPUS']} NNODES={env['NNODES']}" in header


def test_meddr_40b_preset_has_train_sh_model_settings():
    from gsco.meddr.presets import load_preset

    flags = ref.script_flags(ref.MEDDR_TRAIN_SH)
    preset = load_preset("meddr-40b")
    assert preset.vision["image_size"] == int(flags["force_image_size"])
    assert preset.downsample_ratio == float(flags["down_sample_ratio"])
    assert preset.vision_feature_layer == int(flags["vision_select_layer"])
    assert preset.pad2square is False and flags["pad2square"] == "False"


@pytest.mark.e2e
def test_converter_gives_an_absent_key_internvl_chats_default_and_says_so(tmp_path, caplog):
    from gsco.meddr.convert import convert

    src = tmp_path / "orig"
    shutil.copytree(shared_path("fixtures", "meddr_original_tiny"), src)
    config = json.loads((src / "config.json").read_text())
    assert config.pop("select_layer") == -1
    del config["vision_config"]["qk_normalization"]
    (src / "config.json").write_text(json.dumps(config))
    with caplog.at_level(logging.WARNING, logger="gsco.meddr.convert"):
        out = convert(src, tmp_path / "hf")
    converted = json.loads((out / "config.json").read_text())
    assert converted["vision_feature_layer"] == ref.INTERNVL_CHAT_CONFIG_DEFAULTS["select_layer"] == -4
    assert converted["vision_config"]["use_qk_norm"] is True  # InternVisionConfig: qk_normalization=True
    assert "has no select_layer: using InternVL-Chat's default -4" in caplog.text
    assert "has no vision_config.qk_normalization: using InternVL-Chat's default True" in caplog.text


def test_medmnist_plus_recipe_is_the_references():
    from gsco.specialists.config import SpecialistConfig

    cfg = load_config(SpecialistConfig, REPO / "configs/config.yaml")
    for key, value in ref.MEDMNIST_PLUS_CONFIG.items():
        assert getattr(cfg, key) == value, key
    assert cfg.pretrained is ref.MEDMNIST_PLUS_PRETRAINED and cfg.pretrained_path is None
    assert cfg.knn_metric == "euclidean" and cfg.k == ref.MEDMNIST_PLUS_KNN["n_neighbors"]
    assert cfg.mean is None and cfg.std is None  # the architecture's own normalisation (timm's pretrained config)


def test_medmnist_v2_preset_is_the_references():
    from gsco.specialists.config import SpecialistConfig

    v2 = ref.MEDMNIST_V2
    cfg = load_config(SpecialistConfig, REPO / "configs/specialists/medmnist_v2.yaml")
    assert cfg.learning_rate == v2["lr"] and cfg.gamma == v2["gamma"] and cfg.epochs == v2["num_epochs"]
    assert cfg.milestones == [int(f * v2["num_epochs"]) for f in v2["milestones_fraction"]]
    assert cfg.batch_size == v2["batch_size"] and cfg.optimizer == v2["optimizer"] and cfg.weight_decay == 0
    assert cfg.mean == v2["normalize_mean"] and cfg.std == v2["normalize_std"]
    assert cfg.as_rgb is v2["as_rgb"] and cfg.pretrained is False and cfg.stem == "cifar"
    assert cfg.selection_metric == v2["selection"] and cfg.early_stopping_patience == 0
    assert cfg.preprocess == "native" and cfg.scheduler == "multistep"


def test_medmnist_3d_preset_follows_the_references_3d_script():
    """configs/specialists/medmnist3d.yaml: MedMNIST3D/train_and_eval_pytorch.py's optimiser, schedule, batch and
    selection, volumes scaled to [0, 1] as medmnist's MedMNIST3D dataset gives them (x / 255: mean 0, std 1); the
    network is MONAI's 3D ResNet from random weights where the script's default is an ACS-converted 2D ResNet."""
    import numpy as np

    from gsco.data.datasets import Preprocess
    from gsco.specialists.config import SpecialistConfig

    v3 = ref.MEDMNIST_3D
    cfg = load_config(SpecialistConfig, REPO / "configs/specialists/medmnist3d.yaml")
    assert cfg.learning_rate == v3["lr"] and cfg.gamma == v3["gamma"] and cfg.epochs == v3["num_epochs"]
    assert cfg.milestones == [int(f * v3["num_epochs"]) for f in v3["milestones_fraction"]]
    assert cfg.batch_size == v3["batch_size"] and cfg.optimizer == v3["optimizer"] and cfg.weight_decay == 0
    assert cfg.selection_metric == v3["selection"] and cfg.pretrained is False and cfg.architecture == "resnet18"
    volume = np.arange(27, dtype=np.uint8).reshape(3, 3, 3) * 9
    x = Preprocess("native", cfg.mean, cfg.std, as_rgb=False, volume=True)(volume)
    assert x.shape == (1, 3, 3, 3) and np.allclose(x[0].numpy(), volume / 255.0)


@pytest.mark.parametrize("name, script", [("iu_xray_shallow", ref.R2GENGPT_IU_SHALLOW_SH),
                                          ("mimic_cxr_shallow", ref.R2GENGPT_MIMIC_SHALLOW_SH)])
def test_r2gengpt_recipes_are_its_scripts(name, script):
    from gsco.specialists.report.config import ReportConfig
    from gsco.specialists.report.train import autocast_precision

    flags = ref.script_flags(script)
    defaults = ref.R2GENGPT_DEFAULTS
    cfg = load_config(ReportConfig, REPO / f"configs/report/{name}.yaml")
    assert cfg.batch_size == int(flags["batch_size"]) and cfg.eval_batch_size == int(flags["val_batch_size"])
    assert cfg.max_length == int(flags["max_length"]) and cfg.epochs == int(flags["max_epochs"])
    assert cfg.min_new_tokens == int(flags["min_new_tokens"]) and cfg.max_new_tokens == int(flags["max_new_tokens"])
    assert cfg.repetition_penalty == float(flags["repetition_penalty"])
    assert cfg.length_penalty == float(flags["length_penalty"])
    assert cfg.learning_rate == float(flags.get("learning_rate", defaults["learning_rate"]))
    assert cfg.max_grad_norm == (float(flags["gradient_clip_val"]) if "gradient_clip_val" in flags else None)
    assert cfg.mode == "shallow" and flags["freeze_vm"] == "True" and flags["vis_use_lora"] == "False"
    assert cfg.num_beams == defaults["beam_size"] and cfg.end_sym == defaults["end_sym"]
    assert (cfg.vis_lora_r, cfg.vis_lora_alpha, cfg.llm_lora_r, cfg.llm_lora_alpha, cfg.lora_dropout) == (
        defaults["vis_r"], defaults["vis_alpha"], defaults["llm_r"], defaults["llm_alpha"], defaults["lora_dropout"])
    assert cfg.scorer_weights == dict(zip(("BLEU_4", "CIDEr"), defaults["weights"]))
    assert autocast_precision(cfg.precision, cuda=True) == "bf16" and defaults["precision"] == "bf16-mixed"
    assert autocast_precision(cfg.precision, cuda=False) == "no"
    assert cfg.drop_last is defaults["train_drop_last"] and cfg.truncate_references is True
    # torch AdamW's default; CosineAnnealingLR eta_min
    assert cfg.weight_decay == 0.01 and cfg.min_learning_rate == 1e-6


# -------------------------------------------------------------------------------------------- formats and rules
@pytest.mark.e2e
def test_every_real_iu_xray_report_cleans_as_r2gengpts_rules_clean_it():
    from gsco.specialists.report.clean import clean_report

    annotation = json.loads(shared_path("data", "iu_xray", "annotation.json").read_text())
    reports = [s["report"] for split in annotation.values() for s in split]
    assert len(reports) == 2955
    for report in reports:
        assert clean_report(report, "iu_xray") == ref.r2gen_clean(
            report, ref.IU_XRAY_REPORT_REPLACEMENTS, ref.IU_XRAY_SENTENCE_PATTERN), report


@pytest.mark.parametrize("report", [
    "FINDINGS:\nThe heart size is normal.  No focal consolidation.. 1. Left PICC. 2. No effusion__ seen.",
    "IMPRESSION: No acute cardiopulmonary process. [ET tube] {in place}; lines: unchanged!",
    "Lungs are clear... Heart: top-normal (stable). . The 'right' hemidiaphragm is elevated / unchanged.",
])
def test_mimic_cxr_reports_clean_as_r2gengpts_rules_clean_them(report):
    from gsco.specialists.report.clean import clean_report

    assert clean_report(report, "mimic_cxr") == ref.r2gen_clean(
        report, ref.MIMIC_CXR_REPORT_REPLACEMENTS, ref.MIMIC_CXR_SENTENCE_PATTERN)


def test_specialist_config_and_file_names_are_the_references(tmp_path):
    from gsco.specialists.build import RunFiles
    from gsco.specialists.config import SpecialistConfig

    cfg = load_config(SpecialistConfig, REPO / "configs/config.yaml", {"output_path": str(tmp_path)})
    keys = set(yaml.safe_load((REPO / "configs/config.yaml").read_text()))
    assert set(ref.SPECIALIST_CONFIG_KEYS) <= keys
    files = RunFiles(tmp_path, cfg.run_name)
    values = {k: getattr(cfg, k) for k in ref.SPECIALIST_CONFIG_KEYS}
    assert str(files.best) == ref.CHECKPOINT_FILE.format(**values)
    assert str(files.results) == ref.RESULTS_FILE.format(**values)


@pytest.mark.parametrize("name", ["iu_xray_shallow", "mimic_cxr_shallow", "tiny"])
def test_report_prompt_is_r2gengpts(name):
    from gsco.specialists.report.config import ReportConfig
    from gsco.specialists.report.model import PROMPT_TEMPLATE

    cfg = load_config(ReportConfig, REPO / f"configs/report/{name}.yaml")
    assert cfg.prompt == ref.R2GENGPT_PROMPT
    assert PROMPT_TEMPLATE.format(prompt=cfg.prompt) == ref.r2gengpt_prompt(ref.R2GENGPT_PROMPT)


@pytest.mark.e2e
@pytest.mark.parametrize("architecture", ["resnet18", "vit_base_patch16_224.dino", "test_vit"])
def test_medmnist_plus_preprocessing_is_its_transform(architecture, tmp_path):
    """MedMNIST+ train.py: mean/std from timm's default_cfg, then ToTensor -> Normalize -> Pad to 224 with zeros,
    (224 - size) // 2 on the left and top. Compared on a real 28 px BreastMNIST image through torchvision."""
    import numpy as np
    import timm
    import torch
    from torchvision import transforms

    from gsco.specialists.build import setup_specialist
    from gsco.specialists.config import SpecialistConfig

    cfg = load_config(SpecialistConfig, REPO / "configs/config.yaml",
                      {"architecture": architecture, "pretrained": False, "output_path": str(tmp_path),
                       "device": "cpu"})
    run = setup_specialist(cfg)
    image = np.load(shared_path("data", "medmnist", "breastmnist.npz"))["test_images"][0]
    default_cfg = timm.create_model(architecture, pretrained=False).default_cfg
    total = 224 - cfg.img_size
    reference = transforms.Compose([
        transforms.ToTensor(), transforms.Normalize(mean=default_cfg["mean"], std=default_cfg["std"]),
        transforms.Pad((total // 2, total // 2, total - total // 2, total - total // 2), fill=0)])
    rgb = np.repeat(image[..., None], 3, axis=2)  # medmnist's as_rgb=True
    assert torch.allclose(run.preprocess(image), reference(rgb), atol=1e-6)


@pytest.mark.e2e
@pytest.mark.parametrize("max_length", [20, 60, 400])
def test_truncated_references_are_r2gengpts(max_length):
    """truncate_references: the reference R2GenGPT scores against, built its way (with the tiny preset's tokenizer,
    which pads with id 0 as R2GenGPT's Llama tokenizer does), on real cleaned IU-Xray reports."""
    from gsco.specialists.report.clean import clean_report
    from gsco.specialists.report.model import ReportModelSettings, build_report_model

    model, _ = build_report_model(ReportModelSettings(max_length=max_length))
    tokenizer = model.tokenizer
    tokenizer.padding_side = "right"
    assert tokenizer.pad_token_id == 0 and tokenizer.convert_ids_to_tokens(1) == "<s>"
    annotation = json.loads(shared_path("data", "iu_xray", "annotation.json").read_text())
    for study in annotation["test"][:40]:
        report = clean_report(study["report"])
        assert model.truncated_reference(report) == ref.r2gengpt_reference(tokenizer, report, max_length), report
