"""VQA benchmarks as MedDr evaluation metafiles, from the files their publishers distribute: VQA-RAD and SLAKE
(JSON), PathVQA (Hugging Face parquet, images inside), PMC-VQA (CSV + an image folder).

Each split becomes ``root/<name>/<name>_<split>.jsonl`` — rows ``{id, split, image, question, question_id, answer,
answer_type}`` with closed and open questions marked (``answer_type`` CLOSED / OPEN: as the source marks them, else
yes/no answers are the closed ones) — with the images beside them under ``root/<name>/images``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path

from gsco.data.prepare.files import (
    PrepareError,
    PublishedSource,
    check_sizes,
    copy_if_changed,
    user_folder,
    write_if_changed,
)

VQA_SOURCES = {
    "vqa_rad": PublishedSource("vqa_rad", "'VQA_RAD Dataset Public.json' and the 'VQA_RAD Image Folder' from "
                               "https://osf.io/89kps/ (CC0 1.0)", {"train": 3064, "test": 451}),
    "slake": PublishedSource("slake", "Slake1.0 (train.json, validate.json, test.json and imgs/) from "
                             "https://www.med-vqa.com/slake/ (CC BY 4.0)", {"train": 4919, "val": 1053, "test": 1061}),
    "path_vqa": PublishedSource("path_vqa", "the parquet files of https://huggingface.co/datasets/flaviagiammarino/"
                                "path-vqa (data/train-*, validation-*, test-*.parquet) (MIT; the images' copyright "
                                "stays with the textbooks' publishers and PEIR)",
                                {"train": 19654, "val": 6259, "test": 6719}),
    "pmc_vqa": PublishedSource("pmc_vqa", "train.csv, test.csv, test_clean.csv and images.zip (unzipped: images/) "
                               "from https://huggingface.co/datasets/xmcmic/PMC-VQA (version 1; figures from the "
                               "PubMed Central open-access subset, terms as its dataset card states)",
                               {"train": 152603, "test": 33430, "test_clean": 2000}),
}
PMC_VQA_COLUMNS = ("Figure_path", "Question", "Answer", "Choice A", "Choice B", "Choice C", "Choice D",
                   "Answer_label")
IMAGE_MAGIC = {b"\xff\xd8\xff": ".jpg", b"\x89PNG": ".png", b"GIF8": ".gif", b"BM": ".bmp", b"II*\x00": ".tif",
               b"MM\x00*": ".tif"}


def yes_no_type(answer: str) -> str:
    """CLOSED for a yes/no answer (the closed questions of PathVQA and PMC-VQA, which mark none), else OPEN."""
    return "CLOSED" if re.sub(r"[^a-z]", "", str(answer).lower()) in ("yes", "no") else "OPEN"


def vqa_rad_rows(source: Path) -> dict[str, list[dict]]:
    """VQA-RAD's public JSON: the test split is the questions whose phrase_type starts with ``test``."""
    from gsco.runtime import read_json

    rows: dict[str, list[dict]] = {"train": [], "test": []}
    for q in read_json(source / "VQA_RAD Dataset Public.json", "VQA-RAD questions"):
        split = "test" if str(q["phrase_type"]).startswith("test") else "train"
        rows[split].append(_vqa_row(q["qid"], split, q["image_name"], q, source / "VQA_RAD Image Folder"))
    return rows


def slake_rows(source: Path) -> dict[str, list[dict]]:
    """SLAKE's train / validate / test JSON, English questions only (``q_lang`` en)."""
    from gsco.runtime import read_json

    rows: dict[str, list[dict]] = {}
    for split, file in (("train", "train.json"), ("val", "validate.json"), ("test", "test.json")):
        questions = read_json(source / file, "SLAKE questions")
        rows[split] = [_vqa_row(q["qid"], split, q["img_name"], q, source / "imgs")
                       for q in questions if q["q_lang"] == "en"]
    return rows


def _vqa_row(qid, split: str, image: str, q: dict, folder: Path) -> dict:
    kind = str(q["answer_type"]).strip().upper()
    if kind not in ("OPEN", "CLOSED"):
        raise PrepareError(f"question {qid}: answer_type {q['answer_type']!r}, expected OPEN or CLOSED")
    return {"id": str(qid), "split": split, "image": f"images/{image}", "question": str(q["question"]).strip(),
            "question_id": str(qid), "answer": str(q["answer"]).strip(), "answer_type": kind,
            "_from": folder / image}


def path_vqa_rows(source: Path) -> dict[str, list[dict]]:
    """PathVQA's parquet shards (columns image {bytes, path}, question, answer). Its images come inside the rows;
    each is written once, named by its content's SHA-1 (many questions share an image)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows: dict[str, list[dict]] = {}
    for split, stem in (("train", "train"), ("val", "validation"), ("test", "test")):
        shards = sorted(source.rglob(f"{stem}-*.parquet"))
        if not shards:
            raise PrepareError(f"path_vqa: no {stem}-*.parquet under {source} (expected "
                               f"{VQA_SOURCES['path_vqa'].where})")
        rows[split] = []
        for shard in shards:
            try:
                batches = pq.ParquetFile(shard).iter_batches(batch_size=256, columns=["image", "question", "answer"])
                records = (r for batch in batches for r in batch.to_pylist())
                for record in records:
                    data = record["image"]["bytes"]
                    name = hashlib.sha1(data).hexdigest()[:20] + _image_suffix(data, record["image"].get("path"))
                    qid = f"{split}-{len(rows[split])}"
                    answer = str(record["answer"]).strip()
                    rows[split].append({"id": qid, "split": split, "image": f"images/{name}",
                                        "question": str(record["question"]).strip(), "question_id": qid,
                                        "answer": answer, "answer_type": yes_no_type(answer), "_bytes": data})
            except (OSError, KeyError, TypeError, pa.ArrowException) as exc:
                raise PrepareError(f"{shard}: not a PathVQA parquet shard ({type(exc).__name__}: {exc})") from None
    return rows


def _image_suffix(data: bytes, path: str | None) -> str:
    if path and Path(path).suffix:
        return Path(path).suffix.lower()
    return next((suffix for magic, suffix in IMAGE_MAGIC.items() if data.startswith(magic)), ".png")


def pmc_vqa_rows(source: Path) -> dict[str, list[dict]]:
    """PMC-VQA's CSV files (version 1): the question's four choices go into ``options`` (their ``A:`` prefixes
    dropped) and the letter into ``answer_label``, so the same file serves open answers (TASK=vqa, as MedDr asks
    them) and multiple choice (TASK=diagnosis: the row's options)."""
    rows: dict[str, list[dict]] = {}
    for split in ("train", "test", "test_clean"):
        file = source / f"{split}.csv"
        if not file.is_file():
            raise PrepareError(f"pmc_vqa: {file} is missing (expected {VQA_SOURCES['pmc_vqa'].where})")
        with file.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in PMC_VQA_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise PrepareError(f"{file}: no column {', '.join(missing)} (PMC-VQA's columns: "
                                   f"{', '.join(PMC_VQA_COLUMNS)})")
            rows[split] = [_pmc_vqa_row(split, i, record, source / "images") for i, record in enumerate(reader)]
    return rows


def _pmc_vqa_row(split: str, i: int, record: dict, images: Path) -> dict:
    def drop_letter(text: str) -> str:
        return re.sub(r"^\s*[A-D]\s*:\s*", "", str(text)).strip()

    qid, figure = f"{split}-{i}", str(record["Figure_path"]).strip()
    answer = drop_letter(record["Answer"])
    return {"id": qid, "split": split, "image": f"images/{figure}", "question": str(record["Question"]).strip(),
            "question_id": qid, "answer": answer, "answer_type": yes_no_type(answer),
            "options": [drop_letter(record[f"Choice {k}"]) for k in "ABCD"],
            "answer_label": str(record["Answer_label"]).strip(), "_from": images / figure}


ROWS = {"vqa_rad": vqa_rad_rows, "slake": slake_rows, "path_vqa": path_vqa_rows, "pmc_vqa": pmc_vqa_rows}


def prepare_vqa(name: str, root: Path, source: str | None, expected: dict | None = None) -> list[dict]:
    """``root/<name>/<name>_<split>.jsonl`` (MedDr evaluation metafiles, OPEN / CLOSED marked) and the images they
    name under ``root/<name>/images``; written only where missing or different (a second run changes nothing)."""
    spec = VQA_SOURCES[name]
    source_dir, out = user_folder(spec, source), root / name
    try:
        rows = ROWS[name](source_dir)
    except KeyError as exc:
        raise PrepareError(f"{name}: a question in {source_dir} lacks the field {exc}; is it {spec.where}?") from None
    check_sizes(spec, {split: len(r) for split, r in rows.items()}, source_dir, expected, "questions")
    report = []
    for split, split_rows in rows.items():
        written = 0
        for row in split_rows:
            target = out / row["image"]
            if "_bytes" in row:
                data = row.pop("_bytes")
                if not (target.is_file() and target.stat().st_size == len(data)):
                    written += write_if_changed(target, data)
                continue
            image = row.pop("_from")
            if not image.is_file():
                raise PrepareError(f"{name}: {image} (question {row['id']}) is missing from the source")
            written += copy_if_changed(image, target)
        metafile = out / f"{name}_{split}.jsonl"
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in split_rows)
        status = "written" if write_if_changed(metafile, text.encode()) or written else "present"
        closed = sum(r["answer_type"] == "CLOSED" for r in split_rows)
        report.append({"dataset": name, "file": str(metafile), "status": status,
                       "splits": {split: len(split_rows), "closed": closed, "open": len(split_rows) - closed},
                       "licence": spec.licence})
    return report
