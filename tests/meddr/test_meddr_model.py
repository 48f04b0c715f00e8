"""MedDr on transformers' InternVL: fixture parity (the original code's outputs), converter, presets, processor."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import gsco.meddr  # noqa: F401  (registers model_type meddr)
from gsco.data.readers import IMAGENET_MEAN
from gsco.meddr.convert import ConversionError, convert, save_original
from gsco.meddr.model import MedDrForConditionalGeneration
from gsco.meddr.presets import build_config, build_from_preset, load_preset
from gsco.meddr.processor import load_tokenizer

from conftest import shared_path

FIXTURES = ["meddr_original_tiny", "meddr_original_tiny_lora"]


def fixture_arrays(name):
    root = shared_path("fixtures", name)
    return {k: torch.from_numpy(np.load(root / f"{k}.npy")) for k in
            ("input_ids", "attention_mask", "pixel_values", "image_features", "logits", "generated_ids")}


def assert_matches_original(model, arrays):
    ids, mask, pv = arrays["input_ids"], arrays["attention_mask"], arrays["pixel_values"]
    with torch.no_grad():
        feats = model.get_image_features(pixel_values=pv).pooler_output
        logits = model(input_ids=ids, attention_mask=mask, pixel_values=pv).logits
        gen = model.generate(input_ids=ids, attention_mask=mask, pixel_values=pv, do_sample=False,
                             max_new_tokens=arrays["generated_ids"].shape[-1])
    assert (feats - arrays["image_features"]).abs().max() <= 1e-4
    assert (logits - arrays["logits"]).abs().max() <= 1e-4
    assert gen[0, ids.shape[1]:].tolist() == arrays["generated_ids"].reshape(-1).tolist()


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = {}
    for name in FIXTURES:
        out[name] = convert(shared_path("fixtures", name), tmp_path_factory.mktemp(name) / "hf")
    return out


@pytest.mark.e2e
@pytest.mark.parametrize("name", FIXTURES)
def test_converted_fixture_reproduces_the_original_code(converted, name):
    model = MedDrForConditionalGeneration.from_pretrained(converted[name], dtype=torch.float32).eval()
    assert_matches_original(model, fixture_arrays(name))


@pytest.mark.e2e
def test_stock_internvl_token_order_would_be_wrong(converted):
    """The v1 pixel shuffle matters: transformers' own order gives different logits."""
    arrays = fixture_arrays("meddr_original_tiny")
    model = MedDrForConditionalGeneration.from_pretrained(converted["meddr_original_tiny"]).eval()
    model.config.ps_version = "v2"
    with torch.no_grad():
        logits = model(input_ids=arrays["input_ids"], pixel_values=arrays["pixel_values"]).logits
    assert (logits - arrays["logits"]).abs().max() > 1e-2


@pytest.mark.e2e
@pytest.mark.parametrize("name", FIXTURES)
def test_processor_reproduces_the_original_prompt_and_pixels(converted, name):
    from transformers import AutoProcessor

    root = shared_path("fixtures", name)
    processor = AutoProcessor.from_pretrained(converted[name])
    question = json.loads((root / "meta.json").read_text())["question"]
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}],
        add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], images=[Image.open(root / "image.png")], return_tensors="pt")
    assert processor.tokenizer.decode(inputs["input_ids"][0]) == (root / "prompt.txt").read_text()
    assert torch.equal(inputs["input_ids"], fixture_arrays(name)["input_ids"])
    assert (inputs["pixel_values"] - fixture_arrays(name)["pixel_values"]).abs().max() <= 1e-6


def split_into_shards(src, dst, n_shards):
    """Rewrite a single-file original checkpoint as ``n_shards`` shards with an index, keys dealt round-robin so
    that a LoRA's base/A/B land in different shards."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model.safetensors"))
    with safe_open(str(src / "model.safetensors"), "pt") as f:
        keys = sorted(f.keys())
        shards = [{k: f.get_tensor(k) for k in keys[i::n_shards]} for i in range(n_shards)]
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        name = f"model-{i:05d}-of-{n_shards:05d}.safetensors"
        save_file(shard, str(dst / name))
        weight_map.update({k: name for k in shard})
    (dst / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return dst


@pytest.mark.e2e
def test_sharded_lora_fixture_converts_to_the_same_model(tmp_path):
    name = "meddr_original_tiny_lora"
    src = split_into_shards(shared_path("fixtures", name), tmp_path / "sharded", 3)
    dst = convert(src, tmp_path / "hf")
    assert len(json.loads((dst / "model.safetensors.index.json").read_text())["weight_map"]) > 0
    assert len(list(dst.glob("model-*-of-00003.safetensors"))) == 3
    model = MedDrForConditionalGeneration.from_pretrained(dst).eval()
    assert_matches_original(model, fixture_arrays(name))


def test_tiny_preset_sharded_round_trip_generates_identically(tmp_path):
    model, processor = build_from_preset("tiny", seed=3)
    save_original(model, processor.tokenizer, tmp_path / "orig", max_shard_bytes=50_000)
    assert len(list((tmp_path / "orig").glob("model-*.safetensors"))) > 3
    dst = convert(tmp_path / "orig", tmp_path / "hf")
    loaded = MedDrForConditionalGeneration.from_pretrained(dst).eval()
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 90, 3), dtype=np.uint8))
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is seen?"}]}],
        add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], images=[image], return_tensors="pt")
    a = model.generate(**inputs, max_new_tokens=10, do_sample=False)
    b = loaded.generate(**inputs, max_new_tokens=10, do_sample=False)
    assert torch.equal(a, b)


def test_save_pretrained_round_trips_model_and_processor_bit_exactly(tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model, processor = build_from_preset("tiny", seed=1)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    model2 = AutoModelForImageTextToText.from_pretrained(tmp_path)
    processor2 = AutoProcessor.from_pretrained(tmp_path)
    assert type(model2) is MedDrForConditionalGeneration
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), model2.state_dict().values()))
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (300, 1000, 3), dtype=np.uint8))
    text = "<|im_start|>user\n<IMG_CONTEXT>\nhi<|im_end|>"
    a = processor(text=[text], images=[image], return_tensors="pt")
    b = processor2(text=[text], images=[image], return_tensors="pt")
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["pixel_values"], b["pixel_values"])
    assert a["pixel_values"].shape == (1, 3, 112, 112)  # one stretched tile, never the stock tiling
    assert processor2.tokenizer.padding_side == "left" and processor2.image_processor.pad2square is False


def test_pad2square_pads_with_the_imagenet_mean_as_internvl_does():
    from gsco.meddr.processor import MedDrImageProcessor

    rng = np.random.default_rng(2)
    image = Image.fromarray(rng.integers(0, 255, (40, 100, 3), dtype=np.uint8))  # wide: pad top and bottom
    # InternVL's expand2square, written out: paste centred on a square of the mean colour.
    square = Image.new("RGB", (100, 100), tuple(int(m * 255) for m in IMAGENET_MEAN))
    square.paste(image, (0, (100 - 40) // 2))
    processor = MedDrImageProcessor(size={"height": 56, "width": 56}, pad2square=True)
    ours = processor(images=[image], return_tensors="pt")["pixel_values"]
    reference = MedDrImageProcessor(size={"height": 56, "width": 56})(images=[square], return_tensors="pt")
    assert torch.equal(ours, reference["pixel_values"])
    plain = MedDrImageProcessor(size={"height": 56, "width": 56})(images=[image], return_tensors="pt")
    assert not torch.equal(ours, plain["pixel_values"])


def test_meddr_40b_preset_has_the_published_size():
    preset = load_preset("meddr-40b")
    config = build_config(preset, image_token_id=64000)
    with torch.device("meta"):
        model = MedDrForConditionalGeneration(config)
    n = sum(p.numel() for p in model.parameters())
    assert 40.0e9 < n < 40.2e9  # ~40.07B
    assert preset.image_seq_length == 256 and config.text_config.rope_parameters["rope_theta"] == 5e6
    assert config.tie_word_embeddings is False


@pytest.mark.e2e
def test_converter_names_what_is_wrong(tmp_path):
    from safetensors.torch import load_file, save_file

    fixture = shared_path("fixtures", "meddr_original_tiny")

    def copy(tag):
        dst = tmp_path / tag
        shutil.copytree(fixture, dst)
        return dst

    src = copy("unknown")
    weights = load_file(str(src / "model.safetensors"))
    save_file({**weights, "vision_model.extra.weight": torch.zeros(2)}, str(src / "model.safetensors"))
    with pytest.raises(ConversionError, match="unexpected key 'vision_model.extra.weight'"):
        convert(src, tmp_path / "o1")

    src = copy("shape")
    save_file({**weights, "mlp1.1.weight": torch.zeros(3, 3)}, str(src / "model.safetensors"))
    with pytest.raises(ConversionError, match=r"'mlp1.1.weight' has shape \(3, 3\)"):
        convert(src, tmp_path / "o2")

    src = copy("missing")
    save_file({k: v for k, v in weights.items() if k != "mlp1.3.bias"}, str(src / "model.safetensors"))
    with pytest.raises(ConversionError, match="missing.*multi_modal_projector.linear_2.bias"):
        convert(src, tmp_path / "o3")

    src = split_into_shards(fixture, tmp_path / "noshard", 2)
    (src / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ConversionError, match="names model-00002-of-00002.safetensors, which does not exist"):
        convert(src, tmp_path / "o4")

    lora = load_file(str(shared_path("fixtures", "meddr_original_tiny_lora", "model.safetensors")))
    src = tmp_path / "halflora"
    shutil.copytree(shared_path("fixtures", "meddr_original_tiny_lora"), src)
    drop = next(k for k in lora if k.endswith("lora_B.default.weight"))
    save_file({k: v for k, v in lora.items() if k != drop}, str(src / "model.safetensors"))
    with pytest.raises(ConversionError, match="LoRA of .* is incomplete"):
        convert(src, tmp_path / "o5")

    with pytest.raises(ConversionError, match="config.json does not exist"):
        convert(tmp_path / "nowhere", tmp_path / "o6")
    (tmp_path / "o7").mkdir()
    (tmp_path / "o7" / "keep.txt").write_text("x")
    with pytest.raises(ConversionError, match="exists and is not empty"):
        convert(fixture, tmp_path / "o7")


@pytest.mark.e2e
def test_fixture_tokenizer_has_the_image_tokens_at_the_documented_ids():
    tok = load_tokenizer(shared_path("fixtures", "meddr_original_tiny", "tokenizer"))
    assert [tok.convert_tokens_to_ids(t) for t in ("<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>")] \
        == [6, 7, 9, 10, 11]


@pytest.mark.e2e
def test_converter_takes_a_sentencepiece_tokenizer_like_yis(tmp_path):
    """The published checkpoint ships Yi's SentencePiece ``tokenizer.model`` (LlamaTokenizer), not a
    tokenizer.json: the converter turns it into a fast tokenizer with the image tokens named."""
    import io

    import sentencepiece as spm
    from transformers import AutoTokenizer

    annotation = json.loads(shared_path("data", "iu_xray", "annotation.json").read_text())
    reports = [r["report"] for r in annotation["train"][:200]]
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(reports), model_writer=buffer, vocab_size=280, model_type="bpe",
        user_defined_symbols=["<|im_start|>", "<|im_end|>", "<|im_sep|>", "<img>", "</img>"], unk_id=0, bos_id=1,
        eos_id=2, pad_id=-1, unk_piece="<unk>", bos_piece="<|startoftext|>", eos_piece="<|endoftext|>",
        minloglevel=2)
    model, processor = build_from_preset("tiny", seed=5)
    src = save_original(model, processor.tokenizer, tmp_path / "orig")
    shutil.rmtree(src / "tokenizer")
    (src / "tokenizer.model").write_bytes(buffer.getvalue())
    (src / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
        "unk_token": "<unk>", "pad_token": "<unk>", "add_bos_token": False, "add_eos_token": False}))
    (src / "added_tokens.json").write_text(json.dumps({"<IMG_CONTEXT>": 280, "<video>": 281}))
    dst = convert(src, tmp_path / "hf")
    config = json.loads((dst / "config.json").read_text())
    assert config["image_token_id"] == 280
    tok = AutoTokenizer.from_pretrained(dst)
    assert (dst / "tokenizer.json").is_file() and tok.padding_side == "left"
    text = "<|im_start|>user\n<img><IMG_CONTEXT></img>\nThe heart is normal.<|im_end|>"
    reference = load_tokenizer(src)
    assert tok(text).input_ids == reference(text).input_ids
    assert tok.convert_tokens_to_ids(["<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>"]) == [4, 6, 7, 280]
    assert json.loads((dst / "generation_config.json").read_text())["eos_token_id"] == 4


@pytest.mark.e2e
def test_converter_carries_image_size_pad2square_and_select_layer(tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoProcessor

    src = tmp_path / "src"
    shutil.copytree(shared_path("fixtures", "meddr_original_tiny"), src)
    config = json.loads((src / "config.json").read_text())
    config.update(force_image_size=56, pad2square=True, select_layer=-2)
    (src / "config.json").write_text(json.dumps(config))
    dst = convert(src, tmp_path / "hf")
    model = MedDrForConditionalGeneration.from_pretrained(dst).eval()
    assert model.config.vision_feature_layer == -2 and model.config.image_seq_length == 4
    # InternViT resizes its 8x8 position grid to the 4x4 input grid (bicubic); the converter does it once.
    original = load_file(str(src / "model.safetensors"))["vision_model.embeddings.position_embedding"]
    grid = original[:, 1:].reshape(1, 8, 8, -1).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(grid, size=(4, 4), mode="bicubic", align_corners=False)
    got = model.model.vision_tower.embeddings.position_embeddings
    assert got.shape == (1, 17, 32) and torch.equal(got[:, :1], original[:, :1])
    assert torch.allclose(got[:, 1:], expected.reshape(1, 32, 16).permute(0, 2, 1))
    processor = AutoProcessor.from_pretrained(dst)
    assert processor.image_processor.pad2square is True and processor.image_seq_length == 4
    image = Image.fromarray(np.zeros((30, 50, 3), dtype=np.uint8))
    inputs = processor(text=["<IMG_CONTEXT>\nhi"], images=[image], return_tensors="pt")
    assert inputs["pixel_values"].shape == (1, 3, 56, 56)
    with torch.no_grad():
        assert model(**inputs).logits.shape[1] == inputs["input_ids"].shape[1]


def test_meddr_40b_processor_gives_one_448_tile_of_256_tokens():
    from gsco.meddr.processor import build_byte_tokenizer, build_processor

    preset = load_preset("meddr-40b")
    processor = build_processor(build_byte_tokenizer(), preset.vision["image_size"], preset.image_seq_length)
    image = Image.fromarray(np.zeros((700, 1200, 3), dtype=np.uint8))  # wide: the stock processor would tile it
    inputs = processor(text=["<IMG_CONTEXT>\nhi"], images=[image], return_tensors="pt")
    assert inputs["pixel_values"].shape == (1, 3, 448, 448)
    assert int((inputs["input_ids"] == processor.tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")).sum()) == 256


def test_word_tokenizer_gives_a_token_per_word_or_punctuation_run_with_yis_special_ids():
    """The benches' word-level tokenizer: MedDr's special-token ids, one token per word or punctuation run (unknown
    words one <unk> each), whitespace no token; a prompt with an image expands to the image's 256 tokens."""
    from gsco.meddr.processor import build_byte_tokenizer, build_processor, build_word_tokenizer

    text = "The possible diagnoses are: 'malignant', 'normal or benign'. (p=0.90)"
    tok = build_word_tokenizer([text])
    byte = build_byte_tokenizer()
    for name in ("<|im_start|>", "<|im_end|>", "<IMG_CONTEXT>", "<img>", "</img>"):
        assert tok.convert_tokens_to_ids(name) == byte.convert_tokens_to_ids(name)
    assert (tok.eos_token_id, tok.pad_token_id) == (byte.eos_token_id, byte.pad_token_id)
    pieces = tok.convert_ids_to_tokens(tok(text, add_special_tokens=False)["input_ids"])
    assert pieces == ["The", "possible", "diagnoses", "are", ":", "'", "malignant", "',", "'", "normal", "or",
                      "benign", "'.", "(", "p", "=", "0", ".", "90", ")"]
    assert tok.convert_ids_to_tokens(tok("benign tumour\n<|im_end|>", add_special_tokens=False)["input_ids"]) == \
        ["benign", "<unk>", "<|im_end|>"]
    processor = build_processor(tok, 448, 256)
    inputs = processor(text=["<IMG_CONTEXT>\nmalignant?"], images=[Image.new("RGB", (448, 448))],
                       return_tensors="pt")
    assert inputs["input_ids"].shape[1] == 256 + 2 + 2


@pytest.mark.e2e
@pytest.mark.parametrize("name", FIXTURES)
def test_export_writes_the_original_layout_and_converts_back_to_the_same_model(converted, name, tmp_path):
    """convert -> export -> convert on both original-format fixtures: identical weights, logits within 1e-5 of the
    first conversion (and the original code's within its 1e-4); the exported layout is the fixture's — same tensor
    names (the LoRA fixture's merged, as use_llm_lora 0 says), the config values the original code reads, Hermes-2
    with ps_version v1, the tokenizer at the top level with the engines' chat template."""
    from safetensors import safe_open

    from gsco.meddr.export import ENGINE_CHAT_TEMPLATE, export

    root = shared_path("fixtures", name)
    exported = export(converted[name], tmp_path / "exported", max_shard_gb=0.0003)  # several shards
    back = convert(exported, tmp_path / "back")
    first = MedDrForConditionalGeneration.from_pretrained(converted[name], dtype=torch.float32).eval()
    again = MedDrForConditionalGeneration.from_pretrained(back, dtype=torch.float32).eval()
    a, b = first.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    arrays = fixture_arrays(name)
    with torch.no_grad():
        logits = [m(input_ids=arrays["input_ids"], attention_mask=arrays["attention_mask"],
                    pixel_values=arrays["pixel_values"]).logits for m in (first, again)]
    assert (logits[0] - logits[1]).abs().max() <= 1e-5 and (logits[1] - arrays["logits"]).abs().max() <= 1e-4

    index = json.loads((exported / "model.safetensors.index.json").read_text())["weight_map"]
    assert len(set(index.values())) > 1
    with safe_open(str(root / "model.safetensors"), "pt") as f:
        original = {k.replace("base_model.model.", "").replace(".base_layer", "") for k in f.keys() if "lora_" not in k}
    assert set(index) == original
    if name == "meddr_original_tiny":  # no LoRA: every tensor is the fixture's own
        with safe_open(str(root / "model.safetensors"), "pt") as f:
            for key, shard in index.items():
                with safe_open(str(exported / shard), "pt") as g:
                    assert torch.equal(f.get_tensor(key), g.get_tensor(key)), key
    config, source = (json.loads((d / "config.json").read_text()) for d in (exported, root))
    assert config["ps_version"] == "v1" and config["template"] == "Hermes-2" and config["use_llm_lora"] == 0
    assert config["auto_map"] == {"AutoConfig": "configuration_internvl_chat.InternVLChatConfig"}
    for key in ("architectures", "model_type", "select_layer", "downsample_ratio", "force_image_size", "pad2square"):
        assert config[key] == source[key], key
    for part, keys in (("vision_config", ("hidden_size", "num_hidden_layers", "num_attention_heads", "patch_size",
                                          "image_size", "qk_normalization", "qkv_bias")),
                       ("llm_config", ("hidden_size", "num_hidden_layers", "num_key_value_heads", "vocab_size",
                                       "rope_theta", "eos_token_id", "tie_word_embeddings"))):
        assert {k: config[part][k] for k in keys} == {k: source[part][k] for k in keys}, part
    assert config["vision_config"]["norm_type"] == "rms_norm"  # the original code's default, which the fixture uses
    assert (exported / "chat_template.jinja").read_text() == ENGINE_CHAT_TEMPLATE  # transformers' own file for it
    assert (exported / "tokenizer.json").is_file() and (exported / "tokenizer" / "tokenizer.json").is_file()
    assert json.loads((exported / "generation_config.json").read_text())["eos_token_id"] == 7
    from transformers import AutoTokenizer

    prompt = AutoTokenizer.from_pretrained(exported).apply_chat_template(
        [{"role": "user", "content": "<image>\nIs it normal?"}], add_generation_prompt=True, tokenize=False)
    assert prompt == ("<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n<image>\nIs it normal?"
                      "<|im_end|><|im_start|>assistant\n")
