"""Every generalist family in gsco.generalist.families, on its tiny random model (gsco.generalist.tiny: transformers'
own classes, a byte-level tokenizer with the family's special tokens, no download): a batch of eight questions about
images of mixed sizes answers as the family's own one-question ``generate``; prefix sharing gives the plain answers
where the family declares it and is said to be off where not; torchao int8 keeps each family's vision tower; GSCo's
arms run end to end on a reference-format case file and resume. README's family table is the registry's."""

import json
import logging
import re

import numpy as np
import pytest
import torch
from PIL import Image

from gsco.generalist import families, tiny
from gsco.generalist.families import FAMILIES
from gsco.generalist.model import Generalist

from builders import pcam_cases
from conftest import REPO
from doc_commands import run_documented

NAMES = sorted(FAMILIES)
SIZES = [(40, 50), (28, 28), (90, 60), (56, 56), (120, 30), (33, 77), (64, 64), (100, 100)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """The tiny model folder of a family, saved once per module (``python -m gsco.generalist.tiny``'s ``save``)."""
    root, made = tmp_path_factory.mktemp("families"), {}

    def get(name: str):
        if name not in made:
            made[name] = tiny.save(name, root / name)
        return made[name]

    return get


def images(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in sizes]


def own_generate(g: Generalist, image, question: str, max_new_tokens: int) -> str:
    """One question through the family's own path: the processor's chat template with the image, then generate."""
    messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": question}]}]
    inputs = g.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                             return_tensors="pt")
    out = g.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return g.processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def test_every_family_has_a_tiny_model_of_its_model_type():
    for name in NAMES:
        model, processor = tiny.build(name)
        assert model.config.model_type == FAMILIES[name].model_type and processor.chat_template


@pytest.mark.parametrize("name", NAMES)
def test_a_batch_of_eight_mixed_sizes_answers_as_the_familys_own_generate(name, folder):
    g = Generalist.load(str(folder(name)), device="cpu")
    assert g.model.config.model_type == FAMILIES[name].model_type
    pictures = images(SIZES)
    questions = [f"Question {i}: is there a finding here{'?' * i}" for i in range(8)]
    batched = g.answer(pictures, questions, max_new_tokens=8, batch_size=8, share_prefix=False)
    alone = [own_generate(g, im, q, 8) for im, q in zip(pictures, questions)]
    assert batched == alone
    assert len(set(alone)) >= 4, alone  # the answers depend on the inputs: the comparison can fail


@pytest.mark.parametrize("name", NAMES)
def test_prefix_sharing_where_declared_answers_as_the_plain_path_and_is_said_off_elsewhere(name, folder, monkeypatch,
                                                                                       caplog):
    from gsco.generalist import prefix

    calls = []
    shared_path = prefix.answer_sharing_prefix
    monkeypatch.setattr(prefix, "answer_sharing_prefix", lambda *a, **k: calls.append(shared_path(*a, **k)) or
                        calls[-1])
    g = Generalist.load(str(folder(name)), device="cpu")
    two = images([(40, 50), (40, 50)], seed=1)
    pictures = [two[0]] * 4 + [two[1]] * 4  # two cases, four arms each (same-size images: same image tokens)
    questions = ["Which is it? Options: a, b.", "Which is it? Hint: the specialist says a. Options: a, b.",
                 "Which is it? Hint: similar cases are b, b, a. Options: a, b.", "Which is it? Hint: x. Options: a, b."]
    plain = g.answer(pictures, questions * 2, max_new_tokens=8, batch_size=8, share_prefix=False)
    with caplog.at_level(logging.INFO, logger="gsco.generalist.model"):
        shared = g.answer(pictures, questions * 2, max_new_tokens=8, batch_size=8)
    assert shared == plain and len(set(plain)) >= 2, plain
    if FAMILIES[name].prefix_sharing:
        assert calls and calls[0] is not None  # the shared path answered
    else:
        assert not calls and f"prefix sharing is off for model_type '{FAMILIES[name].model_type}' " \
                             f"({FAMILIES[name].no_prefix_sharing})" in caplog.text


def test_prefix_sharing_falls_back_where_images_tile_differently_or_a_sliding_window_is_exceeded(folder, monkeypatch):
    """InternVL3 with the card's tiles (max_tiles=12) tiles images by their aspect (different token counts: no common
    prefix holds every image); Gemma 3's sliding-window layers would drop cached positions once a prompt outgrows the
    window: both answer the plain way."""
    from gsco.generalist import prefix

    calls = []
    shared_path = prefix.answer_sharing_prefix
    monkeypatch.setattr(prefix, "answer_sharing_prefix", lambda *a, **k: calls.append(shared_path(*a, **k)) or
                        calls[-1])
    questions = ["Which is it? Options: a, b.", "Which is it? Hint: a. Options: a, b."] * 2
    internvl = Generalist.load(str(folder("internvl")), device="cpu", image_options={"max_tiles": 12})
    tiled = images([(56, 56), (40, 120)])  # one tile; three tiles and a thumbnail
    pictures = [tiled[0], tiled[0], tiled[1], tiled[1]]
    assert internvl.answer(pictures, questions, max_new_tokens=6, share_prefix=False) == \
        internvl.answer(pictures, questions, max_new_tokens=6) and calls == [None]
    gemma = Generalist.load(str(folder("gemma3")), device="cpu")
    pictures = [tiled[0]] * 2 + [tiled[1]] * 2
    gemma.model.config.text_config.sliding_window = 16  # the prompts are longer
    assert gemma.answer(pictures, questions, max_new_tokens=6, share_prefix=False) == \
        gemma.answer(pictures, questions, max_new_tokens=6) and calls == [None, None]


@pytest.mark.parametrize("name", NAMES)
def test_torchao_int8_quantizes_the_language_model_and_keeps_each_familys_vision_tower(name, folder):
    from torch import nn

    from gsco.generalist.quantization import KEEP_UNQUANTIZED, quantize_torchao_int8

    g = Generalist.load(str(folder(name)), device="cpu")
    vision = [n for n, m in g.model.named_modules() if isinstance(m, nn.Linear)
              and any(f".{part}." in f".{n}." for part in FAMILIES[name].vision)]
    assert vision  # the family's vision names are its model's
    count = quantize_torchao_int8(g.model, KEEP_UNQUANTIZED)
    quantized = {n for n, m in g.model.named_modules() if isinstance(m, nn.Linear)
                 and type(m.weight) is not nn.Parameter and type(m.weight) is not torch.Tensor}
    assert len(quantized) == count > 0 and not quantized & set(vision)
    assert len(g.answer(images([(40, 50)] * 2), ["Is it normal?"] * 2, max_new_tokens=4)) == 2


@pytest.mark.e2e  # every arm of every family (about 30 CPU-seconds): the full tier, not the quick one
@pytest.mark.parametrize("name", NAMES)
def test_gscos_arms_run_end_to_end_on_a_reference_case_file_and_resume(name, folder, tmp_path, caplog):
    from gsco.collab.arms import generalist_arms
    from gsco.collab.config import GscoConfig
    from gsco.config import load_config
    from gsco.recipes.gsco import run

    cases = [{**case, "moed_prob": [0.9, 0.6]} for case in pcam_cases(tmp_path, 2)]  # build_cases' keys, all of them
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    overrides = {"model": str(folder(name)), "cases": str(tmp_path / "cases.json"), "device": "cpu",
                 "out_dir": str(tmp_path / "out"), "max_new_tokens": 6}
    run(load_config(GscoConfig, REPO / "configs/gsco/pcam200.yaml", overrides))
    table = json.loads((tmp_path / "out" / "ablation.json").read_text())
    asked = [arm for arm in table["arms"] if not arm.startswith("specialist")]
    assert asked == list(generalist_arms(report=False))  # every arm
    first = {arm: (tmp_path / "out" / f"{arm}_predictions.jsonl").read_text() for arm in asked}
    assert all(len(text.splitlines()) == 2 for text in first.values())
    with caplog.at_level(logging.INFO):
        run(load_config(GscoConfig, REPO / "configs/gsco/pcam200.yaml", overrides))
    assert all(f"arm {arm}: 2 of 2 cases answered, 0 to go" in caplog.text for arm in asked)
    assert {arm: (tmp_path / "out" / f"{arm}_predictions.jsonl").read_text() for arm in asked} == first


def test_readmes_family_table_is_the_registry():
    """README's table names every family, its model type and its capabilities as gsco.generalist.families has them."""
    text = (REPO / "README.md").read_text()
    rows = {}
    for line in text.split("<!-- families -->")[1].split("<!-- /families -->")[0].strip().splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = cells
    assert sorted(rows) == NAMES
    for name, family in FAMILIES.items():
        cells = rows[name]
        assert cells[1] == f"`{family.model_type}`"
        assert cells[3] == "yes"  # batching: tested for every family
        assert cells[4].startswith("yes") == family.prefix_sharing, name
        assert cells[5] == "torchao-int8"
        assert cells[6].startswith("yes" if family.finetune else "no: refused"), name
        assert cells[7].startswith("yes") == family.served, name
    assert re.search(r"python -m gsco\.generalist\.tiny family=\w+ out_dir=", text)
    assert families.vision_modules()  # every family names its vision parts


@pytest.mark.parametrize("name", [n for n in NAMES if not FAMILIES[n].finetune])
def test_train_sh_refuses_a_family_it_does_not_fine_tune_before_loading(name, folder, tmp_path, monkeypatch):
    from gsco.config import ConfigError, load_config
    from gsco.recipes import finetune

    monkeypatch.setattr(finetune, "load_base", lambda *a: pytest.fail("loaded"))
    cfg = load_config(finetune.FinetuneConfig, REPO / "configs/meddr/finetune_tiny.yaml",
                      {"model": str(folder(name)), "out_dir": str(tmp_path / "out")})
    with pytest.raises(ConfigError, match=rf"is a '{FAMILIES[name].model_type}' model \(family {name}\); train.sh "
                                          r"fine-tunes the internvl_chat family"):
        finetune.train(cfg)


@pytest.mark.e2e
def test_readmes_smolvlm_commands_show_a_thumbnail_as_one_tile(tmp_path):
    """README's SmolVLM2 commands: the tiny folder (the checkpoint's processor files), then demo.py's show_prompt with
    GSCo's default, one 384 px tile of 81 image tokens (the card's image_splitting=true, 1,377 tokens, is
    test_family_cards' test of the Idefics3 kinds, through the same description)."""
    out = tmp_path / "tiny-smolvlm"
    run_documented("python -m gsco.generalist.tiny family=smolvlm out_dir=outputs/tiny-smolvlm",
                   replace={"outputs/tiny-smolvlm": str(out)})
    shown = run_documented('python demo.py model=outputs/tiny-smolvlm image=data/examples/images/case0.png '
                           'question="Is it normal?" show_prompt=true', replace={"outputs/tiny-smolvlm": str(out)},
                           append=["max_new_tokens=2", "device=cpu"])
    prompt = shown.stderr.split("--- show_prompt: what ")[1].split("\n---")[0]
    tokens = prompt.split("\n", 2)[2]
    assert tokens.startswith("<|im_start|>User:<fake_token_around_image><global-img><image>×81"), prompt
    assert "image 1: 81 image tokens" in prompt and "<row_1_col_1>" not in prompt, prompt
    assert "<fake_token_around_image>Is it normal?<end_of_utterance>\nAssistant:\n" in tokens, prompt


@pytest.mark.e2e
def test_readmes_family_commands_build_a_tiny_medgemma_and_run_gsco_with_it(tmp_path):
    """README's commands: a tiny gemma3 folder from ``python -m gsco.generalist.tiny``, then every arm of
    ``inference_gsco.sh`` on a BreastMNIST-style case file with it as MODEL (standing in for the MedGemma folder)."""
    from gsco.collab.arms import generalist_arms

    out = tmp_path / "tiny-gemma3"
    made = run_documented("python -m gsco.generalist.tiny family=gemma3 out_dir=outputs/tiny-gemma3",
                          replace={"outputs/tiny-gemma3": str(out)})
    assert "tiny gemma3 (random weights, stands for google/medgemma-4b-it" in made.stdout
    shown = run_documented('python demo.py model=outputs/tiny-gemma3 image=data/examples/images/case0.png '
                           'question="Is it normal?" show_prompt=true', replace={"outputs/tiny-gemma3": str(out)},
                           append=["max_new_tokens=2", "device=cpu"])
    prompt = shown.stderr.split("--- show_prompt: what ")[1].split("\n---")[0]
    tokens = prompt.split("\n", 2)[2]  # after the header and "prompt (N tokens):"
    assert tokens.startswith("<bos><start_of_turn>user\n") and tokens.count("<bos>") == 1, prompt
    assert "<start_of_image><image_soft_token>×256<end_of_image>" in tokens and "image 1: 256 image tokens" in prompt
    cases = [{**case, "label": label, "moed": ["malignant", label], "rad": ["normal or benign"] * 3,
              "moed_prob": [0.8, 0.7]}
             for case, label in zip(pcam_cases(tmp_path, 3), ["malignant", "normal or benign", "malignant"])]
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    run_documented("DATASET=breastmnist MODEL=/path/to/medgemma-4b-it CASES=outputs/gsco/breastmnist_cases.json "
                   "bash inference_gsco.sh",
                   replace={"/path/to/medgemma-4b-it": str(out),
                            "outputs/gsco/breastmnist_cases.json": str(tmp_path / "cases.json")},
                   env={"OUT_DIR": str(tmp_path / "gsco")}, append=["max_new_tokens=4"])
    table = json.loads((tmp_path / "gsco" / "ablation.json").read_text())
    assert list(table["arms"]) == ["specialist_0", "specialist_1", "specialist_vote",
                                   *generalist_arms(report=False)]
    assert all(table["arms"][arm]["n"] == 3 for arm in generalist_arms(report=False))
