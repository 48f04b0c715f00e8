"""Batched generation and demo.py on the tiny preset and a converted fixture."""

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from gsco.generalist import Generalist, ModelLoadError, check_model_argument

from conftest import REPO, shared_path
from doc_commands import run_documented


@pytest.fixture(scope="module")
def tiny():
    return Generalist.load("tiny", device="cpu")


def test_batch_of_eight_equals_one_at_a_time(tiny):
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (64 + 8 * i, 80, 3), dtype=np.uint8)) for i in range(8)]
    questions = [f"Case {i}: what is{' really' * i} seen here?" for i in range(8)]  # different lengths -> padding
    batched = tiny.answer(images, questions, max_new_tokens=12, batch_size=8)
    single = [tiny.answer([im], [q], max_new_tokens=12, batch_size=1)[0] for im, q in zip(images, questions)]
    assert batched == single
    assert len(set(batched)) > 1  # the answers depend on the input


def test_arms_sharing_an_image_and_prefix_answer_as_the_plain_path(tiny):
    """share_prefix (GSCo arms: several questions about one image): the image and the common prompt prefix are
    computed once per distinct image, and the greedy answers are those of the plain path, item for item."""
    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)) for _ in range(2)]
    intro = "You are given a breast ultrasound image. The possible diagnoses are: 'malignant', 'normal or benign'. "
    arms = ["", "The diagnoses of the specialist models are malignant. ",
            "The diagnoses of the most similar cases are normal or benign,malignant,malignant. ", "Answer briefly. "]
    pairs = [(images[i % 2], intro + arm + "Which one?") for arm in arms for i in range(2)]  # images interleaved
    plain = tiny.answer(*zip(*pairs), max_new_tokens=10, batch_size=8, share_prefix=False)
    seen = []  # images through the vision tower
    hook = tiny.model.model.vision_tower.register_forward_hook(
        lambda m, args, kwargs, out: seen.append(len(args[0] if args else kwargs["pixel_values"])), with_kwargs=True)
    try:
        shared = tiny.answer(*zip(*pairs), max_new_tokens=10, batch_size=8, share_prefix=True,
                             min_new_tokens=10)  # generate keywords pass through
        tiny.answer(*zip(*pairs), max_new_tokens=10, batch_size=8, share_prefix=False)
    finally:
        hook.remove()
    assert seen == [2, 8]  # shared: each distinct image once; plain: once per question
    assert [a for a in shared] == [a for a in tiny.answer(*zip(*pairs), max_new_tokens=10, batch_size=8,
                                                            share_prefix=False, min_new_tokens=10)]
    assert tiny.answer(*zip(*pairs), max_new_tokens=10, batch_size=8) == plain  # on by default
    assert len(set(plain)) > 1


def test_suffix_groups_prefilled_apart_and_merged_answer_as_the_plain_path(tiny, monkeypatch):
    """However the suffixes are grouped (each group prefilled at its own width, the caches merged for one decode
    loop), the answers are the plain path's; one generate call either way."""
    from gsco.generalist import prefix

    rng = np.random.default_rng(2)
    image = Image.fromarray(rng.integers(0, 255, (80, 80, 3), dtype=np.uint8))
    words = ["malignant", "benign", "tumor", "normal", "effusion", "nodule"]
    questions = [f"Intro shared by all. {' '.join(words[:i + 1]) * (i + 1)}? Which one?" for i in range(6)]
    plain = tiny.answer([image] * 6, questions, max_new_tokens=8, share_prefix=False)
    assert len(set(plain)) > 1
    calls = []
    generate = tiny.model.generate
    monkeypatch.setattr(tiny.model, "generate", lambda *a, **k: (calls.append(1), generate(*a, **k))[1])
    for groups in ([[0, 1, 2, 3, 4, 5]], [[0, 1, 2], [3, 4, 5]], [[5], [0, 1, 2, 3, 4]], [[4, 0], [1, 2, 3, 5]]):
        monkeypatch.setattr(prefix, "suffix_groups", lambda lengths, g=groups: g)
        assert tiny.answer([image] * 6, questions, max_new_tokens=8) == plain, groups
    assert len(calls) == 4


def test_suffixes_split_into_two_length_groups_only_when_that_saves_a_quarter_of_the_padding():
    from gsco.generalist.prefix import suffix_groups

    assert suffix_groups([53, 148, 226, 321, 171, 175]) == [[0, 1, 4, 5], [2, 3]]  # the bench's six arms: 1342 < 1926
    assert suffix_groups([10, 11, 12]) == [[0, 1, 2]] and suffix_groups([7]) == [[0]]


@pytest.mark.e2e
def test_text_only_and_mixed_batches(tiny):
    image = Image.open(shared_path("data", "cxr", "00000001_000.png"))
    mixed = tiny.answer([None, image], ["Define cardiomegaly.", "What is seen?"], max_new_tokens=6)
    alone = [tiny.answer([None], ["Define cardiomegaly."], max_new_tokens=6)[0],
             tiny.answer([image], ["What is seen?"], max_new_tokens=6)[0]]
    assert mixed == alone


@pytest.mark.e2e
def test_model_argument_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        check_model_argument(str(tmp_path / "missing"))
    with pytest.raises(ModelLoadError, match="no config.json"):
        check_model_argument(str(tmp_path))
    with pytest.raises(ModelLoadError, match="convert it first"):
        check_model_argument(str(shared_path("fixtures", "meddr_original_tiny")))
    assert check_model_argument(None) is None and check_model_argument("tiny") is None
    (tmp_path / "empty.yaml").write_text("")  # used to build transformers' default 7B-parameter model in fp32
    with pytest.raises(ModelLoadError, match=r"empty.yaml' is neither a model directory nor a preset: not a MedDr "
                                             r"preset: no 'vision' or 'text' section"):
        check_model_argument(str(tmp_path / "empty.yaml"))
    with pytest.raises(ModelLoadError, match=r"'no-such-preset' is neither a model directory nor a preset: .*shipped "
                                             r"presets: \['meddr-40b', 'tiny'\]"):
        check_model_argument("no-such-preset")
    with pytest.raises(ModelLoadError, match=r"is neither a model directory nor a preset: .*unknown key"):
        check_model_argument(str(REPO / "configs/meddr/prompts.yaml"))  # a YAML file that is no preset


@pytest.mark.e2e
def test_the_script_refuses_a_yaml_that_is_no_preset_before_building_anything(tmp_path):
    """Through the script, as the probe ran it: refused in one line, before anything is built (no random-weights
    warning)."""
    (tmp_path / "empty.yaml").write_text("")
    proc = run_documented("GPUS=4 MODEL=/path/to/meddr-hf METAFILE=data/iu_xray/test.jsonl bash inference_meddr.sh",
                          replace={"GPUS=4": "GPUS=1", "/path/to/meddr-hf": str(tmp_path / "empty.yaml"),
                                   "data/iu_xray/test.jsonl": "data/examples/meddr/iu_xray_sample.jsonl"},
                          append=[f"out_dir={tmp_path / 'out'}", "device=cpu"], check=False)
    assert proc.returncode == 2 and "RANDOM" not in proc.stderr, proc.stderr[-2000:]
    assert "is neither a model directory nor a preset" in proc.stderr.strip().splitlines()[-1]
    assert "no 'vision' or 'text' section" in proc.stderr, proc.stderr[-1000:]


@pytest.mark.e2e
def test_demo_without_arguments_runs_the_tiny_preset():
    proc = run_documented("python demo.py", append=["max_new_tokens=4"])
    assert "RANDOM weights" in proc.stderr and len(proc.stdout.splitlines()) == 1


@pytest.mark.e2e
def test_demo_with_a_converted_fixture_answers_each_pair(tmp_path):
    from gsco.meddr.convert import convert

    model = convert(shared_path("fixtures", "meddr_original_tiny"), tmp_path / "hf")
    image = str(shared_path("fixtures", "meddr_original_tiny", "image.png"))
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"image": "%s", "question": "Is this normal?"}\n' % image)
    proc = run_documented('python demo.py model=/path/to/meddr-hf image=chest.png question='
                          '"What abnormality is seen?"', replace={"/path/to/meddr-hf": str(model), "chest.png": image},
                          append=[f"pairs={pairs}", "max_new_tokens=5"])
    assert len(proc.stdout.splitlines()) == 2 and "RANDOM" not in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["model=/no/such/dir"], "model directory /no/such/dir does not exist"),
    (["image=/no/such.png", "question=hi"], "image /no/such.png cannot be read"),
    (["image=data/examples/images/case0.png", "question=  "], "question 1 is empty"),
    (["image=data/examples/images/case0.png"], "1 image but 0 question"),
])
def test_demo_errors_are_one_clear_line(args, message, capsys, monkeypatch):
    import importlib.util

    monkeypatch.chdir(REPO)
    spec = importlib.util.spec_from_file_location("demo", REPO / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "demo", demo)  # its config dataclass looks its module up
    spec.loader.exec_module(demo)
    assert demo.main(args) == 2
    assert message in capsys.readouterr().err


def test_arms_of_one_image_process_it_once_and_tokenize_as_the_processor(tiny, monkeypatch):
    """The shared path runs the processor once per distinct image and only tokenizes the other prompts, splicing in
    the first prompt's image span: the ids equal the processor's for every prompt; where the processor names no
    image span tokens, every prompt goes through the processor (same ids)."""
    from gsco.generalist.prefix import encode_images_once

    rng = np.random.default_rng(4)
    images = {k: Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)) for k in ("a", "b")}
    keys = ["a", "b", "a", "a", "b"]
    texts = [tiny.prompt(f"Question {i}:{' why' * i}?", True) for i in range(5)]
    expected = [tiny.processor(text=[t], images=[images[k]], return_tensors="pt")["input_ids"][0]
                for t, k in zip(texts, keys)]
    calls = []
    processor_type = type(tiny.processor)
    call = processor_type.__call__
    monkeypatch.setattr(processor_type, "__call__", lambda self, *a, **k: (calls.append(1), call(self, *a, **k))[1])
    ids, pixels, types = encode_images_once(tiny.processor, texts, keys, images)
    assert len(calls) == 2 and set(pixels) == {"a", "b"} and types is None  # InternVL: no token types
    assert all(torch.equal(i, e) for i, e in zip(ids, expected))
    monkeypatch.setattr(tiny.processor, "start_image_token_id", None, raising=False)
    calls.clear()
    ids, _, _ = encode_images_once(tiny.processor, texts, keys, images)
    assert len(calls) == 2 + 5 and all(torch.equal(i, e) for i, e in zip(ids, expected))
