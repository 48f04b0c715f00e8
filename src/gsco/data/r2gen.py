"""R2Gen/R2GenGPT annotation files (IU-Xray, MIMIC-CXR) -> MedDr evaluation metafiles.

    python -m gsco.data.r2gen annotation=data/iu_xray/annotation.json split=test metafile=data/iu_xray/test.jsonl \
        [views=each] [image_prefix=images/]

(or the same keys from ``--config FILE``.)

The annotation is ``{"train"|"val"|"test": [{id, report, image_path: [...], split}]}``.

- ``views=each`` (default): one row per image, ``{id, split, image, text, question_id, answer}`` with ``id`` =
  ``question_id`` = the row's number and ``answer`` the study's report — the layout of MedDr's own IU-Xray metafile
  (sunanhe/MedDr ``data/iu_mrg_meta.jsonl``). With ``image_prefix=images/`` the IU-Xray test split comes out
  byte-identical to that file (tested), so MedDr's report numbers are computed over the same 1,180 images.
- ``views=first``: one row per study, ``{id, split, image, images, text, question_id, answer}``, ``image`` its
  first view and ``id`` the study id.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Literal

from gsco.data.registry import DatasetError
from gsco.runtime import read_json

SPLITS = ("train", "val", "test")


def read_r2gen_annotation(path: str | Path) -> dict[str, list[dict]]:
    """The annotation's splits, each entry checked for ``id``, ``report`` and a non-empty ``image_path``."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"annotation {path} does not exist")
    data = read_json(path, "R2Gen annotation (JSON)", error=DatasetError)
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


def r2gen_to_metafile(annotation: str | Path, split: str, out: str | Path, views: str = "each",
                      image_prefix: str = "") -> int:
    """Write the metafile; returns the number of rows."""
    if views not in ("each", "first"):
        raise DatasetError(f"views {views!r}: expected 'each' or 'first'")
    studies = read_r2gen_split(annotation, split)
    rows = []
    for study in studies:
        paths = [image_prefix + p for p in study["image_path"]]
        if views == "first":
            rows.append({"id": study["id"], "split": split, "image": paths[0], "images": paths, "text": study["report"],
                         "question_id": study["id"], "answer": study["report"]})
            continue
        for path in paths:
            n = len(rows)
            rows.append({"id": n, "split": split, "image": path, "text": study["report"], "question_id": n,
                         "answer": study["report"]})
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return len(rows)


@dataclasses.dataclass
class R2GenMetafileConfig:
    annotation: str  # the R2Gen annotation.json
    metafile: str  # the JSONL to write (MedDr evaluation's metafile key)
    split: Literal["train", "val", "test"] = "test"  # the annotation's split to convert
    views: Literal["each", "first"] = "each"  # each: one row per image (MedDr's IU-Xray metafile); first: per study
    image_prefix: str = ""  # prepended to every image path (e.g. images/)


def _write_and_print(cfg: R2GenMetafileConfig) -> None:
    n = r2gen_to_metafile(cfg.annotation, cfg.split, cfg.metafile, cfg.views, cfg.image_prefix)
    print(f"wrote {n} rows: {cfg.metafile}")


def main(argv: list[str] | None = None) -> int:
    from gsco.cli import command

    return command(R2GenMetafileConfig, _write_and_print,
                   description="R2Gen annotation -> MedDr evaluation metafile (JSONL).")(argv)


if __name__ == "__main__":
    sys.exit(main())
