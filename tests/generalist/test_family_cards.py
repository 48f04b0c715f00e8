"""Every family is fed as its model card feeds it: the tiny models carry the published checkpoints' text files (special
tokens, BOS behaviour, chat template, processor sizes, stop ids) from the family folders, and GSCo's inputs for a mixed
batch equal the card's ``apply_chat_template(tokenize=True)`` inputs question by question; what can be refused is
refused before any weight loads."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from gsco.generalist import inputs
from gsco.generalist.families import CARD_FILES, FAMILIES, build_tiny, building

NAMES = sorted(FAMILIES)
# fed by its original code, not by a transformers processor (MedDr: its published checkpoint has no chat template or
# processor files): its SOURCES.json names the original code's outputs its tiny model is tested against instead
ORIGINAL_CODE = {"internvl_chat"}
CARDED = [n for n in NAMES if n not in ORIGINAL_CODE]


def images(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in sizes]


@pytest.fixture(scope="module")
def tiny():
    built = {}

    def get(name):
        if name not in built:
            built[name] = build_tiny(name)
        return built[name]

    return get


@pytest.mark.e2e
@pytest.mark.parametrize("name", sorted(ORIGINAL_CODE))
def test_a_family_fed_by_its_original_code_names_the_original_outputs_it_is_tested_against(name):
    from conftest import REPO, shared_path

    sources = FAMILIES[name].sources()
    assert not sources["files"] and sources["card"].startswith("https://huggingface.co/" + FAMILIES[name].card)
    original = sources["original_code"]
    tests = (REPO / original["tested_by"]).read_text()
    for fixture in original["fixtures"]:
        assert (shared_path(fixture) / "meta.json").is_file() and fixture.split("/")[-1] in tests, fixture
    assert (REPO / sources["real_dimensions"]["from"]).is_file()


def test_every_family_folder_holds_its_checkpoint_files_each_naming_its_source():
    assert all((FAMILIES[n].folder / "SOURCES.json").is_file() for n in NAMES)
    for name in CARDED:
        folder = FAMILIES[name].folder
        shipped = {p.name for p in folder.glob("*.json")} - {"SOURCES.json"}
        assert set(CARD_FILES) | {"chat_template.json"} <= shipped, name
        sources = FAMILIES[name].sources()
        assert set(sources["files"]) == shipped, name  # every file named, no source without its file
        for file, source in sources["files"].items():
            assert source["from"].split("/")[0] in FAMILIES[name].card + sources["checkpoint"], (name, file)
            assert source["kept"], (name, file)
        assert sources["card"].startswith("https://huggingface.co/" + FAMILIES[name].card)


@pytest.mark.parametrize("name", CARDED)
def test_the_tiny_model_carries_its_checkpoints_tokenizer_template_processor_and_stop_ids(name, tiny):
    family = FAMILIES[name]
    model, processor = tiny(name)
    tokenizer = processor.tokenizer
    card = family.card_file("tokenizer_config.json")
    assert processor.chat_template == family.card_file("chat_template.json")["chat_template"]
    encoded = tokenizer("Is it benign?")["input_ids"]
    adds_bos = tokenizer.bos_token is not None and encoded[0] == tokenizer.bos_token_id
    assert adds_bos == (building.bos_added(family) is not None), name  # add_bos_token, or Llama 3's post-processor
    for field in ("bos_token", "eos_token", "pad_token", "unk_token"):
        assert getattr(tokenizer, field) == card.get(field), (name, field)
    pre = family.card_file("preprocessor_config.json")
    stored = processor.image_processor.to_dict()
    for field in ("image_mean", "image_std", "patch_size", "merge_size", "crop_size", "image_grid_pinpoints"):
        if field in pre:
            value = json.loads(json.dumps(stored[field]))  # tuples as lists
            if isinstance(value, dict):
                value = {k: v for k, v in value.items() if v is not None}
            assert value == pre[field], (name, field)
    names = building.real_token_names(family)
    real_stops = family.card_file("generation_config.json")["eos_token_id"]
    real_stops = real_stops if isinstance(real_stops, list) else [real_stops]
    tiny_stops = model.generation_config.eos_token_id
    tiny_stops = tiny_stops if isinstance(tiny_stops, list) else [tiny_stops]
    assert tokenizer.convert_ids_to_tokens(tiny_stops) == [names[i] for i in real_stops]


def card_inputs(processor, image, question, system):
    """The model card's snippet for one question."""
    content = [{"type": "image", "image": image}, {"type": "text", "text": question}]
    messages = ([{"role": "system", "content": [{"type": "text", "text": system}]}] if system else []) + \
        [{"role": "user", "content": content}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                         return_tensors="pt")


@pytest.mark.parametrize("name", NAMES)
def test_gscos_inputs_for_a_mixed_batch_equal_the_cards_question_by_question(name, tiny):
    """Input ids, attention mask and pixel values of a left-padded batch of four questions about images of four
    sizes, with a system message, equal the card's one-question inputs."""
    _, processor = tiny(name)
    system = "You are an expert radiologist."
    pictures = images([(28, 28), (64, 48), (90, 60), (33, 77)])
    questions = [f"Question {i}: is there a finding here{'?' * i}" for i in range(4)]
    texts = [inputs.render(processor, q, True, system) for q in questions]
    batch = inputs.encode(processor, texts, [[im] for im in pictures])
    offset = 0
    for i, (image, question) in enumerate(zip(pictures, questions)):
        card = card_inputs(processor, image, question, system)
        length = int(card["attention_mask"].sum())
        assert int(batch["attention_mask"][i].sum()) == length, (name, i)
        assert torch.equal(batch["input_ids"][i, -length:], card["input_ids"][0]), (name, i)
        assert batch["attention_mask"][i, :-length].sum() == 0  # left padding only
        pixels, want = batch["pixel_values"], card["pixel_values"]
        if pixels.shape[0] == len(questions) and want.shape[0] == 1:  # one row per question (padded to the batch)
            got = pixels[i:i + 1][tuple(slice(0, s) for s in want.shape)]  # cropped to the card's patch count
        else:  # rows of every question's patches or tiles, one after the other (Qwen2.5-VL, InternVL)
            got = pixels[offset:offset + want.shape[0]]
            offset += want.shape[0]
        assert torch.equal(got, want), (name, i)
    bos = processor.tokenizer.bos_token_id
    if bos is not None:
        assert all(int((row == bos).sum()) <= 1 for row in batch["input_ids"]), name


def test_medgemmas_card_the_system_message_and_the_question_before_the_image_is_two_keys_away(tiny):
    """MedGemma's card: system "You are an expert radiologist.", then the question's text, then the image — GSCo with
    system=<the card's> question_first=true sends exactly that (the default sends the image first, no system turn)."""
    from gsco.generalist.model import Generalist

    model, processor = tiny("gemma3")
    system, question, image = FAMILIES["gemma3"].card_system, "Describe this X-ray", images([(40, 40)])[0]
    card = processor.apply_chat_template(
        [{"role": "system", "content": [{"type": "text", "text": system}]},
         {"role": "user", "content": [{"type": "text", "text": question}, {"type": "image", "image": image}]}],
        add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt")
    ours = Generalist(model, processor, torch.device("cpu"), "tiny gemma3", question_first=True)
    got = inputs.encode(processor, [ours.prompt(question, True, system)], [[image]])
    assert torch.equal(got["input_ids"], card["input_ids"]) and torch.equal(got["pixel_values"], card["pixel_values"])
    default = Generalist(model, processor, torch.device("cpu"), "tiny gemma3").prompt(question, True)
    assert default.index("<start_of_image>") < default.index(question) and system not in default


def test_medgemmas_prompt_has_one_bos_where_tokenizing_the_rendered_text_again_would_give_two(tiny):
    """The double-<bos> fault this path avoids: Gemma 3's template writes <bos> and its tokenizer adds one."""
    _, processor = tiny("gemma3")
    text = inputs.render(processor, "Is it benign?", True)
    assert text.startswith("<bos>")
    bos = processor.tokenizer.bos_token_id
    again = processor(text=[text], images=[images([(28, 28)])], return_tensors="pt")["input_ids"][0]
    ours = inputs.encode(processor, [text], [images([(28, 28)])])["input_ids"][0]
    assert int((again == bos).sum()) == 2 and int((ours == bos).sum()) == 1 and ours[0] == bos


def test_show_prompt_describes_the_tokens_and_each_images_token_count(tiny):
    from gsco.generalist.model import Generalist

    model, processor = tiny("qwen2_5_vl")
    generalist = Generalist(model, processor, torch.device("cpu"), "tiny qwen")
    shown = generalist.describe_input(images([(28, 28)])[0], "Is it benign?")
    assert "<|vision_start|><|image_pad|>×" in shown and "Is it benign?<|im_end|>" in shown
    count = int(shown.rsplit("image 1: ", 1)[1].split()[0])
    assert shown.startswith("prompt (") and count == 4  # the checkpoint's min_pixels: 56 x 56 px, 4 tokens
    text_only = generalist.describe_input(None, "Is it benign?", system="Be brief.")
    assert "<|im_start|>system\nBe brief.<|im_end|>" in text_only and "image 1" not in text_only


def test_an_image_outside_64_to_2048_tokens_is_said_once(caplog):
    said = set()
    with caplog.at_level("WARNING", logger="gsco.generalist.inputs"):
        inputs.warn_image_tokens([256, 4], said)
        inputs.warn_image_tokens([4000], said)
    assert caplog.text.count("image tokens") == 1 and "became 4 image tokens" in caplog.text


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    from gsco.generalist.tiny import save

    root, made = tmp_path_factory.mktemp("cards"), {}

    def get(name):
        if name not in made:
            made[name] = save(name, root / name)
        return made[name]

    return get


def test_what_can_be_refused_is_refused_before_a_weight_loads(saved, tmp_path, monkeypatch):
    """No chat template, float16 for Gemma 3, an image key the family does not take: refused by reading small
    files, the weights never opened."""
    import shutil

    import transformers

    from gsco.config import ConfigError
    from gsco.generalist.model import Generalist, ModelLoadError

    monkeypatch.setattr(transformers.AutoModelForImageTextToText, "from_pretrained",
                        lambda *a, **k: pytest.fail("weights loaded"))
    gemma = saved("gemma3")
    bare = tmp_path / "no-template"
    shutil.copytree(gemma, bare)
    for file in bare.glob("chat_template.*"):
        file.unlink()
    config = json.loads((bare / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=r"no-template: no chat template"):
        Generalist.load(str(bare), device="cpu")
    with pytest.raises(ConfigError, match=r"key 'dtype': float16 is refused .* \(family gemma3\): Gemma 3's "
                                          r"activations overflow float16"):
        Generalist.load(str(gemma), device="cpu", dtype="float16")
    with pytest.raises(ConfigError, match=r"key 'min_pixels': family gemma3 .* does not take it"):
        Generalist.load(str(gemma), device="cpu", image_options={"min_pixels": 3136})


def test_qwens_image_keys_reach_its_processor_with_small_image_defaults(saved):
    """Default: a 28 px image becomes the card's suggested minimum of 256 tokens (the checkpoint's own min_pixels: 4);
    min_pixels=... sets it back."""
    from gsco.generalist.model import Generalist

    folder = saved("qwen2_5_vl")
    thumb = images([(28, 28)])[0]
    default = Generalist.load(str(folder), device="cpu")
    assert "image 1: 256 image tokens" in default.describe_input(thumb, "?")
    card = Generalist.load(str(folder), device="cpu", image_options={"min_pixels": 3136, "max_pixels": 12845056})
    assert "image 1: 4 image tokens" in card.describe_input(thumb, "?")


@pytest.mark.parametrize("name, tile, default, card", [("smolvlm", 384, 81, 1377), ("idefics3", 364, 169, 2873)])
def test_idefics3_kinds_give_a_thumbnail_one_tile_by_default_and_the_cards_seventeen_with_splitting(
        saved, name, tile, default, card):
    """The checkpoint upscales a 28 px image to 1,456-1,536 px and splits it into 16 tiles and a global view (SmolVLM2:
    1,377 image tokens, Idefics3: 2,873); GSCo's default is one tile; image_splitting=true is the card's."""
    from gsco.generalist.model import Generalist

    folder = saved(name)
    thumb = images([(28, 28)])[0]
    ours = Generalist.load(str(folder), device="cpu").describe_input(thumb, "?")
    assert f"image 1: {default} image tokens" in ours and "<row_1_col_1>" not in ours
    split = Generalist.load(str(folder), device="cpu", image_options={"image_splitting": True})
    shown = split.describe_input(thumb, "?")
    assert f"image 1: {card} image tokens" in shown and "<row_4_col_4>" in shown
    halved = Generalist.load(str(folder), device="cpu", image_options={"image_splitting": True,
                                                                        "longest_edge": 2 * tile})
    assert f"image 1: {5 * default} image tokens" in halved.describe_input(thumb, "?")  # 2 x 2 tiles + global


def test_every_familys_image_key_is_a_key_of_every_generalist_command():
    import dataclasses

    from gsco.generalist.backends import GENERALIST_KEYS, GeneralistSettings
    from gsco.generalist.families import image_key_names

    fields = {f.name for f in dataclasses.fields(GeneralistSettings)}
    assert image_key_names() and all(key in fields and key in GENERALIST_KEYS for key in image_key_names())


def test_readmes_family_inputs_table_is_the_registry_and_the_counts_are_measured():
    """README's 'What each family's model sees': every family, its checkpoint, the image tokens its processor (the
    checkpoint's, with GSCo's defaults) gives a 28 / 64 / 224 px image, its image keys and its card's system message."""
    from conftest import REPO

    text = (REPO / "README.md").read_text()
    table = text.split("<!-- family-inputs -->")[1].split("<!-- /family-inputs -->")[0].strip().splitlines()[2:]
    rows = {}
    for line in table:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = cells
    assert sorted(rows) == NAMES
    for name, family in FAMILIES.items():
        cells = rows[name]
        for key in family.image_keys:
            assert f"`{key}`" in cells[3], (name, key)
        if family.card_system:
            assert family.card_system in cells[4], name
        if name in ORIGINAL_CODE:  # the converted checkpoint's processor: MedDr_0401's 448 px, 256 tokens
            from gsco.meddr.processor import build_byte_tokenizer, build_processor

            assert cells[1].startswith("original code"), name
            processor = build_processor(build_byte_tokenizer(), image_size=448, image_seq_length=256)
        else:
            assert cells[1] == family.card, name
            processor = building.tiny_processor(family, processor_kwargs=family.processor_kwargs())
        counts = []
        for side in (28, 64, 224):
            text = inputs.render(processor, "Is it benign?", True)
            encoded = inputs.encode(processor, [text], [[Image.new("RGB", (side, side))]])
            counts += inputs.image_token_counts(processor, encoded["input_ids"], [1])
        assert cells[2] == " / ".join(map(str, counts)), (name, counts)
    assert 64 <= int(rows["qwen2_5_vl"][2].split(" / ")[0])  # a thumbnail is not 4 tokens with the defaults


def test_the_image_keys_set_are_part_of_a_runs_identity():
    """A resume with other image keys is another run (answers differ with them); none set leaves the identity as
    it was before the keys existed."""
    from gsco.collab.config import GscoConfig
    from gsco.generalist.model import Generalist

    cfg = GscoConfig(model="tiny")
    assert "images" not in Generalist.identity(cfg)
    cfg.min_pixels = 3136
    assert Generalist.identity(cfg)["images"] == {"min_pixels": 3136}


def test_question_first_reaches_the_served_request_and_a_runs_identity():
    """A served model gets the question's text before the image as well; a resume with the other order is another
    run (its answers differ), and the default leaves the identity as it was."""
    from gsco.collab.config import GscoConfig
    from gsco.generalist.model import Generalist
    from gsco.generalist.served import ServedGeneralist

    first = ServedGeneralist._messages("data:image/png;base64,AA", "Is it benign?", "Be brief.", question_first=True)
    assert [c["type"] for c in first[1]["content"]] == ["text", "image_url"] and first[0]["role"] == "system"
    default = ServedGeneralist._messages("data:image/png;base64,AA", "Is it benign?", None)
    assert [c["type"] for c in default[0]["content"]] == ["image_url", "text"]
    cfg = GscoConfig(model="tiny")
    assert "question_first" not in Generalist.identity(cfg)
    cfg.question_first = True
    assert Generalist.identity(cfg)["question_first"] is True
    assert ServedGeneralist.identity(cfg)["question_first"] is True
