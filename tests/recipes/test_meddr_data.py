"""MedDr training data: both input formats, the assistant-only loss mask token by token, skipping bad samples."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from gsco.data.conversations import (
    IGNORE_INDEX,
    ConversationCollator,
    ConversationDataset,
    encode_conversation,
    read_training_data,
)
from gsco.data.registry import DatasetError
from gsco.meddr.presets import build_from_preset


@pytest.fixture(scope="module")
def processor():
    return build_from_preset("tiny")[1]


def write_image(path, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(path)
    return path


def test_assistant_only_loss_mask_token_by_token(processor):
    tok = processor.tokenizer
    conv = [{"from": "human", "value": "<image>\nWhat is shown?"}, {"from": "gpt", "value": "A chest X-ray."},
            {"from": "human", "value": "Any effusion?"}, {"from": "gpt", "value": "No."}]
    ids, labels = encode_conversation(tok, conv, processor.image_seq_length)
    assert len(ids) == len(labels)
    # Walk the rendered prompt: only the tokens of each answer and its closing <|im_end|> carry labels.
    header = tok.encode("<|im_start|>assistant\n", add_special_tokens=False)
    expected = [IGNORE_INDEX] * len(ids)
    starts = [i + len(header) for i in range(len(ids)) if ids[i:i + len(header)] == header]
    assert len(starts) == 2
    for start, answer in zip(starts, ["A chest X-ray.", "No."]):
        target = tok.encode(answer, add_special_tokens=False) + [tok.convert_tokens_to_ids("<|im_end|>")]
        assert ids[start:start + len(target)] == target
        expected[start:start + len(target)] = target
    assert labels == expected
    assert ids.count(tok.convert_tokens_to_ids("<IMG_CONTEXT>")) == processor.image_seq_length
    assert tok.decode(ids).startswith("<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n<img>")


def test_sample_file_and_meta_file_load_the_same_samples(tmp_path):
    samples = [
        {"id": "a", "image": "img/a.png", "conversations": [{"from": "human", "value": "Normal?"},
                                                            {"from": "gpt", "value": "yes"}]},
        {"id": "b", "conversations": [{"from": "human", "value": "Define effusion."},
                                      {"from": "gpt", "value": "Fluid."}]},
        {"id": "bad", "conversations": [{"from": "gpt", "value": "answer first"}]},
        {"id": "c", "image": "img/c.png", "conversations": [{"from": "human", "value": "<image>\nSide?"},
                                                            {"from": "gpt", "value": "left"}]},
    ]
    write_image(tmp_path / "img" / "a.png")
    (tmp_path / "samples.json").write_text(json.dumps(samples))
    (tmp_path / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    (tmp_path / "meta.json").write_text(json.dumps({
        "toy": {"root": ".", "annotation": "samples.jsonl", "data_augment": True, "repeat_time": 2},
        "half": {"root": ".", "annotation": "samples.json", "data_augment": False, "repeat_time": 0.5}}))
    listed = read_training_data(tmp_path / "samples.json")
    assert [s.id for s in listed] == ["a", "b", "c"]  # the malformed one is skipped
    assert listed[0].conversations[0]["value"] == "<image>\nNormal?"  # <image> added to the first turn
    assert listed[1].image is None and listed[0].image == tmp_path / "img" / "a.png"
    assert [s.id for s in read_training_data(tmp_path / "samples.jsonl")] == ["a", "b", "c"]
    meta = read_training_data(tmp_path / "meta.json")
    assert [s.id for s in meta] == ["a", "b", "c", "a", "b", "c", "a"] and meta[0].augment and not meta[-1].augment
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(DatasetError, match="broken.json: not valid JSON"):
        read_training_data(tmp_path / "broken.json")


def test_dataset_skips_unreadable_images_and_handles_overlong(tmp_path, processor, caplog):
    write_image(tmp_path / "a.png")
    (tmp_path / "s.json").write_text(json.dumps([
        {"id": "ok", "image": "a.png", "conversations": [{"from": "human", "value": "Q"},
                                                         {"from": "gpt", "value": "A"}]},
        {"id": "gone", "image": "missing.png", "conversations": [{"from": "human", "value": "Q"},
                                                                 {"from": "gpt", "value": "A"}]},
        {"id": "long", "conversations": [{"from": "human", "value": "x" * 50}, {"from": "gpt", "value": "y" * 80}]},
    ]))
    samples = read_training_data(tmp_path / "s.json")
    ds = ConversationDataset(samples, processor, max_seq_length=100, overlong="truncate")
    assert len(ds) == 3 and ds.n_truncated == 1 and len(ds.encoded[2][0]) == 100
    assert ds[1] is None and "sample gone skipped" in caplog.text
    batch = ConversationCollator(processor.tokenizer.pad_token_id)([ds[0], ds[1], ds[2]])
    assert batch["input_ids"].shape[0] == 2 and batch["pixel_values"].shape == (1, 3, 112, 112)
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()
    skip = ConversationDataset(samples, processor, max_seq_length=100, overlong="skip")
    assert len(skip) == 2 and skip.n_skipped == 1
    # an image sample whose image tokens would be cut is always skipped
    assert len(ConversationDataset(samples[:1], processor, max_seq_length=20)) == 0


def test_augmentation_is_a_random_resized_crop_of_the_right_size(tmp_path, processor):
    write_image(tmp_path / "a.png")
    sample = read_training_data_from_rows(tmp_path, augment=True)
    ds = ConversationDataset(sample, processor, max_seq_length=200)
    torch.manual_seed(0)
    a = ds[0]["pixel_values"]
    torch.manual_seed(1)
    b = ds[0]["pixel_values"]
    assert a.shape == (1, 3, 112, 112) and not torch.equal(a, b)


def read_training_data_from_rows(tmp_path, augment):
    (tmp_path / "ann.jsonl").write_text(json.dumps(
        {"id": "x", "image": "a.png", "conversations": [{"from": "human", "value": "Q"},
                                                        {"from": "gpt", "value": "A"}]})
        + "\n")
    (tmp_path / "meta.json").write_text(json.dumps({"d": {"root": ".", "annotation": "ann.jsonl",
                                                          "data_augment": augment, "repeat_time": 1}}))
    return read_training_data(tmp_path / "meta.json")
