"""A registered classification dataset as diagnosis questions: image files, a MedDr training sample file and an
evaluation metafile.

    python -m gsco.data.diagnosis_questions dataset=breastmnist data_path=../shared/data/medmnist out_dir=DIR \
        [img_size=28] [splits=[train,val,test]] [extra_datasets=my_registry.yaml]

(or the same keys from ``--config FILE``.)

Writes ``DIR/images/{split}_{index}.png`` once, ``DIR/{dataset}_{split}_conversations.json`` (training samples,
``{id, image, conversations}``) and ``DIR/{dataset}_{split}.jsonl`` (metafile rows ``{id, split, image, question,
question_id, answer, options}`` for ``inference_meddr.sh TASK=diagnosis``). Multi-label datasets ask for every
diagnosis that applies: the answer is the labels joined by " and " (``effusion and mass``), or ``no finding``, and
metafile rows carry ``answer_type: multi-label``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from gsco.config import ConfigError
from gsco.data.datasets import read_split
from gsco.data.registry import NO_FINDING, DatasetInfo, get_dataset_info, labels_phrase

INTRO = ("You are a helpful medical assistant. Your task is disease diagnosis. You are given a {modality} image. "
         "The possible diagnoses are: {options}.")
OUTRO_SINGLE = "The response should only contain one option."
OUTRO_MULTI = f"The response should name every diagnosis that applies, or '{NO_FINDING}' if none does."


def prompt_from_sentences(sentences: list[str], style: str = "reference") -> str:
    """One prompt from its sentences. ``reference``: as sunanhe/MedDr ``inference_gsco.py`` writes its prompt — one
    sentence per line of a triple-quoted block whose newlines become spaces, so a space comes before the first
    sentence, between each two and after the last; ``stripped``: single spaces between them, none around."""
    if style == "reference":
        return ("\n" + "\n".join(sentences) + "\n").replace("\n", " ")
    if style == "stripped":
        return " ".join(sentences)
    raise ConfigError(f"key 'prompt_style': {style!r}; expected 'reference' or 'stripped'")


def diagnosis_question(info: DatasetInfo, style: str = "reference") -> str:
    """GSCo's plain diagnosis question (its ``generalist`` arm asks the same)."""
    intro = INTRO.format(modality=info.modality, options=", ".join(f"'{n}'" for n in info.label_names))
    return prompt_from_sentences([intro, OUTRO_MULTI if info.multi_label else OUTRO_SINGLE], style)


def answer_text(label: str | list[str]) -> str:
    """The answer a sample is trained on: the label, or a multi-label case's labels as words."""
    return label if isinstance(label, str) else labels_phrase(label)


def write_split_images(info: DatasetInfo, split: str, data_path: str | Path, img_size: int, out: Path) -> list[dict]:
    """PNG files (NIfTI volumes for a 3D dataset) of one split (skipped when already there) -> ``[{id, image,
    label}]`` with image relative to ``out``; ``label`` is a label name, or for a multi-label dataset the list of the
    case's label names."""
    data = read_split(info, split, data_path, img_size)
    (out / "images").mkdir(parents=True, exist_ok=True)
    labels = data.labels.reshape(len(data), -1)
    rows = []
    for i in range(len(data)):
        if info.multi_label:
            label = [info.label_names[j] for j in np.flatnonzero(labels[i])]
        else:
            label = info.label_names[int(labels[i, 0])]
        if isinstance(data.images, np.ndarray) and info.dims == 3:  # a volume: NIfTI, rendered when read
            name = f"images/{split}_{i}.nii.gz"
            if not (out / name).is_file():
                from gsco.data.medical import write_nifti

                write_nifti(out / name, data.images[i])
        elif isinstance(data.images, np.ndarray):
            name = f"images/{split}_{i}.png"
            if not (out / name).is_file():
                Image.fromarray(data.images[i]).save(out / name)
        else:
            name = str(data.images[i])
        rows.append({"id": f"{info.name}_{split}_{data.ids[i] if data.ids else i}", "image": name, "label": label})
    return rows


def write_diagnosis_questions(dataset: str, data_path: str | Path, out: str | Path, img_size: int = 28,
                              splits: tuple[str, ...] = ("train", "val", "test"),
                              extra_datasets: str | None = None) -> dict[str, Path]:
    info = get_dataset_info(dataset, extra_datasets)
    out = Path(out)
    question = diagnosis_question(info)
    written = {}
    for split in splits:
        rows = write_split_images(info, split, data_path, img_size, out)
        samples = [{"id": r["id"], "image": r["image"], "conversations": [
            {"from": "human", "value": "<image>\n" + question}, {"from": "gpt", "value": answer_text(r["label"])}]}
            for r in rows]
        conv = out / f"{dataset}_{split}_conversations.json"
        conv.write_text(json.dumps(samples, indent=0))
        meta = out / f"{dataset}_{split}.jsonl"
        meta.write_text("".join(json.dumps({"id": r["id"], "split": split, "image": r["image"], "question": question,
                                            "question_id": r["id"], "answer": answer_text(r["label"]),
                                            "options": list(info.label_names),
                                            **({"answer_type": "multi-label"} if info.multi_label else {})})
                               + "\n" for r in rows))
        written[split] = conv
    return written


@dataclasses.dataclass
class DiagnosisQuestionsConfig:
    dataset: str  # a registered classification dataset
    data_path: str  # where its files are (as the specialist config's data_path)
    out_dir: str  # images/, the training sample files and the metafiles are written here
    img_size: int = 28  # selects {dataset}_{img_size}.npz (28: {dataset}.npz)
    splits: list[str] = dataclasses.field(default_factory=lambda: ["train", "val", "test"])  # splits to write
    extra_datasets: str | None = None  # your registry YAML (as the specialist config's key)


def _write_and_print(cfg: DiagnosisQuestionsConfig) -> None:
    written = write_diagnosis_questions(cfg.dataset, cfg.data_path, cfg.out_dir, cfg.img_size, tuple(cfg.splits),
                                        cfg.extra_datasets)
    for split, path in written.items():
        print(f"{split}: {path} and {path.with_name(f'{cfg.dataset}_{split}.jsonl')}")


def main(argv: list[str] | None = None) -> int:
    from gsco.cli import command

    return command(DiagnosisQuestionsConfig, _write_and_print,
                   description="A classification dataset as MedDr diagnosis questions.")(argv)


if __name__ == "__main__":
    sys.exit(main())
