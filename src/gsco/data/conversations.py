"""Fine-tuning data: conversations with an optional image, rendered with the model's chat template (MedDr's is
Hermes-2); image tokens as InternVL-architecture tokenizers name them.

Two input formats are read:

- a sample file — a JSON list or JSONL of ``{id, image, conversations: [{from: "human"|"gpt", value}, ...]}``
  (the LLaVA/InternVL layout; ``image`` relative to ``image_root``; no ``image`` = a text-only sample);
- an InternVL meta file — ``{name: {root, annotation, data_augment, repeat_time}}`` naming several sample files
  (``repeat_time`` < 1 keeps that fraction from the start, an integer > 1 repeats the file).

The first human turn of an image sample starts with ``<image>\\n`` (added when missing); ``<image>`` expands to
``<img>`` + N x ``<IMG_CONTEXT>`` + ``</img>``. Labels are the token ids of the assistant turns (their text and
closing ``<|im_end|>``) and -100 everywhere else. A malformed sample or an unreadable image is logged with its id
and skipped, never replaced by another.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gsco.data.readers import expand_to_square, open_image
from gsco.data.registry import DatasetError
from gsco.runtime import read_json

logger = logging.getLogger(__name__)

IMAGE_PLACEHOLDER = "<image>"
ROLES = {"human": "user", "gpt": "assistant"}
IGNORE_INDEX = -100


@dataclasses.dataclass
class Sample:
    id: str
    image: Path | None
    conversations: list[dict]
    augment: bool = False
    source: str = ""


# ------------------------------------------------------------------------------------------------------ reading
def _load_rows(path: Path) -> list[tuple[str, object]]:
    """``(where, row)`` pairs of a JSON list or JSONL file; an unreadable file is one error naming it."""
    if not path.is_file():
        raise DatasetError(f"training data {path} does not exist")
    text = path.read_text()
    if path.suffix == ".jsonl":
        rows = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append((f"{path} line {lineno}", json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise DatasetError(f"{path} line {lineno}: not valid JSON ({exc.msg})") from None
        return rows
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, list):
        raise DatasetError(f"{path}: expected a JSON list of samples")
    return [(f"{path} [{i}]", row) for i, row in enumerate(data)]


def is_meta_file(path: Path) -> bool:
    if path.suffix != ".json" or not path.is_file():
        return False
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        return False
    return isinstance(data, dict) and all(isinstance(v, dict) and "annotation" in v for v in data.values())


def read_training_data(path: str | Path, image_root: str | Path | None = None) -> list[Sample]:
    """Samples of a sample file or an InternVL meta file; malformed samples are logged and left out."""
    path = Path(path)
    if is_meta_file(path):
        samples = []
        for name, entry in read_json(path, "InternVL meta file (JSON)", error=DatasetError).items():
            annotation = Path(entry["annotation"])
            annotation = annotation if annotation.is_absolute() else path.parent / annotation
            root = entry.get("root") or (image_root or annotation.parent)
            root = Path(root) if Path(root).is_absolute() else path.parent / root
            part = _read_sample_file(annotation, root, bool(entry.get("data_augment", False)))
            repeat = float(entry.get("repeat_time", 1))
            if repeat < 1:
                part = part[: int(len(part) * repeat)]
            elif repeat > 1:
                if repeat != int(repeat):
                    raise DatasetError(f"{path}: {name}.repeat_time {repeat} must be below 1 or a whole number")
                part = part * int(repeat)
            logger.info("%s: %d samples from %s", name, len(part), annotation)
            samples += part
        return samples
    return _read_sample_file(path, Path(image_root) if image_root else path.parent, False)


def _read_sample_file(path: Path, root: Path, augment: bool) -> list[Sample]:
    samples, bad = [], 0
    for where, row in _load_rows(path):
        try:
            samples.append(_parse_sample(row, root, augment, where))
        except ValueError as exc:
            bad += 1
            logger.warning("skipping sample: %s", exc)
    if bad:
        logger.warning("%s: %d malformed samples skipped", path, bad)
    return samples


def _parse_sample(row: object, root: Path, augment: bool, where: str) -> Sample:
    if not isinstance(row, dict):
        raise DatasetError(f"{where}: expected an object")
    sid = str(row.get("id", where))
    convs = row.get("conversations")
    if not isinstance(convs, list) or not convs:
        raise DatasetError(f"{where} (id {sid}): 'conversations' must be a non-empty list")
    turns = []
    for i, turn in enumerate(convs):
        if not isinstance(turn, dict) or turn.get("from") not in ROLES or not isinstance(turn.get("value"), str):
            raise DatasetError(f"{where} (id {sid}): turn {i} must be {{from: human|gpt, value: text}}")
        expected = "human" if i % 2 == 0 else "gpt"
        if turn["from"] != expected:
            raise DatasetError(f"{where} (id {sid}): turn {i} is from {turn['from']!r}, expected {expected!r} "
                               "(turns alternate, starting with human)")
        turns.append({"from": turn["from"], "value": turn["value"]})
    if turns[-1]["from"] != "gpt":
        raise DatasetError(f"{where} (id {sid}): the last turn must be the assistant's (gpt)")
    image = row.get("image")
    if isinstance(image, list):
        if len(image) != 1:
            raise DatasetError(f"{where} (id {sid}): fine-tuning takes one image per sample, got {len(image)}")
        image = image[0]
    n_placeholders = sum(t["value"].count(IMAGE_PLACEHOLDER) for t in turns)
    if image:
        first = turns[0]["value"]
        if n_placeholders == 0:
            turns[0]["value"] = IMAGE_PLACEHOLDER + "\n" + first
        elif n_placeholders > 1 or not first.startswith(IMAGE_PLACEHOLDER):
            raise DatasetError(f"{where} (id {sid}): the one {IMAGE_PLACEHOLDER} must open the first human turn")
        image_path = Path(image) if Path(image).is_absolute() else root / image
    else:
        if n_placeholders:
            raise DatasetError(f"{where} (id {sid}): {IMAGE_PLACEHOLDER} in a sample without an image")
        image_path = None
    return Sample(sid, image_path, turns, augment, where)


# ----------------------------------------------------------------------------------------------------- encoding
def encode_conversation(tokenizer, conversations: Sequence[dict], image_seq_length: int,
                        system: str | None = None) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)``: the Hermes-2 rendering with the image expanded, labels on assistant turns only."""
    image_text = (tokenizer.start_image_token + tokenizer.context_image_token * image_seq_length
                  + tokenizer.end_image_token)
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": ROLES[t["from"]], "content": t["value"].replace(IMAGE_PLACEHOLDER, image_text)}
                 for t in conversations]
    out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = list(out["input_ids"]), list(out["assistant_masks"])
    return ids, [i if m else IGNORE_INDEX for i, m in zip(ids, mask)]


def train_transform(image_size: int):
    """InternVL-Chat-V1.2's training augmentation: random resized crop (scale 0.8-1, ratio 3/4-4/3), bicubic."""
    from torchvision import transforms

    return transforms.RandomResizedCrop(image_size, scale=(0.8, 1.0), ratio=(3 / 4, 4 / 3),
                                        interpolation=transforms.InterpolationMode.BICUBIC)


class ConversationDataset(torch.utils.data.Dataset):
    """Tokenised samples for the Trainer. Samples longer than ``max_seq_length`` are truncated (``overlong:
    truncate``; never through the image tokens) or dropped (``skip``); both are counted in the log. An item whose
    image cannot be read is logged and comes back as None, which :class:`ConversationCollator` leaves out."""

    def __init__(self, samples: list[Sample], processor, max_seq_length: int, overlong: str = "truncate",
                 system: str | None = None, render=None):
        if overlong not in ("truncate", "skip"):
            raise ValueError(f"overlong {overlong!r}: expected 'truncate' or 'skip'")
        self.processor, self.max_seq_length, self.system = processor, max_seq_length, system
        self.render = render  # RenderSettings for DICOM / NIfTI images (None: the defaults)
        self.image_size = processor.image_processor.size["height"]
        self.encoded, self.samples = [], []
        truncated = skipped = 0
        for sample in samples:
            ids, labels = encode_conversation(processor.tokenizer, sample.conversations, processor.image_seq_length,
                                              system)
            if len(ids) > max_seq_length:
                image_end = self._image_end(ids) if sample.image else 0
                if overlong == "skip" or image_end > max_seq_length or not any(
                        label != IGNORE_INDEX for label in labels[:max_seq_length]):
                    skipped += 1
                    logger.info("sample %s: %d tokens > max_seq_length %d, skipped", sample.id, len(ids),
                                max_seq_length)
                    continue
                ids, labels = ids[:max_seq_length], labels[:max_seq_length]
                truncated += 1
            self.encoded.append((ids, labels))
            self.samples.append(sample)
        if truncated or skipped:
            logger.warning("max_seq_length %d: %d samples truncated, %d skipped", max_seq_length, truncated, skipped)
        self.n_truncated, self.n_skipped = truncated, skipped

    def _image_end(self, ids: list[int]) -> int:
        end_id = self.processor.tokenizer.convert_tokens_to_ids(self.processor.tokenizer.end_image_token)
        return ids.index(end_id) + 1 if end_id in ids else 0

    @property
    def lengths(self) -> list[int]:
        return [len(ids) for ids, _ in self.encoded]

    def __len__(self) -> int:
        return len(self.encoded)

    def __getitem__(self, index: int) -> dict | None:
        sample = self.samples[index]
        ids, labels = self.encoded[index]
        item = {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels)}
        if sample.image is not None:
            try:
                image = open_image(sample.image, self.render).convert("RGB")
            except DatasetError as exc:
                logger.warning("sample %s skipped: %s", sample.id, exc)
                return None
            item["pixel_values"] = self.pixel_values(image, sample.augment)
        return item

    def pixel_values(self, image: Image.Image, augment: bool) -> torch.Tensor:
        processor = self.processor.image_processor
        if augment:
            if getattr(processor, "pad2square", False):
                image = Image.fromarray(expand_to_square(np.asarray(image).transpose(2, 0, 1)).transpose(1, 2, 0))
            image = train_transform(self.image_size)(image)
        return processor(images=[image], return_tensors="pt")["pixel_values"]


class ConversationCollator:
    """Right-padded batches; labels padded with -100; images of the batch's image samples stacked in order."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, items: list[dict | None]) -> dict[str, torch.Tensor]:
        items = [it for it in items if it is not None]
        if not items:
            raise DatasetError("every sample of this batch was unreadable (see the warnings above)")
        width = max(len(it["input_ids"]) for it in items)
        batch = {
            "input_ids": torch.full((len(items), width), self.pad_token_id, dtype=torch.long),
            "labels": torch.full((len(items), width), IGNORE_INDEX, dtype=torch.long),
            "attention_mask": torch.zeros((len(items), width), dtype=torch.long),
        }
        for row, it in enumerate(items):
            n = len(it["input_ids"])
            batch["input_ids"][row, :n] = it["input_ids"]
            batch["labels"][row, :n] = it["labels"]
            batch["attention_mask"][row, :n] = 1
        images = [it["pixel_values"] for it in items if "pixel_values" in it]
        if images:
            batch["pixel_values"] = torch.cat(images)
        return batch
