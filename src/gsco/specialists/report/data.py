"""Report data in the R2Gen layout: ``annotation.json`` = ``{"train"|"val"|"test": [{id, report, image_path: [...],
split}]}`` with ``image_path`` relative to an image root (IU-Xray: two views per study; MIMIC-CXR: one).

Reports are cleaned as R2Gen does (:mod:`gsco.specialists.report.clean`); the views of a study go through the image
processor and are averaged inside the model. An unreadable image drops its study from the batch with a warning.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch.utils.data import Dataset

from gsco.data.readers import DatasetError, open_image
from gsco.specialists.report.clean import clean_report

logger = logging.getLogger(__name__)


def read_annotation(path: str | Path, split: str) -> list[dict]:
    """One split of an R2Gen annotation file; a malformed study stops with its file, split and position."""
    from gsco.data.r2gen import read_r2gen_split

    return read_r2gen_split(path, split)


class ReportDataset(Dataset):
    """Studies of one split: ``{id, pixel_values (V, 3, H, W), report (cleaned)}``; None for an unreadable one."""

    def __init__(self, rows: list[dict], image_root: str | Path, processor, cleaning: str = "iu_xray", render=None):
        self.rows = rows
        self.render = render  # a RenderSettings for DICOM / NIfTI views (None: the defaults)
        self.root = Path(image_root)
        self.processor = processor
        self.cleaning = cleaning
        self.reports = [clean_report(r["report"], cleaning) for r in rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict | None:
        row = self.rows[i]
        try:
            views = [open_image(self.root / p, self.render).convert("RGB") for p in row["image_path"]]
        except DatasetError as exc:
            logger.warning("skipping study %s: %s", row["id"], exc)
            return None
        pixels = self.processor(images=views, return_tensors="pt")["pixel_values"]
        return {"id": str(row["id"]), "pixel_values": pixels, "report": self.reports[i]}


def collate_studies(batch: list[dict | None]) -> dict | None:
    """Stack studies, padding the view axis; ``view_mask`` marks real views. None when every study was bad."""
    batch = [b for b in batch if b is not None]
    if not batch:
        return None
    views = max(len(b["pixel_values"]) for b in batch)
    shape = batch[0]["pixel_values"].shape[1:]
    pixels = torch.zeros((len(batch), views, *shape), dtype=batch[0]["pixel_values"].dtype)
    mask = torch.zeros((len(batch), views), dtype=torch.bool)
    for i, b in enumerate(batch):
        n = len(b["pixel_values"])
        pixels[i, :n] = b["pixel_values"]
        mask[i, :n] = True
    return {"ids": [b["id"] for b in batch], "pixel_values": pixels, "view_mask": mask,
            "reports": [b["report"] for b in batch]}
