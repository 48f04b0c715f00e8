"""R2Gen/R2GenGPT annotation files (IU-Xray, MIMIC-CXR) -> MedDr evaluation metafiles.

    python -m gsco.data.r2gen --annotation data/iu_xray/annotation.json --split test --out data/iu_xray/test.jsonl

The annotation is ``{"train"|"val"|"test": [{id, report, image_path: [...], split}]}``; each study becomes one row
``{id, split, image, images, text, question_id, answer}`` with ``image`` its first view and ``answer`` its report.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gsco.data.registry import DatasetError

SPLITS = ("train", "val", "test")


def read_r2gen_annotation(path: str | Path) -> dict[str, list[dict]]:
    """The annotation's splits, each entry checked for ``id``, ``report`` and a non-empty ``image_path``."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"annotation {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetError(f"annotation {path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict) or not set(data) & set(SPLITS):
        raise DatasetError(f"annotation {path}: expected an object with keys among {SPLITS}")
    for split, rows in data.items():
        for i, row in enumerate(rows):
            missing = [k for k in ("id", "report", "image_path") if k not in row]
            if missing or not row.get("image_path"):
                raise DatasetError(f"annotation {path}: {split}[{i}] lacks {missing or ['a non-empty image_path']}")
            if isinstance(row["image_path"], str):  # one view written as a plain path
                row["image_path"] = [row["image_path"]]
    return data


def read_r2gen_split(path: str | Path, split: str) -> list[dict]:
    """One split of the annotation (checked as :func:`read_r2gen_annotation` checks it)."""
    data = read_r2gen_annotation(path)
    if split not in data:
        raise DatasetError(f"annotation {path} has no split {split!r}; it has {sorted(data)}")
    return data[split]


def r2gen_to_metafile(annotation: str | Path, split: str, out: str | Path) -> int:
    """Write the metafile; returns the number of rows."""
    rows = read_r2gen_split(annotation, split)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as f:
        for row in rows:
            f.write(json.dumps({"id": row["id"], "split": split, "image": row["image_path"][0],
                                "images": row["image_path"], "text": row["report"], "question_id": row["id"],
                                "answer": row["report"]}, ensure_ascii=False) + "\n")
    return len(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="R2Gen annotation -> MedDr evaluation metafile (JSONL).")
    parser.add_argument("--annotation", required=True)
    parser.add_argument("--split", default="test", choices=SPLITS)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    try:
        n = r2gen_to_metafile(args.annotation, args.split, args.out)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {n} rows: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
